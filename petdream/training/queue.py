"""TrainingQueue: trainings run one at a time in a background thread, the rest wait in line.

The app starts trainings from request handlers that must return at once; the queue runs them
in submission order on one worker thread (one GPU trains one pet at a time, as the trainer's
device lock also ensures across processes) and keeps each one's live state in a `TrainingJob`
that the UI reads whenever it likes: from the handler that started it, after a page reload,
or from another tab.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """What one queued or running training looks like right now. Updated by the worker only; readers
    in other threads see `message` set before `status` says the job is done."""

    run_id: str
    owner: str
    pet_name: str
    total_steps: int
    status: str = "queued"  # queued | running | finished | failed | cancelled
    step: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    steps_per_second: float | None = None
    losses: list[float] = field(default_factory=list)  # one a step from step 1 (a resumed run's, the earlier too)
    resumed_from: int | None = None  # the step a resumed run went on from (its checkpoint's)
    samples: list[tuple[str, str]] = field(default_factory=list)  # (image path, caption), newest last
    message: str = ""  # the latest note, or the failure's reason
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    on_cancel: Callable[[], None] | None = field(default=None, repr=False)  # set while running

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "cancelled")

    def summary(self, position: int | None) -> str:
        """One line for the person; `position` is TrainingQueue.position() (trainings ahead)."""
        if self.status == "queued":
            return (f"Waiting: {position} training{'s' * (position != 1)} ahead of {self.pet_name}'s."
                    if position else "Starting: reading the photos and loading the models...")
        if self.status == "running":
            if self.loss is None:
                return f"Preparing to train {self.pet_name}. {self.message}".strip()
            eta = f", {time_left(self.eta_seconds)}" if self.eta_seconds is not None else ""
            resumed = f" (went on from step {self.resumed_from})" if self.resumed_from else ""
            return (f"Training {self.pet_name}: step {self.step} of {self.total_steps}{resumed}, loss {self.loss:.4f}"
                    f"{eta}.")
        return {"finished": "✅ ", "failed": "❌ ", "cancelled": "⏹ "}[self.status] + self.message


def time_left(seconds: float) -> str:
    """"about 12 s left", "about 4 min left", "almost done": how long a person waits, in their units."""
    if seconds < 1:
        return "almost done"
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


class TrainingQueue:
    """Runs `work(job)` for each submitted job, one at a time, in submission order."""

    def __init__(self):
        self._waiting: deque[tuple[TrainingJob, Callable[[TrainingJob], None]]] = deque()
        self._jobs: dict[str, TrainingJob] = {}
        self._running: TrainingJob | None = None
        self._lock = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="petdream-training", daemon=True)
        self._worker.start()

    def submit(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> TrainingJob:
        with self._lock:
            self._jobs[job.run_id] = job
            self._waiting.append((job, work))
            self._lock.notify()
        return job

    def job(self, run_id: str) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get(run_id)

    def position(self, run_id: str) -> int | None:
        """0 while it runs, n when n trainings go before it, None when it is not waiting or running."""
        with self._lock:
            if self._running is not None and self._running.run_id == run_id:
                return 0
            ahead = 1 if self._running is not None else 0
            for job, _ in self._waiting:
                if job.run_id == run_id:
                    return ahead
                ahead += 1
            return None

    def cancel(self, run_id: str) -> bool:
        """Stop a running job after its current step, or take a waiting one out of the line."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.done:
                return False
            job.cancel_requested.set()
            for entry in list(self._waiting):
                if entry[0].run_id == run_id:
                    self._waiting.remove(entry)
                    job.message, job.status = "Cancelled before it started.", "cancelled"
                    return True
            if job.on_cancel is not None:
                job.on_cancel()
            return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                job, work = self._waiting.popleft()
                self._running = job
            try:
                work(job)
            except Exception as error:  # a bug must not kill the worker: the next person still trains
                logger.exception("training %s crashed", job.run_id)
                job.message, job.status = (  # the message first: a reader that sees the status sees its message
                    f"Training stopped unexpectedly ({type(error).__name__}: {error}). Its last checkpoint is kept: "
                    "resume it under Unfinished trainings."), "failed"
            finally:
                with self._lock:
                    self._running = None
