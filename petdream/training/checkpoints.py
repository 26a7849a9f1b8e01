"""Training checkpoints: written atomically, the last N kept, enough to resume bit for bit.

    <output>/checkpoints/step-000100/
        trainable.safetensors   the weights being trained (LoRA, or the whole UNet)
        optimizer.pt  lr_scheduler.pt  [grad_scaler.pt]
        state.json              step, the run's fingerprint and what it hashes, the loss history

A checkpoint is written on a background thread while training goes on: `paper`'s two 4.4 GB
checkpoints held the GPU idle for 13 s on an H200. `save` first copies the state to host memory,
so what reaches the disk is that step's state, whatever the next steps do; one write at a time,
so host memory holds at most one copy.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import pickle
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
# Free space (bytes) below which a failed write is taken for a full disk: torch.save's error names no cause.
NO_ROOM = 1 << 20


class CheckpointMismatch(ValueError):
    """A checkpoint made by another run (other settings, photos or models): none of its kind can resume."""


class CheckpointDamaged(ValueError):
    """A checkpoint whose files cannot be read: cut short, overwritten or missing (an older one may serve)."""


@dataclass
class Restored:
    step: int
    losses: list[float]
    path: Path
    loop_state: dict  # what the training loop asked to keep beside the weights ({} in older checkpoints)


@dataclass
class Written:
    step: int
    path: Path


@dataclass
class _Write(Written):
    thread: threading.Thread | None = None
    error: BaseException | None = None


class Checkpoints:
    def __init__(self, folder: Path, keep: int):
        self.folder = Path(folder)
        self.keep = keep
        self._writing: _Write | None = None

    def path(self, step: int) -> Path:
        """Where the checkpoint of `step` is (once written)."""
        return self.folder / f"step-{step:06d}"

    @staticmethod
    def step_of(path: Path) -> int:
        """The step a checkpoint folder (see `path`) holds."""
        return int(path.name.removeprefix("step-"))

    def latest(self) -> Path | None:
        """The newest complete checkpoint; a half-written one never has a final name."""
        done = self.complete()
        return done[-1] if done else None

    def complete(self) -> list[Path]:
        """Every complete checkpoint, oldest first."""
        return sorted(p for p in self.folder.glob("step-*") if (p / STATE_FILE).is_file())

    def set_aside(self, path: Path) -> Path:
        """Rename a checkpoint that cannot be read out of the way (`latest` no longer sees it); its new path."""
        aside = path.with_name(f"unreadable-{path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        return aside

    def save(self, step: int, fingerprint: str, identity: dict, losses: list[float], trainable: dict[str, torch.Tensor],
             optimizer, lr_scheduler, grad_scaler=None, loop_state: dict | None = None) -> None:
        """Copy the state of `step` to host memory now and write it in the background; `written()` or
        `wait()` tells when it is on disk. An earlier write still under way is waited for first.
        identity: what `fingerprint` hashes, readable (JSON), to say what differs when another run's
        settings try to resume it. `loop_state`: JSON the training loop needs back on resume."""
        self.wait()
        # The weights and the optimizer's state_dict are live tensors: copied here. The weights are copied
        # row-major, as safetensors stores them (a GPU's channels_last convolutions would otherwise need a
        # second host copy); the optimizer's state keeps its layout, which must match its parameters'.
        state = _to_host({"trainable.safetensors": dict(trainable)}, memory_format=torch.contiguous_format)
        state |= _to_host({
            "optimizer.pt": optimizer.state_dict(),
            "lr_scheduler.pt": lr_scheduler.state_dict(),
            **({"grad_scaler.pt": grad_scaler.state_dict()} if grad_scaler is not None else {}),
            STATE_FILE: {"step": step, "fingerprint": fingerprint, "identity": identity, "losses": losses,
                         "loop_state": loop_state or {}},
        })
        self._writing = _Write(step, self.path(step))
        self._writing.thread = threading.Thread(target=self._write, args=(self._writing, state),
                                                name=f"checkpoint-{step}")
        self._writing.thread.start()

    def delete_all(self) -> None:
        """Delete every checkpoint, once a write under way has ended: for a run that cannot resume."""
        if self._writing is not None:
            self._writing.thread.join()
            self._writing = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def written(self) -> Written | None:
        """The checkpoint whose write has just finished, once; None while it is under way or if none was
        started. Raises the write's error (a full disk: OSError ENOSPC)."""
        if self._writing is None or self._writing.thread.is_alive():
            return None
        return self.wait()

    def wait(self) -> Written | None:
        """Block until the write under way is on disk; then as `written()`."""
        write, self._writing = self._writing, None
        if write is None:
            return None
        write.thread.join()
        if write.error is not None:
            raise write.error
        return write

    def _write(self, write: "_Write", state: dict) -> None:
        """Write under a temporary name, then rename into place; drop the oldest beyond `keep`."""
        staging = self.folder / f".partial-{write.path.name}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            with full_disk_as_oserror(staging):
                save_file(state.pop("trainable.safetensors"), staging / "trainable.safetensors")
                (staging / STATE_FILE).write_text(json.dumps(state.pop(STATE_FILE)))
                for name, value in state.items():
                    torch.save(value, staging / name)
                fsync_tree(staging)
            shutil.rmtree(write.path, ignore_errors=True)
            os.replace(staging, write.path)
            older = sorted(p for p in self.folder.glob("step-*") if p != write.path)
            for old in older[: max(0, len(older) - (self.keep - 1))]:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as error:  # handed to the training thread by wait()
            shutil.rmtree(staging, ignore_errors=True)
            write.error = error
        finally:
            state.clear()  # the host copy (GBs for a full fine-tune) goes now, whatever holds the error

    def load(self, path: Path, fingerprint: str, identity: dict, parameters: dict[str, torch.nn.Parameter],
             optimizer, lr_scheduler, grad_scaler=None) -> Restored:
        """Restore weights and optimizer state from `path` in place. CheckpointMismatch: another run's
        checkpoint; CheckpointDamaged: files that cannot be read (the state restored may then be partial).
        Anything else (out of memory, a disk that cannot be read now) is raised as it is."""
        try:
            return self._load(path, fingerprint, identity, parameters, optimizer, lr_scheduler, grad_scaler)
        except (SafetensorError, json.JSONDecodeError, EOFError, pickle.UnpicklingError, FileNotFoundError,
                KeyError) as error:
            raise CheckpointDamaged(f"{type(error).__name__}: {error}".splitlines()[0]) from error
        except RuntimeError as error:
            if "PytorchStreamReader" not in str(error) or isinstance(error, torch.OutOfMemoryError):
                raise
            raise CheckpointDamaged(str(error).splitlines()[0]) from error  # torch.load's zip, cut short

    def _load(self, path: Path, fingerprint: str, identity: dict, parameters: dict[str, torch.nn.Parameter],
              optimizer, lr_scheduler, grad_scaler) -> Restored:
        state = json.loads((path / STATE_FILE).read_text())
        if state["fingerprint"] != fingerprint:
            differences = _differences(state["identity"], identity) if "identity" in state else []
            raise CheckpointMismatch(
                f"The checkpoint {path} was made with "
                + ("; ".join(differences) if differences else "other settings, photos, base model or starting model")
                + ". Resuming it would mix two runs. Resume with the first run's settings, or delete the folder to "
                "start over."
            )
        weights = load_file(path / "trainable.safetensors")
        if weights.keys() != parameters.keys():
            raise CheckpointMismatch(f"The checkpoint {path} does not match this model's trainable weights.")
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(weights[name])
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        lr_scheduler.load_state_dict(torch.load(path / "lr_scheduler.pt", weights_only=True))
        if grad_scaler is not None and (path / "grad_scaler.pt").is_file():
            grad_scaler.load_state_dict(torch.load(path / "grad_scaler.pt", weights_only=True))
        return Restored(step=state["step"], losses=state["losses"], path=path, loop_state=state.get("loop_state", {}))


def _differences(then: dict, now: dict) -> list[str]:
    """What a checkpoint's run was made with that this run is not, in words: "learning_rate 0.001 (now 0.0005)"."""
    said = []
    for key, value in now.items():
        before = then.get(key)
        if before == value:
            continue
        if key == "settings":
            said += [f"{name} {before.get(name)!r} (now {setting!r})" for name, setting in value.items()
                     if before.get(name) != setting]
        elif key == "photos":
            missing, new = len(set(before) - set(value)), len(set(value) - set(before))
            said.append("other photos (" + ", ".join(
                [f"{missing} of its {len(before)} are not among these"] * bool(missing) +
                [f"{new} of these {len(value)} are new"] * bool(new)) + ")")
        else:
            said.append(f"{key} {before!r} (now {value!r})")
    return said


@contextlib.contextmanager
def full_disk_as_oserror(folder: Path):
    """Re-raise a write into `folder` that failed for want of space as OSError ENOSPC, whichever library
    wrote: safetensors raises SafetensorError ("... No space left on device (os error 28)"), torch.save a
    RuntimeError that names no cause ("unexpected pos 640 vs 534"), so then the free space decides."""
    try:
        yield
    except OSError:
        raise
    except Exception as error:
        if "(os error 122)" in str(error):  # EDQUOT, as safetensors words it
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(folder)) from error
        if "(os error 28)" in str(error) or _free_bytes(folder) < NO_ROOM:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder)) from error
        raise


def _free_bytes(folder: Path) -> int:
    """Free space on the file system `folder` is (or would be) on, for this user."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _to_host(value, memory_format=torch.preserve_format):
    """A deep copy of `value` (nested dicts and lists, as state_dicts are) with every tensor in host
    memory, laid out as `memory_format` says."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True, memory_format=memory_format)
    if isinstance(value, dict):
        return {key: _to_host(item, memory_format) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(item, memory_format) for item in value)
    return copy.deepcopy(value)


def fsync_tree(folder: Path, skip: Path | None = None) -> None:
    """Make the files under `folder` (but those under `skip`) durable before a rename or a file says they are
    complete: after a power cut, the old state or the new one, never a name over half-written data."""
    for path in folder.rglob("*"):
        if path.is_file() and (skip is None or skip not in path.parents):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
