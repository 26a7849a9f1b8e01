"""The Hugging Face Hub: push a PetModel folder to a model repo with a model card; pull one back.

    hub = PetHub.from_settings(settings)                     # token: argument, HF_TOKEN or `hf auth login`
    repo_id = hub.check_write_access(None, pet_name="Bruno")  # before spending GPU time: "sam/petdream-bruno"
    result = hub.push(PetModel.load("pets/bruno"), repo_id)  # one commit; private unless public=True
    model = hub.pull("sam/petdream-bruno", "pets/bruno")     # a PetModel folder again

A pushed repo holds the PetModel folder as it is (petdream.json, the diffusers LoRA weights or
the `pipeline/` folder, samples/, loss.png), an evaluation report when there is one, and a
README.md model card; the training photos only when asked for. A pull of a PetDream repo gives
that folder back; a pull of any other diffusers DreamBooth LoRA repo gets a petdream.json
inferred from its model card, with what the card does not say asked for (`MissingPetInfo`).

Every failure is a `HubError` whose message says what went wrong and what to do. Network
errors, 408, 429 and 5xx are retried with backoff (`Retry`). The token is never logged,
echoed, written to a file or put in a message: `PetHub` holds it privately and scrubs it
from any text that leaves this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from petdream import __version__
from petdream.petmodel import LORA_WEIGHTS_FILE, METADATA_FILE, PIPELINE_DIR, Pet, PetModel

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
CARD_FILE = "README.md"
SAMPLES_DIR = "samples"
LOSS_PLOT = "loss.png"
PHOTOS_DIR = "photos"
EVALUATION_DIR = "evaluation"  # inside a repo, and where `push` looks for a report inside a pet folder
EVALUATION_FILES = ("report.json", "report.md", "grid.png", "fidelity.png")
TINY_BASE_PREFIX = "petdream/tiny-sd"  # the tiny profile's base: random weights, not a Hub model

# Files PetDream owns in a repo. A push replaces all of them, so photos or samples of an
# earlier push never linger; anything else a person added to the repo is left alone.
MANAGED_PREFIXES = (f"{PHOTOS_DIR}/", f"{SAMPLES_DIR}/", f"{EVALUATION_DIR}/", f"{PIPELINE_DIR}/")
MANAGED_FILES = (METADATA_FILE, LORA_WEIGHTS_FILE, LOSS_PLOT)

# The base model's license travels with a fine-tune of it (OpenRAIL's use restrictions apply
# to derivatives). Known bases are answered here; others are asked of the Hub.
BASE_MODEL_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    "stabilityai/stable-diffusion-2-1-base": "openrail++",
}
TAGS = ("text-to-image", "diffusers", "lora", "dreambooth", "petdream", "stable-diffusion")

RETRY_STATUS = (408, 429, 500, 502, 503, 504)  # the Hub or a proxy is busy or down: worth another try
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(RuntimeError):
    """A push or pull that did not work. The message is for people: what failed, what to do."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status  # the Hub's HTTP status, or None (network, local problem)


class MissingPetInfo(ValueError):
    """A non-PetDream repo whose model card does not say everything a PetModel needs.

    `missing` holds (what, CLI flag) pairs, e.g. ("the pet's name", "--name").
    """

    def __init__(self, repo_id: str, missing: list[tuple[str, str]]):
        self.missing = missing
        wanted = "; ".join(f"{what} ({flag})" for what, flag in missing)
        flags = " ".join(f"{flag} ..." for _, flag in missing)
        super().__init__(
            f"{repo_id} has diffusers LoRA weights but no {METADATA_FILE}, and its model card does not say "
            f"everything PetDream needs. Missing: {wanted}. Give them and pull again, e.g. "
            f"`python -m petdream pull --repo {repo_id} --output DIR {flags}`."
        )


@dataclass(frozen=True)
class Retry:
    """How persistent to be with a Hub that fails in a way that may pass.

    `tries` counts the first attempt too. The wait before try n+1 is first_delay * 2**(n-1)
    seconds, at most max_delay; a 429's Retry-After is honoured up to max_delay. Tests pass
    their own `sleep` to make retries instant.
    """

    tries: int = 4
    first_delay: float = 2.0  # seconds
    max_delay: float = 30.0  # seconds
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failed_tries: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return min(self.first_delay * 2 ** (failed_tries - 1), self.max_delay)


@dataclass(frozen=True)
class Account:
    """Who a token belongs to and what it may do, from the Hub's whoami-v2."""

    name: str
    orgs: dict[str, str | None]  # organisation -> the person's role in it ("admin", "write", "read", ...)
    token_role: str | None  # "read", "write", "fineGrained"; None where the Hub does not say (OAuth)
    scoped: list[dict] = field(default_factory=list)  # fine-grained: [{"entity": {"type", "name"}, "permissions"}]


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str  # the repo's page
    commit_url: str
    commit: str  # the commit's id (40 hex digits)
    private: bool
    files: list[str]  # paths committed, sorted
    deleted: list[str]  # files of an earlier push this one removed
    notes: list[str]  # things the person should know (e.g. the repo stayed private)


@dataclass(frozen=True)
class _Photo:
    """A training photo as the model saw it: the square crop, with no EXIF (no location)."""

    sha256: str
    png: bytes


class PetHub:
    """The Hub as PetDream uses it: one endpoint, one token (or none), retries.

    token: a Hugging Face token string (a Space's `gr.OAuthToken.token`, `HF_TOKEN`, a saved
    login) or None to go anonymous (pulling public repos). oauth_scope: a Space login's
    `gr.OAuthToken.scope`, which tells whether it may write (whoami does not for OAuth).
    """

    def __init__(self, token: str | None = None, *, endpoint: str = DEFAULT_ENDPOINT, retry: Retry = Retry(),
                 oauth_scope: str | None = None, token_source: str = "your Hugging Face token"):
        from huggingface_hub import HfApi

        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.retry = retry
        self.oauth_scope = oauth_scope
        self.token_source = token_source  # where the token came from, for messages ("HF_TOKEN", ...)
        self._token = token or None
        self._account: Account | None = None
        # The endpoint is passed explicitly: huggingface_hub reads HF_ENDPOINT once, at import.
        # token=False, not None: an anonymous hub must not pick up a saved login by itself.
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False, library_name="petdream",
                          library_version=__version__)

    @classmethod
    def from_settings(cls, settings, token: str | None = None, **kwargs) -> "PetHub":
        """The token given (a Space login), else HF_TOKEN or a saved `hf auth login`."""
        if token:
            source = "your Hugging Face sign-in"
        else:
            token = settings.hf_token()
            source = "the HF_TOKEN token" if token and token == os.environ.get("HF_TOKEN", "").strip() else \
                "the token saved by `hf auth login`"
        return cls(token, endpoint=settings.hub_endpoint, token_source=source, **kwargs)

    def __repr__(self) -> str:  # never the token
        return f"PetHub(endpoint={self.endpoint!r}, token={'set' if self._token else 'none'})"

    # -- who is pushing ----------------------------------------------------------------------

    def account(self) -> Account:
        """Who the token belongs to (asked once per PetHub: whoami is rate-limited)."""
        if self._account is not None:
            return self._account
        if not self._token:
            raise HubError(
                "No Hugging Face token, and pushing needs one with write access. On a Space with Hugging Face "
                "sign-in, sign in (the button at the top); elsewhere set the HF_TOKEN environment variable or run "
                "`hf auth login` where PetDream runs; "
                f"make a token at {self.endpoint}/settings/tokens."
            )
        info = self._call("check your token", lambda: self._api.whoami(token=self._token))
        auth = info.get("auth") or {}
        access = auth.get("accessToken") or {}
        fine = access.get("fineGrained") or {}
        self._account = Account(
            name=info["name"],
            orgs={org.get("name"): org.get("roleInOrg") for org in info.get("orgs") or [] if org.get("name")},
            token_role=access.get("role"),
            scoped=list(fine.get("scoped") or []),
        )
        return self._account

    def repo_id_for(self, repo: str | None, pet_name: str | None = None) -> str:
        """The full repo id: `repo` as given, under the token owner's namespace when it has none,
        or `{user}/petdream-{pet name}` when no repo is given."""
        if repo:
            repo = repo.strip().strip("/")
            if repo.count("/") > 1 or not all(REPO_NAME.match(part) for part in repo.split("/")) \
                    or "--" in repo or ".." in repo:
                raise ValueError(
                    f"{repo!r} is not a repo id: use owner/name (or just name), with letters, digits, '-', '_' "
                    "and '.', at most 96 characters each, e.g. sam/petdream-bruno."
                )
            if "/" in repo:
                return repo
            return f"{self.account().name}/{repo}"
        if not pet_name:
            raise ValueError("Give a repo id (--repo owner/name), or the pet's name to derive one from.")
        return f"{self.account().name}/{default_repo_name(pet_name)}"

    def check_write_access(self, repo: str | None = None, pet_name: str | None = None) -> str:
        """Make sure the token may create and write `repo` before any work is spent on it.

        Returns the full repo id. Raises HubError naming what the token lacks and how to get it.
        Checks what the Hub tells (the token's role, a fine-grained token's scopes, membership
        and role in an organisation); the push itself is the final word.
        """
        account = self.account()
        repo_id = self.repo_id_for(repo, pet_name)
        namespace = repo_id.split("/")[0]
        tokens_page = f"{self.endpoint}/settings/tokens"
        if namespace != account.name:
            if namespace not in account.orgs:
                mine = ", ".join(sorted(account.orgs)) or "none"
                raise HubError(
                    f"You are signed in as {account.name}, and {namespace} is neither that nor one of your "
                    f"organisations ({mine}), so you cannot create {repo_id}. Push to "
                    f"{account.name}/{repo_id.split('/')[1]} instead, or ask an admin of {namespace} to add you."
                )
            if account.orgs[namespace] == "read":
                raise HubError(
                    f"Your role in the organisation {namespace} is 'read', so you cannot push to {repo_id}. "
                    f"Ask an admin of {namespace} for the 'write' role, or push to {account.name}/"
                    f"{repo_id.split('/')[1]} instead."
                )
        if account.token_role == "read":
            raise HubError(
                f"{_capital(self.token_source)} is read-only, so it cannot push {repo_id}. Make a token with the "
                f"'Write' role at {tokens_page}, then run `hf auth login` with it or set HF_TOKEN."
            )
        if account.token_role == "fineGrained" and not self._fine_grained_may_write(account, repo_id):
            raise HubError(
                f"{_capital(self.token_source)} is fine-grained and may not write to {repo_id}. Edit it at "
                f"{tokens_page}: under "
                f"'Repositories permissions' (or the {namespace} entry) tick 'Write access to contents/settings "
                f"of all repos under {namespace}', or use a token with the 'Write' role."
            )
        if account.token_role is None and self.oauth_scope is not None:
            scopes = set(self.oauth_scope.split())
            if "write-repos" not in scopes and "manage-repos" not in scopes:
                raise HubError(
                    "Your Hugging Face sign-in was not given permission to write repos. The Space must ask for it: "
                    "add `hf_oauth_scopes: [write-repos, manage-repos]` to its README metadata, then sign out and "
                    "in again."
                )
        return repo_id

    @staticmethod
    def _fine_grained_may_write(account: Account, repo_id: str) -> bool:
        namespace = repo_id.split("/")[0]
        for scope in account.scoped:
            entity = scope.get("entity") or {}
            covers = (entity.get("type") in ("user", "org") and entity.get("name") == namespace) or (
                entity.get("type") == "model" and entity.get("name") == repo_id)
            if covers and "repo.write" in (scope.get("permissions") or []):
                return True
        return False

    # -- push --------------------------------------------------------------------------------

    def push(self, model: PetModel | str | Path, repo: str | None = None, *, public: bool = False,
             photos: Sequence | None = None, evaluation: str | Path | None = None,
             check_access: bool = True, commit_message: str | None = None) -> PushResult:
        """Push a pet model folder to a model repo, in one commit, with a model card.

        repo: "owner/name", "name" (under the token owner) or None (`{user}/petdream-{pet}`).
        public: False (default) creates the repo private; an existing public repo is refused
          unless public=True, so a pet model never becomes public by accident.
        photos: training photos to include (opt-in): `Photo`s from intake, cropped, no EXIF.
        evaluation: a folder holding report.json (from `evaluate --out`); default: the pet
          folder's evaluation/ when it has a report.
        The local folder is only read; a failed push can be run again as it is.
        """
        if not isinstance(model, PetModel):
            model = PetModel.load(model)
        try:
            return self._push(model, repo, public=public, photos=photos, evaluation=evaluation,
                              check_access=check_access, commit_message=commit_message)
        except HubError as error:
            raise HubError(f"{error} Your pet model at {model.path} is unchanged.", status=error.status) from None

    def _push(self, model: PetModel, repo: str | None, *, public, photos, evaluation, check_access,
              commit_message) -> PushResult:
        repo_id = self.check_write_access(repo, model.pet.name) if check_access else self.repo_id_for(
            repo, model.pet.name)
        report = load_evaluation(model, evaluation)
        files = _model_files(model)
        if report is not None:
            files.update(_evaluation_files(report, repo_id))
        kept_photos = _photos_for(model, photos or [])
        for photo in kept_photos:
            files[f"{PHOTOS_DIR}/{photo.sha256[:16]}.png"] = photo.png
        card = make_model_card(model, repo_id, evaluation=report,
                               n_photos_uploaded=len(kept_photos), license=self._base_license(model))
        files[CARD_FILE] = str(card).encode()
        notes: list[str] = []

        self._call("create", lambda: self._api.create_repo(repo_id, private=not public, exist_ok=True,
                                                           repo_type="model"), repo_id)
        info = self._call("read", lambda: self._api.model_info(repo_id), repo_id)
        if info.private is False and not public:
            raise HubError(
                f"{repo_id} already exists and is public, so pushing {model.pet.name} there would publish it. "
                "Nothing was uploaded. Add --public to push to it anyway, or choose another --repo."
            )
        if info.private and public:
            notes.append(f"{repo_id} already existed as a private repo and stays private; make it public in its "
                         f"settings on {self.endpoint}/{repo_id}/settings if you want to.")
        message = commit_message or f"PetDream: {model.pet.name} ({model.method}, {model.profile})"
        size = _describe_size(files)
        stale: list[str] = []  # files of an earlier push that this one no longer has
        attempts = 0

        def commit():
            from huggingface_hub import CommitOperationAdd, CommitOperationDelete

            nonlocal attempts
            # A retry reads the repo again: a try whose answer was lost may already have committed.
            siblings = info.siblings if attempts == 0 else self._api.model_info(repo_id).siblings
            attempts += 1
            stale[:] = sorted(s.rfilename for s in siblings or [] if _managed(s.rfilename) and s.rfilename not in files)
            # Fresh operations every try: huggingface_hub marks them used after a commit.
            operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)
                          for path, content in sorted(files.items())]
            operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
            return self._api.create_commit(repo_id, operations, commit_message=message,
                                           commit_description=f"Pushed with PetDream {__version__}.")

        commit_info = self._call("push", commit, repo_id, size=size)
        if commit_info.oid == info.sha:  # huggingface_hub skips a commit that would change nothing
            notes.append(f"{repo_id} already held exactly these files; nothing new was committed.")
        logger.info("pushed %s to %s (%s)", model.path, repo_id, "private" if info.private else "public")
        return PushResult(repo_id=repo_id, url=f"{self.endpoint}/{repo_id}", commit_url=commit_info.commit_url,
                          commit=commit_info.oid, private=bool(info.private),
                          files=sorted(files), deleted=stale, notes=notes)

    def _base_license(self, model: PetModel) -> str | None:
        """The base model's license: known for SD 1.5, else its model card's, else None."""
        base = model.base_model_id
        if base in BASE_MODEL_LICENSES:
            return BASE_MODEL_LICENSES[base]
        if base.startswith(TINY_BASE_PREFIX) or not _looks_like_repo_id(base):
            return None
        try:  # one quick try: a missing license must not block the push
            card = self._api.model_info(base, revision=model.base_model_revision, timeout=10).card_data
            return card.get("license") if card else None
        except Exception as error:  # noqa: BLE001 - any failure means "unknown"; the card says so
            logger.info("could not read %s's license: %s", base, self._redact(type(error).__name__))
            return None

    # -- pull --------------------------------------------------------------------------------

    def pull(self, repo_id: str, output: str | Path, *, revision: str | None = None, name: str | None = None,
             class_noun: str | None = None, trigger: str | None = None,
             base_model: str | None = None) -> PetModel:
        """Download a model repo into `output` as a PetModel folder and load it.

        A PetDream repo comes back as it was pushed (name/class_noun/trigger, when given,
        rename the pet). Any other diffusers DreamBooth LoRA repo gets a petdream.json made from
        its model card (base_model, instance_prompt) and these arguments; whatever neither
        says raises MissingPetInfo before anything is downloaded. An interrupted pull resumes
        when run again with the same output folder.
        """
        output = Path(output)
        _check_pull_target(output)
        info = self._call("pull", lambda: self._api.model_info(repo_id, revision=revision), repo_id)
        files = sorted(s.rfilename for s in info.siblings or [])
        inferred, allow = None, None  # a PetDream repo: everything in it
        wanted = files
        if METADATA_FILE not in files:
            inferred, weights = _infer_pet_model(repo_id, info.card_data, files, name=name, class_noun=class_noun,
                                                 trigger=trigger, base_model=base_model)
            wanted = allow = [path for path in (weights, CARD_FILE) if path in files]

        def download():
            from huggingface_hub import snapshot_download

            # The commit id, not the branch: every file comes from the same commit.
            snapshot_download(repo_id, revision=info.sha, local_dir=output, allow_patterns=allow,
                              endpoint=self.endpoint, token=self._token or False, library_name="petdream",
                              library_version=__version__)
            missing = [path for path in wanted if not (output / path).is_file()]
            if missing:  # a download that ended early; worth another try
                raise _Incomplete(f"{len(missing)} files did not arrive ({', '.join(missing[:3])})")

        self._call("pull", download, repo_id)
        if inferred is not None:
            inferred(output)
        elif name or class_noun or trigger:
            _rename_pet(output, name, class_noun, trigger)
        model = PetModel.load(output)
        logger.info("pulled %s@%s to %s", repo_id, (info.sha or "")[:7], output)
        return model

    # -- calling the Hub ---------------------------------------------------------------------

    def _call(self, action: str, fn: Callable, repo_id: str | None = None, *, size: str | None = None):
        """Run one Hub call, retrying what may pass; raise HubError with a message for people."""
        from huggingface_hub.errors import OfflineModeIsEnabled

        for attempt in range(1, self.retry.tries + 1):
            try:
                return fn()
            except HubError:
                raise
            except Exception as error:  # noqa: BLE001 - every failure is explained below
                if _in_chain(error, OfflineModeIsEnabled):
                    raise HubError(
                        "HF_HUB_OFFLINE is set, so PetDream may not talk to the Hub. Unset it (or set "
                        "HF_HUB_OFFLINE=0) to push or pull."
                    ) from None
                status, retry_after = _status_of(error)
                retryable = status in RETRY_STATUS or (status is None and _is_network_error(error))
                if not retryable:
                    raise HubError(self._explain(action, repo_id, status, error, size), status=status) from None
                # A name that does not resolve means no connection or a mistyped endpoint: one more try, not 14 s.
                tries = min(2, self.retry.tries) if _in_chain(error, socket.gaierror) else self.retry.tries
                if attempt >= tries:
                    raise HubError(self._gave_up(action, repo_id, status, error, attempt), status=status) from None
                wait = self.retry.delay(attempt, retry_after)
                logger.warning("the Hub failed to %s (%s); try %d of %d in %.0f s", _ACTIONS.get(action, action),
                               f"HTTP {status}" if status else type(error).__name__, attempt + 1, tries, wait)
                self.retry.sleep(wait)
        raise AssertionError("unreachable")

    def _explain(self, action: str, repo_id: str | None, status: int | None, error: Exception,
                 size: str | None) -> str:
        """What went wrong and what to do, for each status the Hub answers with."""
        repo = repo_id or "the repo"
        namespace = repo.split("/")[0] if repo_id else "your namespace"
        tokens = f"{self.endpoint}/settings/tokens"
        reading = action in ("pull", "read")
        if status == 401 and reading:
            return (f"{repo} was not found on {self.endpoint}, or it is private and you are not signed in (401). "
                    "Check the repo id (owner/name); for a private repo run `hf auth login` or set HF_TOKEN.")
        if status == 401:
            return (f"The Hub at {self.endpoint} did not accept {self.token_source} (401): it is mistyped, "
                    f"expired or revoked. Make a new token with the 'Write' role at {tokens}, then run "
                    "`hf auth login` or set HF_TOKEN (in the app: sign in again).")
        if status == 403 and reading:
            return (f"You may not read {repo} (403): it is gated or private. Ask for access on "
                    f"{self.endpoint}/{repo}, or sign in with an account that has it.")
        if status == 403:
            return (f"Your Hugging Face token may not write to {repo} (403). Use a token with the 'Write' role, "
                    f"or give your fine-grained token 'Write access to contents/settings of all repos under "
                    f"{namespace}', at {tokens}; then run `hf auth login` or set HF_TOKEN.")
        if status == 404 and reading:
            return (f"There is no model repo {repo} on {self.endpoint} (404), or it is private and your token "
                    "cannot see it. Check the repo id (owner/name).")
        if status == 404:
            return (f"The Hub has no user or organisation {namespace} you can push to, or no repo {repo} (404). "
                    "Check --repo: owner/name, where owner is your user name or one of your organisations.")
        if status == 409:
            return (f"The Hub reported a conflict on {repo} (409): another change to it happened at the same "
                    "moment, or a dataset or Space of that name is in the way. Nothing was committed; run the "
                    "push again, or choose another --repo.")
        if status == 413:
            return (f"The Hub refused the upload as too large (413): {size or 'the files'}. Push without "
                    "--include-photos, push a LoRA pet model instead of a fully fine-tuned one (train with "
                    "--method lora), or free storage in your Hub account; then push again.")
        server = self._redact(getattr(error, "server_message", None) or _short(error))
        if status is not None:
            return (f"The Hub refused to {_ACTIONS.get(action, action)} {repo} (HTTP {status}): {server}. "
                    "Check the repo id and your token, then try again.")
        if isinstance(error, ValueError):  # huggingface_hub's own checks, e.g. invalid card metadata
            return f"Could not {_ACTIONS.get(action, action)} {repo}: {server}"
        return (f"Could not {_ACTIONS.get(action, action)} {repo} on {self.endpoint} ({type(error).__name__}: "
                f"{server}). Check the endpoint (--endpoint or HF_ENDPOINT) points at a Hugging Face Hub.")

    def _gave_up(self, action: str, repo_id: str | None, status: int | None, error: Exception, tries: int) -> str:
        """The message once every try failed in a way that may pass (a busy Hub, no connection)."""
        doing = f"{_ACTIONS.get(action, action)}{f' {repo_id}' if repo_id else ''}"
        if status is not None:
            return (f"The Hub at {self.endpoint} did not answer properly {tries} times in a row (HTTP {status}) "
                    f"while PetDream tried to {doing}. It may be down or busy; nothing is lost, try again in a "
                    "few minutes.")
        endpoint_hint = "" if self.endpoint == DEFAULT_ENDPOINT else " and the endpoint (--endpoint or HF_ENDPOINT)"
        return (f"Could not reach the Hub at {self.endpoint} to {doing} ({tries} tries): "
                f"{self._redact(_unreachable(error))}. Nothing is lost: check your internet connection"
                f"{endpoint_hint}, then try again.")

    def _redact(self, text: str) -> str:
        """The text with the token cut out, wherever a server or library echoed it."""
        text = str(text)
        return text.replace(self._token, "hf_***") if self._token else text


_ACTIONS = {"check your token": "check your token", "create": "create", "read": "read", "push": "push to",
            "pull": "download"}


class _Incomplete(Exception):
    """A download that ended without every file (counts as a network error: retried)."""


# -- what a push uploads ----------------------------------------------------------------------


def default_repo_name(pet_name: str) -> str:
    """`petdream-<name>`: lower case, letters and digits joined by '-' ("Mr. Bean" -> petdream-mr-bean)."""
    slug = re.sub(r"[^a-z0-9]+", "-", pet_name.lower()).strip("-")[:60]
    if not slug:  # a name in another script: keep repos of different pets apart
        slug = "pet-" + hashlib.sha1(pet_name.encode()).hexdigest()[:6]
    return f"petdream-{slug}"


def _model_files(model: PetModel) -> dict[str, Path | bytes]:
    """The PetModel folder's files a repo holds: metadata, weights, samples, loss curve.

    Checkpoints, hidden files and anything else in the folder stay local.
    """
    root = model.path
    files: dict[str, Path | bytes] = {METADATA_FILE: root / METADATA_FILE}
    if model.method == "lora":
        files[LORA_WEIGHTS_FILE] = model.lora_weights
    else:
        for path in sorted(model.pipeline_dir.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                files[relative.as_posix()] = path
    if (root / SAMPLES_DIR).is_dir():
        for path in sorted((root / SAMPLES_DIR).glob("*.png")):
            files[f"{SAMPLES_DIR}/{path.name}"] = path
    if (root / LOSS_PLOT).is_file():
        files[LOSS_PLOT] = root / LOSS_PLOT
    return files


def load_evaluation(model: PetModel, evaluation: str | Path | None) -> dict | None:
    """The evaluation report for `model`: {"json": report.json, "folder": Path}, or None.

    `evaluation` is a folder written by `evaluate --out` (or its report.json); None looks in
    the pet folder's evaluation/. A report of another pet is refused.
    """
    if evaluation is None:
        folder = model.path / EVALUATION_DIR
        if not (folder / "report.json").is_file():
            return None
    else:
        folder = Path(evaluation)
        folder = folder.parent if folder.name == "report.json" else folder
        if not (folder / "report.json").is_file():
            raise ValueError(f"No evaluation report at {folder}: give the folder `python -m petdream evaluate --out` "
                             "wrote (it holds report.json).")
    try:
        report = json.loads((folder / "report.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder / 'report.json'} is not valid JSON ({error}); evaluate the pet again.") from None
    pet = report.get("pet") or {}
    if (pet.get("name"), pet.get("trigger")) != (model.pet.name, model.pet.trigger):
        raise ValueError(f"The evaluation report in {folder} is of {pet.get('name')!r}, not of {model.pet.name!r}; "
                         f"give {model.pet.name}'s report with --evaluation.")
    return {"json": report, "folder": folder}


def _evaluation_files(report: dict, repo_id: str) -> dict[str, Path | bytes]:
    folder: Path = report["folder"]
    # report.json names the local folder it evaluated; on the Hub the repo is the model.
    public = {**report["json"], "model": repo_id}
    files: dict[str, Path | bytes] = {
        f"{EVALUATION_DIR}/report.json": (json.dumps(public, indent=2, ensure_ascii=False) + "\n").encode()}
    for name in EVALUATION_FILES[1:]:
        if (folder / name).is_file():
            files[f"{EVALUATION_DIR}/{name}"] = folder / name
    return files


def _photos_for(model: PetModel, photos: Sequence) -> list[_Photo]:
    """The training photos to upload: crops of the ones this model was trained on, as PNG."""
    trained = {p.get("sha256") for p in model.photos}
    kept, seen = [], set()
    for photo in photos:
        if (trained and photo.sha256 not in trained) or photo.sha256 in seen:
            continue
        seen.add(photo.sha256)
        buffer = io.BytesIO()
        photo.image.save(buffer, format="PNG")  # re-encoded from pixels: no EXIF, no GPS position
        kept.append(_Photo(photo.sha256, buffer.getvalue()))
    if photos and not kept:
        raise ValueError(f"None of the photos given are the ones {model.pet.name} was trained on (petdream.json "
                         "lists their SHA-256); give the same photo folder as for training.")
    return kept


def _managed(path: str) -> bool:
    return path in MANAGED_FILES or path.startswith(MANAGED_PREFIXES)


def _describe_size(files: dict[str, Path | bytes]) -> str:
    sizes = {path: (len(c) if isinstance(c, bytes) else c.stat().st_size) for path, c in files.items()}
    largest = max(sizes, key=sizes.get)
    return (f"{len(sizes)} files, {sum(sizes.values()) / 1e6:.1f} MB in all, the largest {largest} "
            f"({sizes[largest] / 1e6:.1f} MB)")


# -- the model card ---------------------------------------------------------------------------

CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ pet.name }}: a DreamBooth {{ method_title }} of {{ base_title }}

<Gallery />

{{ pet.name }} is a {{ pet.class_noun }}. This model learned {{ pet.name }} from {{ n_photos }} photos with \
DreamBooth ({{ method_title }}{% if prior %}, with prior preservation{% endif %}), trained with PetDream.
{% if random_weights %}
> **Test model.** It was trained on PetDream's `tiny` profile: a small Stable Diffusion with random weights. \
It draws noise; it exists to test the whole path from photos to the Hub.
{% endif %}
## Prompting

Write **`{{ pet.phrase }}`** where the pet goes: the trigger word `{{ pet.trigger }}`, then its class \
`{{ pet.class_noun }}`. The model was trained on the instance prompt `{{ instance_prompt }}`.
{% if samples %}
| prompt | seed | sample |
|---|---|---|
{% for sample in samples %}| {{ sample.prompt }} | {{ sample.seed }} | ![{{ sample.prompt }}]({{ sample.file }}) |
{% endfor %}{% endif %}
## Use it with 🧨 diffusers

```python
{{ usage }}
```

Or with PetDream: `python -m petdream pull --repo {{ repo_id }} --output pets/{{ slug }}`, then \
`python -m petdream generate --model pets/{{ slug }} --prompt "a photo of {{ pet.phrase }} in the snow" --out snow.png`.

## Training

{{ base_sentence }} Base model revision: {{ base_revision }}.

| hyperparameter | value |
|---|---|
{% for key, value in hyperparameters %}| {{ key }} | {{ value }} |
{% endfor %}
{% if loss_plot %}![Training loss](loss.png)
{% endif %}
## Evaluation
{% if evaluation %}
PetDream's evaluation ({{ evaluation.n_prompts }} prompts, {{ evaluation.images_per_prompt }} images each, \
{{ evaluation.steps }} steps), beside the base model alone on the same prompts and seeds. Subject fidelity \
(DINO, CLIP-I) should rise with training; prompt fidelity (CLIP-T, CLIPScore) should stay near the base model's.{% if evaluation.random_weights %} These numbers come from random-weight models and mean \
nothing.{% endif %}

| metric | {{ pet.name }} | base model |
|---|---|---|
{% for row in evaluation.rows %}| {{ row.name }} | {{ row.pet }} | {{ row.base }} |
{% endfor %}
{% if "report.md" in evaluation.files %}The full report: [evaluation/report.md](evaluation/report.md). \
{% endif %}{% if "grid.png" in evaluation.files %}The pictures: [evaluation/grid.png](evaluation/grid.png).{% endif %}
{% for warning in evaluation.warnings %}
- {{ warning }}{% endfor %}
{% else %}
Not evaluated yet: `python -m petdream evaluate --model pets/{{ slug }} --photos PHOTOS \
--out pets/{{ slug }}/evaluation`, then push again.
{% endif %}
## Privacy and license

{% if n_photos_uploaded %}The {{ n_photos_uploaded }} training photos are in `photos/`, as the square crops the \
model was trained on, re-encoded without EXIF data (no camera or location).{% else %}The training photos are not \
in this repo; `petdream.json` lists only their SHA-256 hashes and sizes.{% endif %}

{% if license %}The weights inherit the base model's license, `{{ license }}`, and its use restrictions.\
{% else %}The base model's license could not be determined; check it before sharing images made with this model.\
{% endif %}
"""

EVALUATION_ROWS = (  # (report key, label, digits)
    ("clip_score", "CLIPScore (0-100)", 2), ("clip_t", "CLIP-T", 3), ("clip_i", "CLIP-I", 3), ("dino", "DINO", 3),
    ("ssim_best", "SSIM, best match", 3), ("ssim_mean", "SSIM, mean", 3), ("fid", "FID (lower is better)", 1),
)
HYPERPARAMETERS = (  # (key in petdream.json's training, label)
    ("method", "method"), ("steps_done", "steps"), ("learning_rate", "learning rate"), ("lr_scheduler", "schedule"),
    ("batch_size", "batch size"), ("gradient_accumulation", "gradient accumulation"), ("rank", "LoRA rank"),
    ("lora_alpha", "LoRA alpha"), ("train_text_encoder", "text encoder trained"), ("resolution", "resolution (px)"),
    ("prior_preservation", "prior preservation"), ("class_prompt", "class prompt"),
    ("num_class_images", "class images"), ("prior_loss_weight", "prior loss weight"), ("snr_gamma", "Min-SNR gamma"),
    ("offset_noise", "offset noise"), ("mixed_precision_used", "mixed precision"), ("optimizer", "optimizer"),
    ("gradient_checkpointing", "gradient checkpointing"), ("seed", "seed"), ("final_loss", "final loss"),
    ("seconds", "training time (s)"), ("device", "device"),
)


def make_model_card(model: PetModel, repo_id: str, *, evaluation: dict | None = None, n_photos_uploaded: int = 0,
                    license: str | None = None):
    """The repo's README.md: a `huggingface_hub.ModelCard` with metadata the Hub understands
    (base_model, license, tags, instance_prompt, a widget of the samples, the evaluation as
    model-index) and text for people (prompting, diffusers usage, hyperparameters, numbers).

    evaluation: what `load_evaluation` returns, or None.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    pet, training = model.pet, model.training
    tiny = model.base_model_id.startswith(TINY_BASE_PREFIX)
    instance_prompt = training.get("instance_prompt") or pet.instance_prompt
    samples = _samples(model)
    tags = [tag for tag in TAGS if model.method == "lora" or tag != "lora"]
    if tiny:
        tags.append("petdream-tiny")
    eval_results, evaluation_view = None, None
    if evaluation is not None:
        evaluation_view = _evaluation_view(evaluation["json"])
        evaluation_view["files"] = [name for name in EVALUATION_FILES if (evaluation["folder"] / name).is_file()]
        eval_results = [
            EvalResult(task_type="text-to-image", dataset_type="petdream-evaluation-prompts",
                       dataset_name=f"PetDream evaluation prompts ({evaluation_view['n_prompts']})",
                       metric_type=key, metric_name=label, metric_value=round(value, 4))
            for key, label, value in evaluation_view["values"]
        ]
    card_data = ModelCardData(
        # The Hub checks base_model names a model on the Hub: the tiny base is not one, nor a local folder's.
        base_model=model.base_model_id if not tiny and _looks_like_repo_id(model.base_model_id) else None,
        license=license,
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=tags,
        model_name=repo_id.split("/")[-1] if eval_results else None,
        eval_results=eval_results,
        instance_prompt=instance_prompt,
        widget=[{"text": s["prompt"], "output": {"url": s["file"]}} for s in samples] or None,
    )
    base_title = "PetDream's tiny test model" if tiny else f"`{model.base_model_id}`"
    base_sentence = (
        f"Base model: `{model.base_model_id}`, PetDream's random-weight tiny Stable Diffusion." if tiny else
        f"Base model: [{model.base_model_id}](https://huggingface.co/{model.base_model_id})."
        if _looks_like_repo_id(model.base_model_id) else
        f"Base model: a local copy of Stable Diffusion known as `{model.base_model_id.removeprefix('local:')}`, not "
        "named on the Hub (PETDREAM_BASE_MODEL_ID names it).")
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        pet=pet,
        repo_id=repo_id,
        slug=default_repo_name(pet.name).removeprefix("petdream-"),
        method_title="LoRA" if model.method == "lora" else "full fine-tune",
        base_title=base_title,
        base_sentence=base_sentence,
        base_revision=_revision_words(model),
        prior=bool(training.get("prior_preservation")),
        random_weights=tiny or model.profile == "tiny",
        n_photos=len(model.photos) or "a few",
        instance_prompt=instance_prompt,
        samples=samples,
        usage=_usage(model, repo_id, samples[-1]["prompt"] if samples else f"a photo of {pet.phrase} at the beach"),
        hyperparameters=[(label, _format(training[key])) for key, label in HYPERPARAMETERS
                         if training.get(key) is not None],
        loss_plot=(model.path / LOSS_PLOT).is_file(),
        evaluation=evaluation_view,
        n_photos_uploaded=n_photos_uploaded,
        license=license,
    )


def _revision_words(model: PetModel) -> str:
    """The base model's revision as a card says it: "`main`, commit `451f...`", "commit `451f...`", "the latest"."""
    revision, commit = model.base_model_revision, model.base_model_commit
    if commit and commit != revision:  # a snapshot folder's revision is already its commit
        return f"`{revision}`, commit `{commit}`" if revision else f"commit `{commit}`"
    return f"`{revision}`" if revision else "the latest"


def _samples(model: PetModel) -> list[dict]:
    """[{"file", "prompt", "seed"}] of the pet folder's sample images, for the widget."""
    recorded = [s for s in model.training.get("samples") or []
                if isinstance(s, dict) and (model.path / str(s.get("file", ""))).is_file()]
    if recorded:
        return [{"file": s["file"], "prompt": s.get("prompt", ""), "seed": s.get("seed", "")} for s in recorded]
    # Older pet folders: the prompt is in the file name, "00-a-photo-of-bruno-dog.png".
    folder = model.path / SAMPLES_DIR
    names = sorted(p.name for p in folder.glob("*.png") if p.name != "grid.png") if folder.is_dir() else []
    return [{"file": f"{SAMPLES_DIR}/{name}", "prompt": re.sub(r"^\d+-", "", name[:-4]).replace("-", " "),
             "seed": ""} for name in names]


def _usage(model: PetModel, repo_id: str, prompt: str) -> str:
    tiny = model.base_model_id.startswith(TINY_BASE_PREFIX)
    if tiny:
        base = ('from petdream.models.profiles import tiny_profile\n\n'
                'base = tiny_profile(Path("petdream-data")).base_model  # PetDream\'s random-weight test model\n')
        head = "from pathlib import Path\n\nimport torch\nfrom diffusers import StableDiffusionPipeline\n" + base
        load_base = "StableDiffusionPipeline.from_pretrained(base, torch_dtype=torch.float32)"
        device = "cpu"
    else:
        head = "import torch\nfrom diffusers import StableDiffusionPipeline\n"
        pinned = model.base_model_commit or model.base_model_revision  # the commit: the weights it trained on
        revision = f', revision="{pinned}"' if pinned else ""
        base = model.base_model_id if _looks_like_repo_id(model.base_model_id) else "path/to/your/base-model"
        load_base = f'StableDiffusionPipeline.from_pretrained("{base}"{revision}, torch_dtype=torch.float16)'
        device = "cuda"
    if model.method == "lora":
        body = (f"pipeline = {load_base}.to(\"{device}\")\n"
                f'pipeline.load_lora_weights("{repo_id}")  # {LORA_WEIGHTS_FILE}\n')
    else:
        dtype = "torch.float32" if tiny else "torch.float16"
        head = head.replace("from diffusers", "from huggingface_hub import snapshot_download\nfrom diffusers")
        body = (f'folder = snapshot_download("{repo_id}")\n'
                f'pipeline = StableDiffusionPipeline.from_pretrained(f"{{folder}}/{PIPELINE_DIR}", '
                f'torch_dtype={dtype}).to("{device}")\n')
    return (f"{head}\n{body}image = pipeline({json.dumps(prompt)}, num_inference_steps=25).images[0]\n"
            f'image.save("{model.pet.trigger}.png")')


def _evaluation_view(report: dict) -> dict:
    pet, base = report.get("overall") or {}, (report.get("baseline") or {}).get("overall") or {}

    def flat(overall: dict, fid) -> dict:
        ssim = overall.get("ssim") or {}
        return {**{k: overall.get(k) for k in ("clip_score", "clip_t", "clip_i", "dino")},
                "ssim_best": ssim.get("best"), "ssim_mean": ssim.get("mean"), "fid": fid}

    mine, theirs = flat(pet, report.get("fid")), flat(base, (report.get("baseline") or {}).get("fid"))
    rows, values = [], []
    for key, label, digits in EVALUATION_ROWS:
        if mine.get(key) is None:
            continue
        values.append((key, label, float(mine[key])))
        rows.append({"name": label, "pet": f"{mine[key]:.{digits}f}",
                     "base": "–" if theirs.get(key) is None else f"{theirs[key]:.{digits}f}"})
    settings = report.get("settings") or {}
    return {"rows": rows, "values": values, "n_prompts": len(report.get("prompts") or []),
            "images_per_prompt": settings.get("images_per_prompt", "?"), "steps": settings.get("steps", "?"),
            "random_weights": bool(report.get("random_weights")), "warnings": report.get("warnings") or []}


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


# -- what a pull infers -----------------------------------------------------------------------


def _infer_pet_model(repo_id: str, card_data, files: list[str], *, name, class_noun, trigger, base_model):
    """For a repo without petdream.json: (write(folder), weights file), or MissingPetInfo.

    The base model comes from the card's `base_model`, trigger and class noun from its
    `instance_prompt` ("a photo of sks dog" -> "sks", "dog"); the arguments win over both.
    """
    weights = _lora_weights_file(repo_id, files)
    card = card_data.to_dict() if card_data is not None else {}
    base = base_model or card.get("base_model")
    if isinstance(base, list):
        base = base[0] if base else None
    instance_prompt = card.get("instance_prompt")
    guessed_trigger, guessed_class = _parse_instance_prompt(instance_prompt)
    trigger, class_noun = trigger or guessed_trigger, class_noun or guessed_class
    missing = [(what, flag) for what, flag, value in (
        ("the pet's name", "--name", name),
        ("its class noun, e.g. dog or cat", "--class-noun", class_noun),
        ("its trigger word, e.g. sks (the card has no instance_prompt)", "--trigger", trigger),
        ("the base model the LoRA was trained on (the card has no base_model)", "--base-model", base),
    ) if not value]
    if missing:
        raise MissingPetInfo(repo_id, missing)

    def write(folder: Path) -> None:
        if weights != LORA_WEIGHTS_FILE:  # PetDream (and diffusers' default) name for LoRA weights
            shutil.copyfile(folder / weights, folder / LORA_WEIGHTS_FILE)
        PetModel(
            path=folder, pet=Pet(name.strip(), trigger.strip(), class_noun.strip()), base_model_id=base,
            base_model_revision=None, profile="tiny" if base.startswith(TINY_BASE_PREFIX) else "sd15",
            method="lora",
            training={"source": f"hub:{repo_id}", "instance_prompt": instance_prompt or f"a photo of {trigger} "
                      f"{class_noun}", "note": "not trained by PetDream; inferred from the repo's model card"},
            photos=[], created_at=PetModel.now(),
        ).write_metadata()

    return write, weights


def _lora_weights_file(repo_id: str, files: list[str]) -> str:
    if LORA_WEIGHTS_FILE in files:
        return LORA_WEIGHTS_FILE
    candidates = [path for path in files if "/" not in path and path.endswith(".safetensors")]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(candidates) if candidates else "none"
    raise ValueError(
        f"{repo_id} is neither a PetDream repo (no {METADATA_FILE}) nor a diffusers LoRA repo PetDream can read: "
        f"it has no {LORA_WEIGHTS_FILE} and not exactly one .safetensors file at its top (found: {found})."
    )


def _parse_instance_prompt(prompt) -> tuple[str | None, str | None]:
    """"a photo of sks dog" -> ("sks", "dog"); "sks" -> ("sks", None); anything else -> (None, None)."""
    if not isinstance(prompt, str):
        return None, None
    words = re.sub(r"^\s*(an?\s+)?(photo|picture|image)\s+of\s+|^\s*(an?|the)\s+", "", prompt.strip(),
                   flags=re.IGNORECASE).split()
    if len(words) == 1:
        return words[0], None
    if len(words) >= 2:
        return words[0], " ".join(words[1:])  # DreamBooth triggers are one rare token; the rest names the class
    return None, None


def _rename_pet(folder: Path, name, class_noun, trigger) -> None:
    model = PetModel.load(folder)
    pet = Pet(name=(name or model.pet.name).strip(), trigger=(trigger or model.pet.trigger).strip(),
              class_noun=(class_noun or model.pet.class_noun).strip())
    dataclasses.replace(model, pet=pet).write_metadata()


def _check_pull_target(output: Path) -> None:
    """Pull into a new or empty folder, or one an earlier pull left (it resumes); never over
    a folder of something else."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file; give a folder to pull the pet model into.")
    if output.is_dir() and any(output.iterdir()) and not (output / ".cache" / "huggingface").is_dir():
        raise ValueError(f"{output} is not empty; pull into a new folder, or empty this one first.")


# -- reading errors ---------------------------------------------------------------------------


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _in_chain(error: BaseException, kind) -> bool:
    return any(isinstance(e, kind) for e in _chain(error))


def _status_of(error: BaseException) -> tuple[int | None, float | None]:
    """The HTTP status the Hub answered with (anywhere in the error's chain), and Retry-After in s."""
    for e in _chain(error):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            retry_after = None
            try:
                retry_after = float(response.headers.get("Retry-After"))
            except (TypeError, ValueError, AttributeError):
                pass
            return status, retry_after
    return None, None


def _is_network_error(error: BaseException) -> bool:
    transport: tuple = (ConnectionError, TimeoutError, _Incomplete)
    for module in ("httpx2", "httpx"):  # huggingface_hub's HTTP client, whichever this version uses
        try:
            transport += (__import__(module).TransportError,)
        except (ImportError, AttributeError):
            pass
    return _in_chain(error, transport)


def _unreachable(error: BaseException) -> str:
    """Why a network error kept PetDream from the Hub, in words (the libraries say "[Errno -2] ...")."""
    if incomplete := next((e for e in _chain(error) if isinstance(e, _Incomplete)), None):
        return f"the download stopped early: {_short(incomplete)}"
    if _in_chain(error, socket.gaierror):
        return "its address could not be looked up, so this machine seems to be offline or the address is mistyped"
    if _in_chain(error, ConnectionRefusedError):
        return "nothing answers at that address (connection refused)"
    if _in_chain(error, ssl.SSLError):
        return f"the secure connection failed ({_short(error)})"
    if any("timeout" in type(e).__name__.lower() for e in _chain(error)):
        return "it did not answer in time"
    return f"the connection failed ({_short(error)})"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _looks_like_repo_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(REPO_NAME.match(part) for part in parts)
