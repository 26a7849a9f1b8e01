"""The Store: everything PetDream must remember across restarts, in one SQLite file.

    <data_dir>/petdream.sqlite3           owners, pets, training runs, chat turns, images, feedback
    <data_dir>/people/<owner hash>/pets/<pet id>/
        photos/                           the pet's training photos (and liked images added later)
        images/                           pictures drawn for the pet
        runs/<run id>/                    what one training run writes: its PetModel, checkpoints/
    <data_dir>/trash/                     folders being deleted (see `Store._delete`)

An owner is a person logged in with Hugging Face (`hf:<username>`) or, without a login, a browser
session (`session:<unguessable id>`). Every read takes the owner and returns only that owner's rows;
another owner's pet, run or image behaves exactly like a missing one. Folders are named by a hash
of the owner, never by the owner id itself.

The Gradio app calls the Store from several worker threads: each thread gets its own connection,
the file is in WAL mode (readers never wait for the writer), and every write is one `BEGIN
IMMEDIATE` transaction, so concurrent writers queue on `busy_timeout` instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

logger = logging.getLogger(__name__)

DB_FILE = "petdream.sqlite3"
TRASH_DIR = "trash"
BUSY_TIMEOUT_MS = 10_000

# Where a training run may go from each status. "finished" only through `finish_run`, which also
# points the pet at its new model in the same transaction. Failed and cancelled runs keep a
# checkpoint (the trainer saves one), so they may be queued again to resume.
RUN_TRANSITIONS = {
    "queued": {"running", "failed", "cancelled", "interrupted"},
    "running": {"finished", "failed", "cancelled", "interrupted"},
    "interrupted": {"queued", "running", "cancelled"},  # cut off by a restart: resumable
    "failed": {"queued"},
    "cancelled": {"queued"},
    "finished": set(),
}
# What Resume may queue again: cut off by a restart, cancelled or failed.
RESUMABLE_STATUSES = tuple(status for status, next_ in RUN_TRANSITIONS.items() if "queued" in next_)
CHAT_ROLES = ("user", "assistant")

# The schema, one step per version, applied in order at open (`PRAGMA user_version` counts the steps
# done). Never edit a released step: append a new one, so every older database upgrades the same way.
# Paths inside the data dir are stored relative to it, so the data dir can move.
MIGRATIONS = [
    """
    CREATE TABLE owners (
        key TEXT PRIMARY KEY,                   -- 'hf:<username>' or 'session:<id>'
        created_at TEXT NOT NULL,
        chat_consent_at TEXT                    -- when they agreed that chats are kept; NULL: not kept
    );
    CREATE TABLE pets (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL REFERENCES owners(key) ON DELETE CASCADE,
        name TEXT NOT NULL, class_noun TEXT NOT NULL, trigger TEXT NOT NULL,
        photos_dir TEXT NOT NULL,
        model_dir TEXT,                         -- the PetModel folder in use; NULL until a run finishes
        hub_repo TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE training_runs (
        id TEXT PRIMARY KEY,
        pet_id TEXT NOT NULL REFERENCES pets(id) ON DELETE CASCADE,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'running', 'finished', 'failed', 'cancelled', 'interrupted')),
        config TEXT NOT NULL,                   -- JSON: TrainingConfig.to_dict()
        metrics TEXT NOT NULL DEFAULT '{}',     -- JSON: step, loss, final_loss, seconds, ...
        error TEXT,
        output_dir TEXT NOT NULL,               -- the run's PetModel folder, checkpoints/ inside it
        init_model_dir TEXT,                    -- the PetModel it trains further (feedback loop)
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT
    );
    CREATE TABLE chat_turns (
        id INTEGER PRIMARY KEY,                 -- increasing: the order things were said
        owner TEXT NOT NULL REFERENCES owners(key) ON DELETE CASCADE,
        pet_id TEXT REFERENCES pets(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL, mood TEXT, image_path TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        pet_id TEXT NOT NULL REFERENCES pets(id) ON DELETE CASCADE,
        path TEXT NOT NULL, prompt TEXT NOT NULL, seed INTEGER,
        created_at TEXT NOT NULL
    );
    CREATE TABLE feedback (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        owner TEXT NOT NULL REFERENCES owners(key) ON DELETE CASCADE,
        liked INTEGER NOT NULL CHECK (liked IN (0, 1)),
        created_at TEXT NOT NULL,
        PRIMARY KEY (image_id, owner)           -- one rating per image and person; a new one replaces it
    );
    CREATE INDEX pets_by_owner ON pets(owner);
    CREATE INDEX runs_by_pet ON training_runs(pet_id);
    CREATE INDEX runs_by_status ON training_runs(status);
    CREATE INDEX chat_by_owner ON chat_turns(owner, pet_id);
    CREATE INDEX images_by_pet ON images(pet_id);
    """,
    # When each owner last did something (idle browser sessions are forgotten by it); filled in from
    # what they had already done.
    """
    ALTER TABLE owners ADD COLUMN last_active_at TEXT;
    UPDATE owners SET last_active_at = max(created_at, coalesce(chat_consent_at, ''),
        coalesce((SELECT max(p.created_at) FROM pets p WHERE p.owner = owners.key), ''),
        coalesce((SELECT max(max(r.created_at, coalesce(r.started_at, ''), coalesce(r.finished_at, '')))
                  FROM training_runs r JOIN pets p ON r.pet_id = p.id WHERE p.owner = owners.key), ''),
        coalesce((SELECT max(i.created_at) FROM images i JOIN pets p ON i.pet_id = p.id
                  WHERE p.owner = owners.key), ''),
        coalesce((SELECT max(c.created_at) FROM chat_turns c WHERE c.owner = owners.key), ''),
        coalesce((SELECT max(f.created_at) FROM feedback f WHERE f.owner = owners.key), ''));
    CREATE INDEX owners_by_activity ON owners(last_active_at);
    """,
    # The trash entries of deletions that committed: their files may go (see `Store._delete`).
    """
    CREATE TABLE deletions (entry TEXT PRIMARY KEY, created_at TEXT NOT NULL);
    """,
    # Whether a kept reply is the crisis message, which the chat sets apart under its title, kept or live.
    # Replies kept before this was recorded are found by how the crisis message began and ended then.
    """
    ALTER TABLE chat_turns ADD COLUMN crisis INTEGER NOT NULL DEFAULT 0 CHECK (crisis IN (0, 1));
    UPDATE chat_turns SET crisis = 1 WHERE role = 'assistant'
        AND text LIKE 'I''m really glad you told me.%I''m still here with you while you reach out.';
    """,
]


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class NotFound(StoreError, LookupError):
    """No such pet, run or image for this owner (whether it is missing or someone else's)."""


# Said alike of a pet deleted (in another tab, say) and of someone else's: it tells nothing of the latter.
NO_SUCH_PET = "No such pet: it may have been deleted (in another tab, perhaps). Choose another one."


# --- owners --------------------------------------------------------------------------------------

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{32,128}")  # at least 32 characters: never guessable


def new_session_id() -> str:
    """An unguessable id for a browser without a login (256 random bits), kept in the browser."""
    return secrets.token_urlsafe(32)


def user_owner(username: str) -> str:
    """The owner key of a person logged in with Hugging Face (OAuth)."""
    if not _USERNAME.fullmatch(username or ""):
        raise ValueError(f"not a Hugging Face username: {username!r}")
    return f"hf:{username}"


def session_owner(session_id: str) -> str:
    """The owner key of a browser session; refuses ids short or odd enough to be guessed."""
    if not _SESSION_ID.fullmatch(session_id or ""):
        raise ValueError("a session id must be 32 to 128 URL-safe characters (use new_session_id())")
    return f"session:{session_id}"


def _check_owner(owner: str) -> str:
    kind, _, value = (owner or "").partition(":")
    if not ((kind == "hf" and _USERNAME.fullmatch(value)) or (kind == "session" and _SESSION_ID.fullmatch(value))):
        raise ValueError(f"not an owner key (hf:<username> or session:<id>): {owner!r}")
    return owner


def owner_digest(owner: str) -> str:
    """A short hash of the owner key: what their folders are named by, so no owner id lands on disk."""
    return hashlib.sha256(_check_owner(owner).encode()).hexdigest()[:16]


def owner_dir(data_dir: str | Path, owner: str) -> Path:
    """The folder holding everything of one owner."""
    return Path(data_dir) / "people" / owner_digest(owner)


@dataclass(frozen=True)
class PetPaths:
    """Where one pet's files live."""

    root: Path
    photos: Path  # training photos
    images: Path  # pictures drawn for the pet
    runs: Path  # one folder per training run

    def run_dir(self, run_id: str) -> Path:
        """The folder a training run writes its PetModel (and checkpoints/) to."""
        return self.runs / run_id

    def run_photos(self, run_id: str) -> Path:
        """The photo set of a run that trains on more than the pet's photos (Teach my pet: those plus
        the liked pictures), its own so that the run resumes on what it started with."""
        return self.runs / f"{run_id}-photos"


def pet_paths(data_dir: str | Path, owner: str, pet_id: str) -> PetPaths:
    """The folders of `owner`'s pet `pet_id` under `data_dir` (not created here)."""
    root = owner_dir(data_dir, owner) / "pets" / pet_id
    return PetPaths(root=root, photos=root / "photos", images=root / "images", runs=root / "runs")


# --- rows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PetRecord:
    """A pet as stored: who owns it, what it is called, where its photos and model are."""

    id: str
    owner: str
    name: str
    class_noun: str
    trigger: str
    photos_dir: Path
    model_dir: Path | None  # None until a training run finishes
    hub_repo: str | None
    created_at: str


@dataclass(frozen=True)
class TrainingRun:
    """One training of a pet: its status, the config it ran with and what it measured."""

    id: str
    pet_id: str
    status: str
    config: dict
    metrics: dict
    error: str | None
    output_dir: Path
    init_model_dir: Path | None  # the model this run continues from (feedback loop)
    created_at: str
    started_at: str | None
    finished_at: str | None

    @property
    def checkpoint_dir(self) -> Path:
        """Where the trainer keeps this run's checkpoints (resume continues from the newest)."""
        return self.output_dir / "checkpoints"

    @property
    def resumable(self) -> bool:
        """Whether Resume may queue it again: cut off by a restart, cancelled, or failed in a way that
        resuming can get past (a diverged loss cannot: the same steps would diverge again)."""
        return self.status in RESUMABLE_STATUSES and self.metrics.get("resumable", True)

    def training_config(self):
        """The stored config as a TrainingConfig again (JSON turned its tuple into a list)."""
        from petdream.training.config import TrainingConfig

        return TrainingConfig.from_dict(self.config)


@dataclass(frozen=True)
class ChatTurn:
    """One message of a chat, kept only because its owner consented."""

    id: int
    owner: str
    pet_id: str | None
    role: str  # "user" or "assistant"
    text: str
    mood: str | None
    image_path: Path | None
    created_at: str
    crisis: bool  # the companion's crisis reply (with its helplines), not an ordinary one


@dataclass(frozen=True)
class GeneratedImage:
    """A picture drawn for a pet, with its owner's rating (True, False, or None: not rated)."""

    id: int
    pet_id: str
    path: Path
    prompt: str
    seed: int | None
    created_at: str
    liked: bool | None


def utc_now() -> str:
    """Now, UTC, ISO-8601 with milliseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _moved_path_sql(column: str) -> str:
    """SQL for `column`'s stored path with the :old owner folder swapped for the :new one."""
    return (f"CASE WHEN substr({column}, 1, length(:old)) = :old "
            f"THEN :new || substr({column}, length(:old) + 1) ELSE {column} END")


# Browser sessions that last did something before :cutoff (ISO-8601 UTC text sorts as time) and
# have no training waiting or running.
_IDLE_SESSIONS = """
    SELECT o.key FROM owners o
    WHERE o.key LIKE 'session:%' AND coalesce(o.last_active_at, o.created_at) < :cutoff
      AND NOT EXISTS (SELECT 1 FROM training_runs r JOIN pets p ON r.pet_id = p.id
                      WHERE p.owner = o.key AND r.status IN ('queued', 'running'))
"""


# --- the store -----------------------------------------------------------------------------------

class Store:
    """PetDream's persistent state in `<data_dir>/petdream.sqlite3`; safe to share between threads."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_FILE
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._migrate(self._conn())
            self._finish_deletions()
            self._put_pets_back()
        except BaseException:
            self.close()
            raise

    # connections and transactions

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("This Store is closed.")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions, `_write` opens them; `timeout` is
            # SQLite's busy_timeout: a writer waits for another instead of failing at once.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self):
        """One write transaction. IMMEDIATE takes the write lock up front, so two threads never
        both read and then deadlock upgrading to write (where busy_timeout would not help)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} was written by a newer PetDream (schema {version}); this one knows schema "
                    f"{len(MIGRATIONS)}. Upgrade PetDream to open it; nothing was changed.")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        """Close every thread's connection; the Store is unusable afterwards."""
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # paths: inside the data dir they are stored relative to it, so the data dir can move

    def _to_db(self, path: str | Path | None) -> str | None:
        if path is None:
            return None
        path = Path(path).absolute()
        return str(path.relative_to(self.data_dir)) if path.is_relative_to(self.data_dir) else str(path)

    def _from_db(self, text: str | None) -> Path | None:
        return None if text is None else self.data_dir / text  # an absolute `text` stays as it is

    def _row(self, cls, row: sqlite3.Row):
        """A row as its dataclass: stored paths back to absolute Paths, JSON back to dicts."""
        values = {field.name: row[field.name] for field in fields(cls)}
        for name in values.keys() & {"photos_dir", "model_dir", "output_dir", "init_model_dir", "image_path", "path"}:
            values[name] = self._from_db(values[name])
        for name in values.keys() & {"config", "metrics"}:
            values[name] = json.loads(values[name])
        for name in values.keys() & {"liked", "crisis"}:
            if values[name] is not None:
                values[name] = bool(values[name])
        return cls(**values)

    def paths(self, owner: str, pet_id: str) -> PetPaths:
        """The folders of `owner`'s pet `pet_id` (see `pet_paths`)."""
        return pet_paths(self.data_dir, owner, pet_id)

    def can_serve(self, owner: str, path: str | Path) -> bool:
        """Whether the file at `path` may be sent to `owner`: it exists and, once every symlink and
        `..` is resolved, lies inside that owner's own folder. Guard every file the UI serves."""
        try:
            target = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return False
        # The owner's folder is built from the resolved data dir but not resolved itself: a symlink
        # planted in its place cannot widen what counts as "inside".
        return target.is_file() and target.is_relative_to(owner_dir(self.data_dir, owner))

    # owners and consent

    @staticmethod
    def _touch(conn: sqlite3.Connection, owner: str) -> None:
        """Record that `owner` did something now (adding them if new): idle browser sessions are
        judged by it."""
        now = utc_now()
        conn.execute("INSERT INTO owners (key, created_at, last_active_at) VALUES (?, ?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET last_active_at = excluded.last_active_at",
                     (_check_owner(owner), now, now))

    def set_chat_consent(self, owner: str, consent: bool) -> None:
        """Record that `owner` agrees (or no longer agrees) to keep their chats; revoking deletes them."""
        with self._write() as conn:
            self._touch(conn, owner)
            conn.execute("UPDATE owners SET chat_consent_at = ? WHERE key = ?", (utc_now() if consent else None, owner))
            if not consent:
                conn.execute("DELETE FROM chat_turns WHERE owner = ?", (owner,))

    def chat_consent(self, owner: str) -> str | None:
        """When `owner` consented to keeping chats, or None if they have not (or revoked it)."""
        row = self._conn().execute("SELECT chat_consent_at FROM owners WHERE key = ?", (_check_owner(owner),)).fetchone()
        return row["chat_consent_at"] if row else None

    def delete_owner(self, owner: str) -> None:
        """Forget `owner`: every row and file of theirs."""
        self._delete(owner_dir(self.data_dir, owner), "DELETE FROM owners WHERE key = ?", (_check_owner(owner),),
                     with_no_rows=True)  # files of theirs without a row (an import that failed) go too

    def move_pets(self, session: str, account: str) -> list[PetRecord]:
        """Give every pet of a browser `session` to the `account` it signed in to, with its files,
        trainings, pictures and ratings; returns the pets moved. The session's kept chats move only
        into an account that keeps chats (consent is the account's own); the session is deleted after.

        Pet by pet, the folder moves first, then its rows: a crash between leaves the pet the session's,
        its folder under the account, and the next Store puts the folder back (`_put_pets_back`)."""
        old = self._to_db(owner_dir(self.data_dir, session)) + os.sep
        new = self._to_db(owner_dir(self.data_dir, _check_owner(account))) + os.sep
        names = {"session": session, "account": account, "old": old, "new": new}
        keeps_chats = self.chat_consent(account) is not None
        moved = []
        for pet in self.pets(session):
            source, target = self.paths(session, pet.id).root, self.paths(account, pet.id).root
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, target)
            with self._write() as conn:
                self._touch(conn, account)
                values = {**names, "pet": pet.id}
                conn.execute(f"UPDATE pets SET owner = :account, photos_dir = {_moved_path_sql('photos_dir')}, "
                             f"model_dir = {_moved_path_sql('model_dir')} WHERE id = :pet AND owner = :session", values)
                conn.execute(f"UPDATE training_runs SET output_dir = {_moved_path_sql('output_dir')}, "
                             f"init_model_dir = {_moved_path_sql('init_model_dir')} WHERE pet_id = :pet", values)
                conn.execute(f"UPDATE images SET path = {_moved_path_sql('path')} WHERE pet_id = :pet", values)
                conn.execute("UPDATE feedback SET owner = :account WHERE owner = :session "
                             "AND image_id IN (SELECT id FROM images WHERE pet_id = :pet)", values)
                if keeps_chats:
                    conn.execute("UPDATE chat_turns SET owner = :account, "
                                 f"image_path = {_moved_path_sql('image_path')} "
                                 "WHERE owner = :session AND pet_id = :pet", values)
            moved.append(self.pet(account, pet.id))
        with self._write() as conn:
            self._touch(conn, account)
            if keeps_chats:
                conn.execute("UPDATE chat_turns SET owner = :account WHERE owner = :session", names)
        self.delete_owner(session)  # with the chats that did not move
        return moved

    def forget_idle_sessions(self, idle: timedelta) -> int:
        """Delete every browser session (an owner without a login) that did nothing for `idle`, with its
        files; returns how many. A session with a training waiting or running is kept."""
        cutoff = (datetime.now(timezone.utc) - idle).isoformat(timespec="milliseconds")
        forgotten = 0
        for (owner,) in self._conn().execute(_IDLE_SESSIONS, {"cutoff": cutoff}).fetchall():
            # One at a time, checked again: it may have come back meanwhile.
            forgotten += self._delete(owner_dir(self.data_dir, owner),
                                      f"DELETE FROM owners WHERE key = :owner AND key IN ({_IDLE_SESSIONS})",
                                      {"owner": owner, "cutoff": cutoff})
        return forgotten

    # pets

    def add_pet(self, owner: str, name: str, class_noun: str, trigger: str) -> PetRecord:
        """A new pet of `owner`, with its photos folder created."""
        pet_id = uuid.uuid4().hex
        paths = self.paths(owner, pet_id)
        paths.photos.mkdir(parents=True, exist_ok=True)
        with self._write() as conn:
            self._touch(conn, owner)
            conn.execute("INSERT INTO pets (id, owner, name, class_noun, trigger, photos_dir, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (pet_id, owner, name, class_noun, trigger, self._to_db(paths.photos), utc_now()))
        return self.pet(owner, pet_id)

    def pet(self, owner: str, pet_id: str) -> PetRecord:
        """`owner`'s pet `pet_id`; NotFound if there is none (or it is someone else's)."""
        row = self._conn().execute("SELECT * FROM pets WHERE id = ? AND owner = ?",
                                   (pet_id, _check_owner(owner))).fetchone()
        if row is None:
            raise NotFound(NO_SUCH_PET)
        return self._row(PetRecord, row)

    def pets(self, owner: str) -> list[PetRecord]:
        """Every pet of `owner`, oldest first."""
        rows = self._conn().execute("SELECT * FROM pets WHERE owner = ? ORDER BY created_at, rowid",
                                    (_check_owner(owner),))
        return [self._row(PetRecord, row) for row in rows]

    def update_pet(self, owner: str, pet_id: str, **changes) -> PetRecord:
        """Change any of a pet's name, trigger, model_dir and hub_repo."""
        allowed = {"name", "trigger", "model_dir", "hub_repo"}
        if not changes or set(changes) - allowed:
            raise ValueError(f"update_pet changes only {sorted(allowed)}; got {sorted(changes)}")
        if "model_dir" in changes:
            changes["model_dir"] = self._to_db(changes["model_dir"])
        columns = ", ".join(f"{name} = ?" for name in changes)
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE pets SET {columns} WHERE id = ? AND owner = ?",
                                  (*changes.values(), pet_id, _check_owner(owner)))
            if cursor.rowcount == 0:
                raise NotFound(NO_SUCH_PET)
        return self.pet(owner, pet_id)

    def delete_pet(self, owner: str, pet_id: str) -> None:
        """Delete a pet with its runs, chats, images and feedback, and its folder (a model_dir outside
        that folder is not PetDream's to delete)."""
        if not self._delete(self.paths(owner, pet_id).root, "DELETE FROM pets WHERE id = ? AND owner = ?",
                            (pet_id, _check_owner(owner))):
            raise NotFound(NO_SUCH_PET)

    # deleting rows with their folder, so that no crash leaves one without the other

    def _delete(self, folder: Path, statement: str, values, *, with_no_rows: bool = False) -> bool:
        """Run one DELETE `statement` and, if it deleted anything (or `with_no_rows`), delete `folder` with
        it; returns whether it did. Inside the transaction the folder is renamed into the trash (gone
        from its place at once) and a `deletions` row names the entry; after the commit the entry is
        removed, then its row. A crash before the commit leaves an entry without a row, which the next
        Store puts back beside its rows; one after leaves an entry with a row, which the next Store removes."""
        entry = None
        try:
            with self._write() as conn:
                if conn.execute(statement, values).rowcount == 0 and not with_no_rows:
                    return False
                relative = quote(folder.relative_to(self.data_dir).as_posix(), safe="")
                entry = self.data_dir / TRASH_DIR / f"{uuid.uuid4().hex}-{relative}"
                try:
                    if folder.exists():
                        entry.parent.mkdir(exist_ok=True)
                        os.rename(folder, entry)
                        _sync_folders(entry.parent, folder.parent)  # the move is on disk before the commit is
                    conn.execute("INSERT INTO deletions (entry, created_at) VALUES (?, ?)", (entry.name, utc_now()))
                except BaseException:
                    _put_back(entry, folder)  # before the rollback lets another Store look at the trash
                    raise
        except BaseException:
            if entry is not None:
                _put_back(entry, folder)  # the commit failed: the rows stay, so do their files
            raise
        self._empty(entry)
        return True

    def _empty(self, entry: Path) -> None:
        """Remove a committed deletion's trash entry, then its row; what cannot be removed now is tried
        again when a Store next opens."""
        shutil.rmtree(entry, ignore_errors=True)
        if entry.exists():
            logger.warning("Could not remove all of %s; trying again at the next start.", entry)
            return
        _sync_folders(entry.parent)  # gone for good before its row is, or a power cut could bring it back
        with self._write() as conn:
            conn.execute("DELETE FROM deletions WHERE entry = ?", (entry.name,))

    def _finish_deletions(self) -> None:
        """At open: finish the deletions a crash cut off (see `_delete`). An entry that is not one of
        `_delete`'s is removed: only deletions put anything in the trash."""
        trash = self.data_dir / TRASH_DIR
        if not trash.is_dir():
            trash.mkdir()
            _sync_folders(self.data_dir)
        with self._write() as conn:  # a deletion under way in another Store commits (or not) first
            committed = {row[0] for row in conn.execute("SELECT entry FROM deletions")}
            for entry in trash.iterdir():
                nonce, _, relative = entry.name.partition("-")
                if entry.name in committed:
                    continue
                if not (re.fullmatch(r"[0-9a-f]{32}", nonce) and relative):  # not `_delete`'s: still a deletion's
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                folder = self.data_dir / unquote(relative)
                try:
                    if folder.exists():
                        raise FileExistsError(f"{folder} exists")
                    folder.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(entry, folder)  # its rows were never deleted
                except OSError as error:
                    logger.warning("%s belongs back at %s, but it cannot go there (%s); it stays in the trash.",
                                   entry, folder, error)
        for name in committed:
            self._empty(trash / name)

    def _put_pets_back(self) -> None:
        """At open: a browser session's pet whose folder is missing from the session's, but found under
        another owner's (a move cut off between its folder and its rows), gets its folder back. Only
        sessions' pets move, so only theirs are looked at."""
        for pet_id, owner in self._conn().execute("SELECT id, owner FROM pets WHERE owner LIKE 'session:%'").fetchall():
            home = self.paths(owner, pet_id).root
            if home.exists():
                continue
            for stray in (self.data_dir / "people").glob(f"*/pets/{pet_id}"):
                home.parent.mkdir(parents=True, exist_ok=True)
                os.rename(stray, home)
                logger.warning("Put %s back at %s, where its records say it is.", stray, home)
                break

    # training runs

    def add_run(self, owner: str, pet_id: str, config, init_model_dir: str | Path | None = None) -> TrainingRun:
        """Queue a training of `owner`'s pet with `config` (a TrainingConfig or its dict). Give
        `init_model_dir` (usually the pet's model_dir) to train further from those weights."""
        values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        run_id = uuid.uuid4().hex
        with self._write() as conn:
            self.pet(owner, pet_id)  # NotFound for someone else's pet
            self._touch(conn, owner)
            conn.execute("INSERT INTO training_runs (id, pet_id, status, config, output_dir, init_model_dir, "
                         "created_at) VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                         (run_id, pet_id, json.dumps(values), self._to_db(self.paths(owner, pet_id).run_dir(run_id)),
                          self._to_db(init_model_dir), utc_now()))
        return self.run(owner, run_id)

    _RUNS_OF_OWNER = ("SELECT training_runs.* FROM training_runs JOIN pets ON pets.id = training_runs.pet_id "
                      "WHERE pets.owner = ?")

    def run(self, owner: str, run_id: str) -> TrainingRun:
        """`owner`'s training run `run_id`; NotFound if there is none (or it is someone else's)."""
        row = self._conn().execute(self._RUNS_OF_OWNER + " AND training_runs.id = ?",
                                   (_check_owner(owner), run_id)).fetchone()
        if row is None:
            raise NotFound("No such training run.")
        return self._row(TrainingRun, row)

    def runs(self, owner: str, pet_id: str | None = None) -> list[TrainingRun]:
        """`owner`'s training runs, of one pet or of all, oldest first."""
        sql, args = self._RUNS_OF_OWNER, [_check_owner(owner)]
        if pet_id is not None:
            sql, args = sql + " AND pets.id = ?", args + [pet_id]
        rows = self._conn().execute(sql + " ORDER BY training_runs.created_at, training_runs.rowid", args)
        return [self._row(TrainingRun, row) for row in rows]

    def resumable_runs(self, owner: str) -> list[TrainingRun]:
        """`owner`'s runs that Resume may continue (see TrainingRun.resumable)."""
        return [run for run in self.runs(owner) if run.resumable]

    def update_run(self, owner: str, run_id: str, *, status: str | None = None, metrics: dict | None = None,
                   error: str | None = None) -> TrainingRun:
        """Move a run to `status` (checked against RUN_TRANSITIONS), merge `metrics` into its
        metrics, and record `error`. Finishing goes through `finish_run`."""
        with self._write() as conn:
            run = self.run(owner, run_id)
            self._touch(conn, owner)  # a training that goes on (or is resumed) keeps its owner active
            sets = {}
            if status is not None and status != run.status:
                if status == "finished":
                    raise StoreError("A run finishes through finish_run(), which also sets the pet's model.")
                if status not in RUN_TRANSITIONS.get(run.status, ()):
                    raise StoreError(f"A {run.status} training run cannot become {status!r}.")
                sets["status"] = status
                if status == "running" and run.started_at is None:
                    sets["started_at"] = utc_now()
                if status in ("failed", "cancelled"):
                    sets["finished_at"] = utc_now()
                if status == "queued":  # tried again: the old outcome no longer applies
                    sets["finished_at"] = sets["error"] = None
            if metrics:
                sets["metrics"] = json.dumps({**run.metrics, **metrics})
            if error is not None:
                sets["error"] = error
            if sets:
                columns = ", ".join(f"{name} = ?" for name in sets)
                conn.execute(f"UPDATE training_runs SET {columns} WHERE id = ?", (*sets.values(), run_id))
        return self.run(owner, run_id)

    def finish_run(self, owner: str, run_id: str, model_dir: str | Path, metrics: dict | None = None) -> TrainingRun:
        """Mark a running run finished and make `model_dir` its pet's model, in one transaction."""
        with self._write() as conn:
            run = self.run(owner, run_id)
            if run.status != "running":
                raise StoreError(f"Only a running training run can finish; this one is {run.status}.")
            conn.execute("UPDATE training_runs SET status = 'finished', finished_at = ?, metrics = ? WHERE id = ?",
                         (utc_now(), json.dumps({**run.metrics, **(metrics or {})}), run_id))
            conn.execute("UPDATE pets SET model_dir = ? WHERE id = ?", (self._to_db(model_dir), run.pet_id))
        return self.run(owner, run_id)

    def mark_interrupted_runs(self) -> int:
        """At startup: every run still queued or running belongs to a process that is gone (one app
        process owns a data dir), so it becomes `interrupted`, resumable. Returns how many."""
        with self._write() as conn:
            return conn.execute("UPDATE training_runs SET status = 'interrupted' "
                                "WHERE status IN ('queued', 'running')").rowcount

    # chat

    def add_chat_turn(self, owner: str, role: str, text: str, *, pet_id: str | None = None,
                      mood: str | None = None, image_path: str | Path | None = None,
                      crisis: bool = False) -> ChatTurn | None:
        """Keep one chat message, only if `owner` consented; otherwise keep nothing and return None.
        crisis: the message is the companion's crisis reply."""
        if role not in CHAT_ROLES:
            raise ValueError(f"role must be one of {', '.join(CHAT_ROLES)}; got {role!r}")
        with self._write() as conn:  # consent is read in the same transaction as the insert
            self._touch(conn, owner)  # chatting is doing something, kept or not
            if self.chat_consent(owner) is None:
                return None
            if pet_id is not None:
                self.pet(owner, pet_id)
            turn_id = conn.execute("INSERT INTO chat_turns (owner, pet_id, role, text, mood, image_path, created_at, "
                                   "crisis) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                   (owner, pet_id, role, text, mood, self._to_db(image_path), utc_now(),
                                    int(crisis))).lastrowid
        return self._row(ChatTurn, self._conn().execute("SELECT * FROM chat_turns WHERE id = ?", (turn_id,)).fetchone())

    def chat_turns(self, owner: str, pet_id: str | None = None) -> list[ChatTurn]:
        """`owner`'s kept chat turns in the order they were said; with `pet_id`, that pet's only."""
        sql, args = "SELECT * FROM chat_turns WHERE owner = ?", [_check_owner(owner)]
        if pet_id is not None:
            sql, args = sql + " AND pet_id = ?", args + [pet_id]
        return [self._row(ChatTurn, row) for row in self._conn().execute(sql + " ORDER BY id", args)]

    # generated images and feedback

    _IMAGES_OF_OWNER = ("SELECT images.*, feedback.liked FROM images JOIN pets ON pets.id = images.pet_id "
                        "LEFT JOIN feedback ON feedback.image_id = images.id AND feedback.owner = pets.owner "
                        "WHERE pets.owner = ?")

    def add_image(self, owner: str, pet_id: str, path: str | Path, prompt: str, seed: int | None = None) -> GeneratedImage:
        """Record a picture drawn for `owner`'s pet (save it under the pet's `images` folder)."""
        with self._write() as conn:
            self.pet(owner, pet_id)
            self._touch(conn, owner)
            image_id = conn.execute("INSERT INTO images (pet_id, path, prompt, seed, created_at) VALUES (?, ?, ?, ?, ?)",
                                    (pet_id, self._to_db(path), prompt, seed, utc_now())).lastrowid
        return self.image(owner, image_id)

    def image(self, owner: str, image_id: int) -> GeneratedImage:
        """`owner`'s image `image_id`; NotFound if there is none (or it is someone else's)."""
        row = self._conn().execute(self._IMAGES_OF_OWNER + " AND images.id = ?",
                                   (_check_owner(owner), image_id)).fetchone()
        if row is None:
            raise NotFound("No such image.")
        return self._row(GeneratedImage, row)

    def images(self, owner: str, pet_id: str) -> list[GeneratedImage]:
        """The pictures drawn for `owner`'s pet, oldest first, each with its rating."""
        rows = self._conn().execute(self._IMAGES_OF_OWNER + " AND images.pet_id = ? ORDER BY images.id",
                                    (_check_owner(owner), pet_id))
        return [self._row(GeneratedImage, row) for row in rows]

    def rate_image(self, owner: str, image_id: int, liked: bool | None) -> GeneratedImage:
        """Thumbs up (True) or down (False) for an image; a new rating replaces the old, None clears it."""
        with self._write() as conn:
            self.image(owner, image_id)
            self._touch(conn, owner)
            if liked is None:
                conn.execute("DELETE FROM feedback WHERE image_id = ? AND owner = ?", (image_id, owner))
            else:
                conn.execute("INSERT INTO feedback (image_id, owner, liked, created_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (image_id, owner) DO UPDATE SET liked = excluded.liked, "
                             "created_at = excluded.created_at", (image_id, owner, int(liked), utc_now()))
        return self.image(owner, image_id)

    def liked_images(self, owner: str, pet_id: str) -> list[GeneratedImage]:
        """The pet's pictures its owner gave a thumbs up: candidates for its training set."""
        return [image for image in self.images(owner, pet_id) if image.liked]


def _put_back(entry: Path, folder: Path) -> None:
    """Undo `Store._delete`'s move of `folder` into the trash, if it happened."""
    if entry.exists() and not folder.exists():
        os.rename(entry, folder)


def _sync_folders(*folders: Path) -> None:
    """fsync folders, so that a rename in them survives a power cut (where the system allows it)."""
    for folder in folders:
        try:
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def _statements(script: str):
    """The SQL statements of a migration script, one at a time (executescript would commit the
    migration's transaction half way)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""
    if statement.strip():
        yield statement.strip()
