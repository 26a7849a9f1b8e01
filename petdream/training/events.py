"""The events a training run emits, in order: Note* (a resumed run's with one Resumed among them),
(Progress | Sample | CheckpointSaved)*, then exactly one of Finished, Failed or Cancelled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

LIVE_SAMPLES_DIR = "live-samples"  # in the output folder: the samples drawn as it learns (never pushed)


@dataclass(frozen=True)
class Note:
    """Something the person should know: a fallback taken, a wait, a cache reused."""

    text: str


@dataclass(frozen=True)
class Resumed:
    """The run goes on from a checkpoint, `step` steps in: their losses (one a step), for a chart of the whole run."""

    step: int
    losses: list[float]


@dataclass(frozen=True)
class Progress:
    step: int  # optimizer steps done
    total_steps: int
    loss: float  # this step's training loss (instance + weighted prior)
    learning_rate: float
    steps_per_second: float  # over this session's steps so far
    eta_seconds: float


@dataclass(frozen=True)
class Sample:
    step: int
    images: list[Image.Image]  # one per prompt, fixed seeds, so samples are comparable over time
    prompts: list[str]

    def save(self, folder: Path) -> list[Path]:
        """Write the images as `folder`/step00100-0.png, step00100-1.png, ... (one a prompt); their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"step{self.step:05d}-{i}.png" for i in range(len(self.images))]
        for image, path in zip(self.images, paths):
            image.save(path)
        return paths


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: Path


@dataclass(frozen=True)
class Finished:
    model: "PetModel"  # noqa: F821 (petdream.petmodel.PetModel)
    seconds: float
    final_loss: float


@dataclass(frozen=True)
class Failed:
    reason: str  # written for the person: what happened and what to do
    checkpoint: Path | None  # the last checkpoint kept, to resume from
    resumable: bool = True  # False where resuming would only repeat the failure (a diverged loss)


@dataclass(frozen=True)
class Cancelled:
    step: int
    checkpoint: Path | None


Event = Note | Resumed | Progress | Sample | CheckpointSaved | Finished | Failed | Cancelled
