"""The events an evaluation run emits, in order: Note*, Progress*, then exactly one of Finished
or Failed. Stopping early is closing the generator (or just not asking for the next event)."""

from __future__ import annotations

from dataclasses import dataclass

from petdream.training.events import Note


@dataclass(frozen=True)
class Progress:
    step: int  # images drawn and scored so far, the pet's first, then the base model's
    total_steps: int
    model: str  # "pet" or "baseline": whose images these are
    prompt: str  # the prompt just drawn
    eta_seconds: float  # to the last image; the FID at the end adds a few seconds


@dataclass(frozen=True)
class Finished:
    report: "EvaluationReport"  # noqa: F821 (petdream.evaluation.report.EvaluationReport)
    seconds: float


@dataclass(frozen=True)
class Failed:
    reason: str  # written for the person: what happened and what to do


Event = Note | Progress | Finished | Failed

__all__ = ["Event", "Failed", "Finished", "Note", "Progress"]
