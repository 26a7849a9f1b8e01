"""Who is asking: the owner key every service call is scoped to, and files they may be shown.

A person logged in with Hugging Face (on a Space with `hf_oauth: true`) is `hf:<username>` on
every device. Without a login, pets belong to the browser: an unguessable id kept in its local
storage (`gr.BrowserState`). A gradio_client script has no browser storage; its connection's
session hash, keyed with this process's secret, stands in for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from petdream.service import pet_labels
from petdream.store import new_session_id, owner_digest, session_owner, user_owner
from petdream.ui.events import refusal

_PROCESS_SECRET = secrets.token_bytes(32)
# Copies of owners' files handed to Gradio: <temp>/petdream-served-<user>/<owner hash>/<pet id>/<uuid>/.
# A copy is needed only until Gradio has copied it into its own cache, which it does as the handler's
# output is sent: copies go an hour on (SERVED_COPY_S), and a pet's when it or all its owner's data is
# deleted. Gradio's cached copies go a day after they were made (GRADIO_CACHE_S, checked hourly: the
# app's `delete_cache`), or when the app stops.
SERVED_DIR = Path(tempfile.gettempdir()) / f"petdream-served-{getattr(os, 'getuid', lambda: 'user')()}"
SERVED_COPY_S = 3600
GRADIO_CACHE_S = 86400
# Gradio's cache, unless GRADIO_TEMP_DIR names another: private to this user (Gradio's /tmp/gradio is readable
# by all), and swept of what is GRADIO_CACHE_S old, since `delete_cache` knows only its own process's files:
# an app killed with kill -9 would leave its copies of photos and pictures there for good.
GRADIO_CACHE_DIR = Path(tempfile.gettempdir()) / f"petdream-gradio-{getattr(os, 'getuid', lambda: 'user')()}"
_next_sweep = 0.0


def browser_state_secret(data_dir: Path) -> str:
    """The key that encrypts each browser's owner key in its local storage, kept in the data dir (mode 0600).
    Gradio's default is a new key every start: after a restart no browser could read its key back, and
    every person's pets, chats and unfinished trainings would vanish from their page."""
    path = Path(data_dir) / "browser-state.secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as file:
        file.write(secret)
        file.flush()
        os.fsync(file.fileno())
    return secret


def oauth_enabled() -> bool:
    """True on a Space with Hugging Face login switched on (it sets OAUTH_CLIENT_ID)."""
    return bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))


def only_the_host_can_reach(settings, shared: bool) -> bool:
    """True where everyone using the app is the machine's owner: not a Space, no share link, and
    listening on this machine's loopback address only. Only then may it use the machine's HF token."""
    return not (os.environ.get("SPACE_ID") or shared) and settings.host in ("127.0.0.1", "localhost", "::1")


def browser_id_or_new(browser_id: str | None) -> str:
    return browser_id if browser_id and len(browser_id) >= 32 else new_session_id()


def owner_of(browser_id: str | None, request: gr.Request | None, profile: gr.OAuthProfile | None = None) -> str:
    if profile is not None:
        return user_owner(profile.username)
    if browser_id and len(browser_id) >= 32:
        return session_owner(browser_id)
    session_hash = getattr(request, "session_hash", None)
    if not session_hash:
        raise refusal("Your browser session is not known yet: reload the page.")
    return session_owner(hashlib.sha256(_PROCESS_SECRET + session_hash.encode()).hexdigest())


def browser_owner(browser_id: str | None, profile: gr.OAuthProfile | None) -> str | None:
    """While signed in: the owner key of this browser without the login, which holds what was made
    here before signing in until it moves to the account (None when not signed in or unknown)."""
    if profile is None or not browser_id or len(browser_id) < 32:
        return None
    return session_owner(browser_id)


def owners_of(browser_id: str | None, request: gr.Request | None, profile: gr.OAuthProfile | None) -> list[str]:
    """Whose things a request reaches: its owner, then, just signed in, this browser's own (`browser_owner`)."""
    return [owner for owner in (owner_of(browser_id, request, profile), browser_owner(browser_id, profile)) if owner]


def move_offer(service):
    """Handlers (offer, move) for the pets made in this browser before the person signed in: `offer`
    (on page load) shows the offer row with their names, if any; `move` gives them to the account.
    Asked, not done silently: on a shared computer they may be someone else's."""

    def browser_pets(browser_id, profile):
        browser = browser_owner(browser_id, profile)
        return service.pets(browser) if browser else []

    def offer(browser_id, profile: gr.OAuthProfile | None = None):
        pets = browser_pets(browser_id, profile)
        if not pets:  # no update at all: Gradio 6 may re-render the tree on one, losing what is being typed
            return gr.skip(), gr.skip()
        names = ", ".join(pet.name for pet in pets)
        text = f"Made in this browser before you signed in: **{names}**. Move them to your account ({profile.username})?"
        training = service.live_training(browser_owner(browser_id, profile))
        if training is not None:  # the button stays: it works once the training has ended
            text += f" {training.pet_name} is in training now (follow it on My pet): they can move once it ends."
        return gr.Row(visible=True), text

    def move(browser_id, profile: gr.OAuthProfile | None = None):
        if not browser_pets(browser_id, profile):
            return gr.Row(visible=False)
        try:
            moved = service.move_to_account(browser_owner(browser_id, profile), user_owner(profile.username))
        except ValueError as error:
            raise refusal(str(error)) from None
        gr.Info(f"Moved to your account ({profile.username}): {', '.join(moved)}.")
        return gr.Row(visible=False)

    return offer, move


def served_copy(owner: str, path: str | Path) -> str:
    """A copy of one of `owner`'s files for Gradio to serve.

    Gradio copies what a handler returns into its cache under a content-hash name, and serves
    only that cache and `allowed_paths`; the data dir itself is never served, so no URL guessed
    from a pet's folder reaches another person's files. The copy under the temp dir also lets
    Gradio take files from a data dir outside the working directory (/data on a Space).
    """
    global _next_sweep
    if time.time() >= _next_sweep:
        _next_sweep = time.time() + SERVED_COPY_S / 6
        forget_old_served_copies()
    folder = _served_root() / owner_digest(owner) / _pet_of(path) / uuid.uuid4().hex  # the file keeps its name
    folder.mkdir(parents=True)
    target = folder / Path(path).name
    shutil.copyfile(path, target)
    return str(target)


def forget_served_copies(owner: str, pet_id: str | None = None) -> None:
    """Remove the copies made for Gradio of one of `owner`'s pets (all of theirs without `pet_id`), as it
    is deleted. Other pets' copies stay: another tab may be handing one to Gradio right now."""
    folder = _served_root() / owner_digest(owner)
    shutil.rmtree(folder / pet_id if pet_id else folder, ignore_errors=True)


def forget_old_served_copies() -> None:
    """Remove the served copies made more than SERVED_COPY_S ago (Gradio has its own by then), and the
    folders left empty; and, in PetDream's own Gradio cache, what is GRADIO_CACHE_S old."""
    cutoff = time.time() - SERVED_COPY_S
    for folder in sorted(_served_root().glob("*/*/*"), reverse=True):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder)
            folder.parent.rmdir()  # only if it is empty now
            folder.parent.parent.rmdir()
        except OSError:  # not empty, or removed meanwhile
            pass
    if Path(os.environ.get("GRADIO_TEMP_DIR", "")) == GRADIO_CACHE_DIR:
        _forget_old_files(GRADIO_CACHE_DIR, time.time() - GRADIO_CACHE_S)


def in_upload_cache(path: str) -> bool:
    """Whether `path` is a file in the folder Gradio keeps uploads in (links followed)."""
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return False
    return resolved.is_relative_to(Path(get_upload_folder()).resolve()) and resolved.is_file()


def use_own_gradio_cache() -> None:
    """Give Gradio GRADIO_CACHE_DIR for its cache, unless GRADIO_TEMP_DIR is set, and sweep it of what a
    day-old or killed app left. Call before the Blocks is made: Gradio reads the folder then."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return
    os.environ["GRADIO_TEMP_DIR"] = str(_private_dir(GRADIO_CACHE_DIR))
    _forget_old_files(GRADIO_CACHE_DIR, time.time() - GRADIO_CACHE_S)


def _forget_old_files(root: Path, cutoff: float) -> None:
    """Remove the files below `root` that were made before `cutoff` (a time.time()), and folders left empty.
    Made is st_ctime, as Gradio's own sweep reads it: a copy keeps the mtime of the photo it was copied from."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            try:
                if (Path(folder) / name).lstat().st_ctime < cutoff:
                    (Path(folder) / name).unlink()
            except OSError:  # removed meanwhile
                pass
        # An old folder only if it is empty now: a new empty one may be Gradio's, about to get its file.
        with contextlib.suppress(OSError):
            if folder != str(root) and Path(folder).lstat().st_ctime < cutoff:
                os.rmdir(folder)


def _pet_of(path: str | Path) -> str:
    """The pet id in a path of the data dir's (.../people/<owner hash>/pets/<pet id>/...); "_" if none."""
    parts = Path(path).parts
    for i in range(len(parts) - 3):
        if parts[i] == "people" and parts[i + 2] == "pets":
            return parts[i + 3]
    return "_"


def _served_root() -> Path:
    return _private_dir(SERVED_DIR)


def _private_dir(folder: Path) -> Path:
    """`folder` under the temp dir, made private to this user; refused if it is a link or someone else's (on a
    shared machine another user could point it at a folder whose contents a sweep would then delete)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    if stat.S_ISLNK(status.st_mode) or (hasattr(os, "getuid") and status.st_uid != os.getuid()):
        raise RuntimeError(f"{folder} is a link or belongs to another user: remove it, then restart PetDream.")
    folder.chmod(0o700)  # one made earlier (by Gradio, or an older PetDream) may be readable by all
    return folder


def pet_choices(pets, trained_only: bool = False) -> list[tuple[str, str]]:
    """(label, pet id) for a dropdown of all `pets` of one owner, oldest first (the trained ones only with
    `trained_only`), each labelled as `pet_labels` names it: "Bruno #2 (27 Nov 08:44 UTC)" where names are shared."""
    labels = pet_labels(pets)
    return [(labels[pet.id], pet.id) for pet in sorted(pets, key=lambda pet: pet.created_at)
            if pet.model_dir is not None or not trained_only]


def pet_dropdown(choices: list[tuple[str, str]], *wanted: str | None) -> gr.Dropdown:
    """A dropdown of pet `choices` set to the first of the `wanted` pet ids that is among them, else the newest."""
    ids = [pet_id for _, pet_id in choices]
    return gr.Dropdown(choices, value=next((pet_id for pet_id in wanted if pet_id in ids), ids[-1] if ids else None))


def trained_pets(service):
    """A handler listing the asker's trained pets for a dropdown, keeping the current choice."""

    def list_pets(current, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        return pet_dropdown(pet_choices(service.pets(owner), trained_only=True), current)

    return list_pets
