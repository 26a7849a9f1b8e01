"""A local stand-in for the Hugging Face Hub's HTTP API: the calls PetDream makes, nothing more.

It speaks what huggingface_hub 2.x sends and expects (checked against its source):

    GET  /api/whoami-v2                                  who a token belongs to, and its role/scopes
    POST /api/repos/create                               {"name", "organization", "visibility", "type"}
    GET  /api/models/{id}[/revision/{rev}]               repo info: sha, private, siblings, cardData
    POST /api/validate-yaml                              a model card's metadata, before a commit
    POST /api/models/{id}/preupload/{rev}                always "regular": files go inline in the commit
    POST /api/models/{id}/commit/{rev}                   NDJSON: header, file (base64), deletedFile
    GET  /api/models/{id}/tree/{rev}[/{path}]            the files of a commit
    HEAD /{id}/resolve/{rev}/{path}                      ETag, X-Repo-Commit, Content-Length
    GET  /{id}/resolve/{rev}/{path}                      the file

Every request is recorded (`requests`), committed files are kept per commit so they can be
downloaded back, and failures can be injected (`fail`). Runs on 127.0.0.1, a random port, in a
thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml


def git_blob_id(content: bytes) -> str:
    """The git object id of a file, which the Hub reports as its `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict
    headers: dict  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)

    def ndjson(self) -> list[dict]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Repo:
    repo_id: str
    private: bool
    owner_token: str
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, files) oldest first

    @property
    def head(self) -> tuple[str, dict[str, bytes]]:
        return self.commits[-1]

    def snapshot(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit[0] == revision), None)


@dataclass
class Failure:
    method: str
    path_pattern: str  # a regex searched in the path
    status: int
    times: int
    body: dict
    headers: dict
    after: bool  # do the work first, then fail: an answer lost on the way back


class FakeHub:
    """users: token -> the whoami-v2 answer for it (see `user`)."""

    def __init__(self, users: dict[str, dict] | None = None):
        self.users = dict(users or {})
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # A short poll interval: shutting down waits for one.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test helpers ----------------------------------------------------------------------------

    @staticmethod
    def user(name: str, role: str | None = "write", orgs: dict[str, str] | None = None,
             scoped: list[dict] | None = None) -> dict:
        """A whoami-v2 answer. role None: an OAuth token (the Hub gives no accessToken then)."""
        access = None if role is None else {"displayName": "petdream-test", "role": role,
                                            "createdAt": "2025-01-01T00:00:00.000Z"}
        if role == "fineGrained":
            access["fineGrained"] = {"canReadGatedRepos": False, "global": [], "scoped": scoped or []}
        return {
            "type": "user", "id": hashlib.md5(name.encode()).hexdigest()[:24], "name": name, "fullname": name.title(),
            "email": f"{name}@example.com", "emailVerified": True, "isPro": False,
            "orgs": [{"type": "org", "name": org, "fullname": org.title(), "roleInOrg": r}
                     for org, r in (orgs or {}).items()],
            "auth": {"type": "access_token", "accessToken": access} if access else {"type": "oauth"},
        }

    def fail(self, method: str, path_pattern: str, status: int, times: int = 1, body: dict | None = None,
             headers: dict | None = None, after: bool = False) -> None:
        """Answer the next `times` matching requests with `status` instead (after doing the
        request's work, with after=True)."""
        self.failures.append(Failure(method, path_pattern, status, times,
                                     body or {"error": f"injected {status}"}, headers or {}, after))

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private=False, owner_token="") -> Repo:
        repo = Repo(repo_id, private, owner_token)
        repo.commits.append((self._commit_sha(repo_id, files), dict(files)))
        self.repos[repo_id] = repo
        return repo

    def files(self, repo_id: str) -> dict[str, bytes]:
        return self.repos[repo_id].head[1]

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def commit_payloads(self, repo_id: str) -> list[list[dict]]:
        return [r.ndjson() for r in self.calls("POST", f"^/api/models/{re.escape(repo_id)}/commit/")]

    @staticmethod
    def _commit_sha(repo_id: str, files: dict[str, bytes]) -> str:
        digest = hashlib.sha1(repo_id.encode() + str(time.time_ns()).encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_id(files[path]).encode())
        return digest.hexdigest()

    # -- the server ------------------------------------------------------------------------------

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: pytest shows failures
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_POST(self):
                hub._handle(self, "POST")

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in handler.headers.items()}
        request = Request(method, unquote(url.path), parse_qs(url.query), headers, body)
        with self._lock:
            self.requests.append(request)
            failure = next((f for f in self.failures if f.method == method and f.times > 0
                            and re.search(f.path_pattern, request.path)), None)
            if failure:
                failure.times -= 1
        if failure and not failure.after:
            return self._send(handler, failure.status, failure.body, headers=failure.headers)
        try:
            status, payload, headers = self._route(request)
        except Exception as error:  # a bug in the fake shows as a 500 with the reason
            status, payload, headers = 500, {"error": f"fake hub: {type(error).__name__}: {error}"}, {}
        if failure:
            return self._send(handler, failure.status, failure.body, headers=failure.headers)
        self._send(handler, status, payload, headers=headers, head=method == "HEAD")

    @staticmethod
    def _send(handler, status: int, payload, *, headers=None, head=False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if status >= 400 and "error" in (payload if isinstance(payload, dict) else {}):
            handler.send_header("X-Error-Message", payload["error"])
        handler.end_headers()
        if not head:
            handler.wfile.write(data)

    # -- routes ----------------------------------------------------------------------------------

    def _token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization") or ""
        return auth.removeprefix("Bearer ").strip() or None

    def _route(self, r: Request):
        path = r.path
        if path == "/api/whoami-v2" and r.method == "GET":
            user = self.users.get(self._token(r))
            if user is None:
                return 401, {"error": "Invalid credentials in Authorization header"}, {}
            return 200, user, {}
        if path == "/api/validate-yaml" and r.method == "POST":
            return self._validate_yaml(r)
        if path == "/api/repos/create" and r.method == "POST":
            return self._create(r)
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if match and r.method == "POST":
            return getattr(self, f"_{match[2]}")(r, match[1])
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if match and r.method == "GET":
            return self._tree(r, match[1], match[2], match[3] or "")
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if match and r.method == "GET":
            return self._info(r, match[1], match[2] or "main")
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match and r.method in ("GET", "HEAD"):
            return self._resolve(r, match[1], match[2], match[3])
        return 404, {"error": f"fake hub: no route for {r.method} {path}"}, {}

    def _user(self, r: Request) -> dict | None:
        return self.users.get(self._token(r))

    def _may_write(self, r: Request, namespace: str, repo_id: str | None = None) -> tuple[int, str] | None:
        """None if the request's token may write in `namespace`; else (status, error)."""
        user = self._user(r)
        if user is None:
            return 401, "Invalid credentials in Authorization header"
        access = (user.get("auth") or {}).get("accessToken") or {}
        orgs = {o["name"]: o.get("roleInOrg") for o in user.get("orgs", [])}
        if namespace != user["name"] and (namespace not in orgs or orgs[namespace] == "read"):
            return 403, f"You don't have the rights to create a model under the namespace \"{namespace}\""
        if access.get("role") == "read":
            return 403, "This action requires a token with write access"
        if access.get("role") == "fineGrained":
            scoped = access["fineGrained"]["scoped"]
            if not any("repo.write" in s["permissions"] and s["entity"]["name"] in (namespace, repo_id)
                       for s in scoped):
                return 403, "This fine-grained token has no write access to this namespace"
        return None

    def _may_read(self, r: Request, repo: Repo) -> tuple[int, dict, dict] | None:
        if not repo.private:
            return None
        token = self._token(r)
        if token is None or token not in self.users:
            return 401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        owner = self.users.get(repo.owner_token, {}).get("name")
        if self.users[token]["name"] != owner:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        return None

    def _create(self, r: Request):
        payload = r.json()
        user = self._user(r)
        namespace = payload.get("organization") or (user or {}).get("name")
        repo_id = f"{namespace}/{payload['name']}"
        denied = self._may_write(r, namespace, repo_id)
        if denied:
            return denied[0], {"error": denied[1]}, {}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}, {}
        repo = Repo(repo_id, payload.get("visibility") == "private", self._token(r))
        files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        repo.commits.append((self._commit_sha(repo_id, files), files))
        self.repos[repo_id] = repo
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id,
                     "id": hashlib.md5(repo_id.encode()).hexdigest()}, {}

    def _writable(self, r: Request, repo_id: str):
        """(repo, None), or (.., the refusal to answer with) when it is missing or this token may not write."""
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, (404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        denied = self._may_write(r, repo_id.split("/")[0], repo_id)
        if denied:
            return repo, (denied[0], {"error": denied[1]}, {})
        return repo, None

    def _readable(self, r: Request, repo_id: str, revision: str, anonymous_status: int = 404):
        """(repo, (sha, files) at `revision`, None), or (.., .., the refusal to answer with)."""
        repo = self.repos.get(repo_id)
        if repo is None:
            status = anonymous_status if self._token(r) is None else 404
            return None, None, (status, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        denied = self._may_read(r, repo)
        if denied:
            return repo, None, denied
        snapshot = repo.snapshot(revision)
        if snapshot is None:
            return repo, None, (404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        return repo, snapshot, None

    def _info(self, r: Request, repo_id: str, revision: str):
        repo, snapshot, refusal = self._readable(r, repo_id, revision, anonymous_status=401)
        if refusal:
            return refusal
        sha, files = snapshot
        card = _card_metadata(files.get("README.md"))
        return 200, {
            "_id": hashlib.md5(repo_id.encode()).hexdigest(), "id": repo_id, "modelId": repo_id,
            "author": repo_id.split("/")[0], "sha": sha, "private": repo.private, "disabled": False, "gated": False,
            "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "tags": (card or {}).get("tags", []), "library_name": (card or {}).get("library_name"),
            "cardData": card, "siblings": [{"rfilename": path} for path in sorted(files)],
        }, {}

    def _validate_yaml(self, r: Request):
        content = r.json()["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, {}
        try:
            metadata = yaml.safe_load(match[1]) or {}
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}], "error": "invalid YAML"}, {}
        base = metadata.get("base_model")
        for value in ([base] if isinstance(base, str) else base or []):
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(value)):  # the Hub wants a model id here
                return 400, {"errors": [{"message": f'"base_model" with value "{value}" is not valid'}],
                             "error": "invalid metadata"}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _preupload(self, r: Request, repo_id: str):
        repo, refusal = self._writable(r, repo_id)
        if refusal:
            return refusal
        current = repo.head[1]
        return 200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_id(current[f["path"]]) if f["path"] in current else None}
            for f in r.json()["files"]
        ]}, {}

    def _commit(self, r: Request, repo_id: str):
        repo, refusal = self._writable(r, repo_id)
        if refusal:
            return refusal
        files = dict(repo.head[1])
        lines = r.ndjson()
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "the first line must be the commit header"}, {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:  # lfsFile: this fake takes uploads inline only (preupload always says "regular")
                return 422, {"error": f"fake hub: unsupported commit line {line['key']}"}, {}
        sha = self._commit_sha(repo_id, files)
        repo.commits.append((sha, files))
        return 200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                     "hookOutput": ""}, {}

    def _tree(self, r: Request, repo_id: str, revision: str, folder: str):
        repo, snapshot, refusal = self._readable(r, repo_id, revision)
        if refusal:
            return refusal
        prefix = folder.rstrip("/") + "/" if folder else ""
        return 200, [{"type": "file", "oid": git_blob_id(content), "size": len(content), "path": path}
                     for path, content in sorted(snapshot[1].items()) if path.startswith(prefix)], {}

    def _resolve(self, r: Request, repo_id: str, revision: str, path: str):
        repo, snapshot, refusal = self._readable(r, repo_id, revision)
        if refusal:
            return refusal
        sha, files = snapshot
        if path not in files:
            return 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
        content = files[path]
        return 200, content, {"ETag": f'"{git_blob_id(content)}"', "X-Repo-Commit": sha}


def _card_metadata(readme: bytes | None) -> dict | None:
    if not readme:
        return None
    match = re.match(r"^---\n(.*?)\n---\n", readme.decode(), re.DOTALL)
    return (yaml.safe_load(match[1]) or None) if match else None
