"""Training checkpoints: written atomically, the last N kept, enough to resume bit for bit.

    <output>/checkpoints/step-000100/
        trainable.safetensors   the weights being trained (LoRA, or the whole UNet)
        optimizer.pt  lr_scheduler.pt  [grad_scaler.pt]
        state.json              step, the config fingerprint, the loss history
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"


@dataclass
class Resumed:
    step: int
    losses: list[float]
    path: Path


class Checkpoints:
    def __init__(self, folder: Path, keep: int):
        self.folder = Path(folder)
        self.keep = keep

    def latest(self) -> Path | None:
        """The newest complete checkpoint; a half-written one never has a final name."""
        done = sorted(p for p in self.folder.glob("step-*") if (p / STATE_FILE).is_file())
        return done[-1] if done else None

    def save(self, step: int, fingerprint: str, losses: list[float], trainable: dict[str, torch.Tensor],
             optimizer, lr_scheduler, grad_scaler=None) -> Path:
        """Write the checkpoint of `step` under a temporary name, then rename it into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"step-{step:06d}"
        staging = self.folder / f".partial-step-{step:06d}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            save_file({name: t.detach().cpu().contiguous() for name, t in trainable.items()},
                      staging / "trainable.safetensors")
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(lr_scheduler.state_dict(), staging / "lr_scheduler.pt")
            if grad_scaler is not None:
                torch.save(grad_scaler.state_dict(), staging / "grad_scaler.pt")
            (staging / STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint, "losses": losses}))
            _fsync_tree(staging)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        older = sorted(p for p in self.folder.glob("step-*") if p != target)
        for old in older[: max(0, len(older) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, path: Path, fingerprint: str, parameters: dict[str, torch.nn.Parameter],
             optimizer, lr_scheduler, grad_scaler=None) -> Resumed:
        """Restore weights and optimizer state from `path` in place; refuse another config's checkpoint."""
        state = json.loads((path / STATE_FILE).read_text())
        if state["fingerprint"] != fingerprint:
            raise ValueError(
                f"The checkpoint {path} was made with other settings, photos, base model or starting model; "
                "resuming it would mix two runs. Resume with the first run's settings, or delete the folder to "
                "start over."
            )
        weights = load_file(path / "trainable.safetensors")
        if weights.keys() != parameters.keys():
            raise ValueError(f"The checkpoint {path} does not match this model's trainable weights.")
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(weights[name])
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        lr_scheduler.load_state_dict(torch.load(path / "lr_scheduler.pt", weights_only=True))
        if grad_scaler is not None and (path / "grad_scaler.pt").is_file():
            grad_scaler.load_state_dict(torch.load(path / "grad_scaler.pt", weights_only=True))
        return Resumed(step=state["step"], losses=state["losses"], path=path)


def _fsync_tree(folder: Path) -> None:
    """Make the files durable before the rename publishes them (a power cut keeps old or new)."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
