"""EvaluationConfig: what an evaluation run draws and how it compares."""

from __future__ import annotations

from dataclasses import dataclass

from petdream.evaluation.prompts import load_prompts
from petdream.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, SCHEDULERS


@dataclass(frozen=True)
class EvaluationConfig:
    prompts: tuple[str, ...] | None = None  # templates, "a {0} {1} in the snow"; None: the packaged set
    images_per_prompt: int = 4  # as DreamBench; image i of every prompt is drawn with seed i
    steps: int = DEFAULT_STEPS  # sampling steps
    guidance_scale: float = DEFAULT_GUIDANCE
    scheduler: str = "dpmpp"
    baseline: bool = True  # also draw every prompt and seed with the base model, to show what training gained
    ssim_size: int = 256  # px; SSIM compares generated images and photos at this one size

    def __post_init__(self):
        if self.images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be at least 1, got {self.images_per_prompt}.")
        if not 1 <= self.steps <= 200:
            raise ValueError(f"steps must be between 1 and 200, got {self.steps}.")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}.")
        if self.ssim_size < 11:
            raise ValueError(f"ssim_size must be at least 11 px (SSIM's window), got {self.ssim_size}.")
        if self.prompts is not None and not self.prompts:
            raise ValueError("The prompt list is empty; give at least one, or None for the default set.")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.images_per_prompt))

    def templates(self) -> list[str]:
        return list(self.prompts) if self.prompts else load_prompts()

    def to_dict(self) -> dict:
        return {
            "images_per_prompt": self.images_per_prompt,
            "seeds": self.seeds,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "scheduler": self.scheduler,
            "ssim_size": self.ssim_size,
        }
