"""PetDreamService: what the app does for a person, with no Gradio in it.

The UI (and gradio_client scripts through it) call these methods with an `owner` ("hf:<user>" or
"session:<id>", see store.py); every method reads and writes only that owner's pets. Models load
on first use, so the page is up before any of them: the profile's pipeline with the first
picture or training, the chat model with the first message, the metric models with the first
evaluation.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from petdream.models import Profile, resolve_profile
from petdream.models.profiles import ensure_models
from petdream.petmodel import Pet, PetModel
from petdream.photos import IntakeReport, intake
from petdream.settings import Settings
from petdream.store import NotFound, PetRecord, Store
from petdream.training import (LIVE_SAMPLES_DIR, Cancelled, CheckpointSaved, DreamBoothTrainer, Failed, Finished,
                               Note, Progress, Resumed, Sample, TrainingConfig, new_pet)
from petdream.training.trigger import pet_problems
from petdream.training.queue import TrainingJob, TrainingQueue

logger = logging.getLogger(__name__)

FURTHER_TRAINING_STEPS = 100  # a short run from the current weights with the liked pictures added
BUSY = "A picture, an evaluation or a Hub transfer of yours is under way"  # why a delete or a move waits
FORGET_EVERY_S = 24 * 3600  # how often idle browser sessions are looked for again (a Space may run for weeks)


class NotReadyToTrain(ValueError):
    """Raised by `start_training` with everything that keeps it from starting (`problems`, each what to do):
    all at once, not one per click of Train."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        counted = {2: "Two", 3: "Three", 4: "Four"}.get(len(problems), str(len(problems)))
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{counted} things to fix before training:\n" + "\n".join(f"• {p}" for p in problems))


def pet_labels(pets: list[PetRecord]) -> dict[str, str]:
    """What each of one owner's `pets` is called on screen, by pet id: its name, or, where pets share a name,
    the name with a number and when it was made, "Bruno #2 (27 Nov 08:44 UTC)", numbered among all of the
    owner's pets, so every list and every message names a pet alike: picking one to delete must not be a guess."""
    names = Counter(pet.name for pet in pets)
    seen: Counter = Counter()
    labels = {}
    for pet in sorted(pets, key=lambda pet: pet.created_at):
        seen[pet.name] += 1
        labels[pet.id] = pet.name
        if names[pet.name] > 1:
            labels[pet.id] += f" #{seen[pet.name]} ({datetime.fromisoformat(pet.created_at):%d %b %H:%M} UTC)"
    return labels


@dataclass(frozen=True)
class ChatPicture:
    """A picture drawn for a chat turn, as stored (its id is what a rating refers to)."""

    image_id: int
    path: Path
    prompt: str
    seed: int


class OwnerLocks:
    """Keeps deleting and moving a person's pets apart from work on their files.

    Work (a picture, an evaluation, a Hub push or pull, putting a training in line) waits while a
    change (a delete, a move to an account) is made; a change is refused while work is under way.
    """

    def __init__(self):
        self._guard = threading.Lock()
        self._changing: dict[str, threading.Lock] = {}  # one per owner seen by this process (a few bytes each)
        self._working: Counter = Counter()

    def _change_lock(self, owner: str) -> threading.Lock:
        with self._guard:
            return self._changing.setdefault(owner, threading.Lock())

    @contextmanager
    def work(self, owner: str):
        with self._change_lock(owner):  # not in the middle of a delete or a move
            with self._guard:
                self._working[owner] += 1
        try:
            yield
        finally:
            with self._guard:
                self._working[owner] -= 1
                if not self._working[owner]:
                    del self._working[owner]

    @contextmanager
    def change(self, owner: str, refusal: str):
        """Held while `owner`'s files go away or move; ValueError(refusal) while work of theirs is under way."""
        with self._change_lock(owner):
            with self._guard:
                if self._working[owner]:
                    raise ValueError(refusal)
            yield


class PetDreamService:
    def __init__(self, settings: Settings, profile: Profile | None = None, *, host_only: bool = True):
        """host_only: whether everyone using the app is the machine's owner (see
        `ui.session.only_the_host_can_reach`); never so on a Space, a share link or a public address.
        Only then may a Hub request without a person's own token use this machine's (HF_TOKEN or a
        saved login), and only otherwise are idle browser sessions forgotten (strangers' data)."""
        self.settings = settings
        self.host_only = host_only
        self.data_dir = settings.ensure_data_dir()
        self.profile = profile or resolve_profile(settings, build_models=False)  # its models built on first use
        self._models_ready = False
        self.store = Store(self.data_dir)
        interrupted = self.store.mark_interrupted_runs()  # a run left "running" died with the last process
        if interrupted:
            logger.info("%d training run(s) were cut off by a restart; they can be resumed", interrupted)
        self.trainings = TrainingQueue()
        self.owners = OwnerLocks()
        self._lazy_lock = threading.RLock()
        self._generator = self._companion = self._evaluator = None
        self.has_replied = False  # the first reply loads the chat model: up to a minute on a CPU
        if settings.forget_sessions_after_days and not host_only:
            self.forget_idle_sessions()
            threading.Thread(target=self._forget_idle_sessions_daily, name="petdream-forget", daemon=True).start()

    def forget_idle_sessions(self) -> int:
        """Delete what browsers without a login left unused for `forget_sessions_after_days`; how many."""
        days = self.settings.forget_sessions_after_days
        forgotten = self.store.forget_idle_sessions(timedelta(days=days))
        if forgotten:
            logger.info("deleted the pets and chats of %d browser session(s) unused for %d days", forgotten, days)
        return forgotten

    def _forget_idle_sessions_daily(self) -> None:
        while True:
            time.sleep(FORGET_EVERY_S)
            try:
                self.forget_idle_sessions()
            except Exception:  # a closed store (the app shut down) or a locked database: try again tomorrow
                logger.exception("could not look for idle browser sessions")

    # -- models, loaded on first use ----------------------------------------------------------

    def _ready(self) -> Profile:
        """The profile with its models built (the tiny ones take ~10 s, once per data dir)."""
        with self._lazy_lock:
            if not self._models_ready:
                ensure_models(self.profile, self.data_dir)
                self._models_ready = True
            return self.profile

    @property
    def generator(self):
        from petdream.generate import Generator

        profile = self._ready()
        with self._lazy_lock:
            if self._generator is None:
                self._generator = Generator(profile, device=self.settings.device, dtype=self.settings.dtype)
            return self._generator

    @property
    def companion(self):
        from petdream.companion import Companion, backend_for

        profile = self._ready()
        with self._lazy_lock:
            if self._companion is None:
                self._companion = Companion(backend_for(self.settings, profile.name))
            return self._companion

    @property
    def evaluator(self):
        from petdream.evaluation import Evaluator

        generator = self.generator
        with self._lazy_lock:
            if self._evaluator is None:
                self._evaluator = Evaluator(self._ready(), generator=generator)
            return self._evaluator

    # -- pets ------------------------------------------------------------------------------------

    def check_photos(self, paths: list[str]) -> IntakeReport:
        return intake(paths, resolution=self.profile.resolution)

    def pets(self, owner: str, trained_only: bool = False) -> list[PetRecord]:
        return [p for p in self.store.pets(owner) if p.model_dir is not None or not trained_only]

    def pet_label(self, owner: str, pet_id: str) -> str:
        """What `owner`'s pet is called on screen (see `pet_labels`): its name, unless another of theirs shares it."""
        return pet_labels(self.store.pets(owner))[pet_id]

    def delete_pet(self, owner: str, pet_id: str) -> str:
        """Delete the pet with its photos, models, pictures, trainings and chats about it; returns its
        name. Refused while one of its trainings waits or runs: cancel that first."""
        record = self.store.pet(owner, pet_id)
        with self.owners.change(owner, f"{BUSY}: delete {record.name} when it is done."):
            if any(self.training_is_live(owner, run.id) for run in self.store.runs(owner, pet_id)):
                raise ValueError(f"{record.name} is in training now: cancel the training, then delete.")
            self.store.delete_pet(owner, pet_id)
        return record.name

    def move_to_account(self, session: str, account: str) -> list[str]:
        """On signing in: the pets made in this browser (`session`) become the `account`'s, with all that
        belongs to them; returns their names. Refused (ValueError) while a training or other work of the
        session is under way: its files are in use."""
        with self.owners.change(session, f"{BUSY}: move your pets when it is done."):
            if self.live_training(session) is not None:
                raise ValueError("A training is waiting or running: your pets can move to your account "
                                 "once it ends.")
            return [pet.name for pet in self.store.move_pets(session, account)]

    def forget_owner(self, owner: str) -> None:
        """Delete everything of `owner`: pets, photos, models, pictures, ratings and chats. Refused while
        one of their trainings waits or runs."""
        with self.owners.change(owner, f"{BUSY}: delete your data when it is done."):
            if self.live_training(owner) is not None:
                raise ValueError("A training of yours is waiting or running: cancel it, then delete your data.")
            self.store.delete_owner(owner)

    def pet_model(self, owner: str, pet_id: str) -> PetModel:
        record = self.store.pet(owner, pet_id)
        if record.model_dir is None:
            raise NotFound(f"{record.name} has no trained model yet: train it on the My pet tab first.")
        return PetModel.load(record.model_dir)

    # -- training --------------------------------------------------------------------------------

    def start_training(self, owner: str, name: str, class_noun: str, photo_paths: list[str], preset: str,
                       **overrides) -> TrainingJob:
        """Check the photos, create the pet and queue its training; raises NotReadyToTrain saying what to fix."""
        with self.owners.work(owner):
            report = intake(photo_paths, resolution=self.profile.resolution)
            problems = [report.shortfall()] if not report.enough else []
            problems += pet_problems(name, class_noun)
            try:
                config = TrainingConfig.preset(preset, **overrides)
            except ValueError as error:
                problems.append(str(error))
            if problems:
                raise NotReadyToTrain(problems)
            pet, note = new_pet(name, class_noun)
            record = self.store.add_pet(owner, pet.name, pet.class_noun, pet.trigger)
            report.save(record.photos_dir)  # the normalized crops: a resume after a restart trains on the same
            run = self.store.add_run(owner, record.id, config.to_dict())
            job = self._queue(owner, record, run.id, config, resume=False)
        job.message = note or ""
        return job

    def train_further(self, owner: str, pet_id: str) -> TrainingJob:
        """Train on from the pet's current weights, on its photos plus the pictures the person liked."""
        with self.owners.work(owner):
            record = self.store.pet(owner, pet_id)
            model = self.pet_model(owner, pet_id)
            liked = self.store.liked_images(owner, pet_id)
            if not liked:
                raise ValueError(f"No liked pictures of {self.pet_label(owner, pet_id)} yet: rate pictures in the chat "
                                 "with a thumbs up.")
            config = TrainingConfig.from_dict({**model.training, "steps": FURTHER_TRAINING_STEPS})
            run = self.store.add_run(owner, pet_id, config.to_dict(), init_model_dir=model.path)
            photos = self.store.paths(owner, pet_id).run_photos(run.id)
            shutil.copytree(record.photos_dir, photos)
            for image in liked:
                shutil.copyfile(image.path, photos / f"liked-{image.id}.png")
            return self._queue(owner, record, run.id, config, resume=False, init_model=model)

    def resume_training(self, owner: str, run_id: str) -> TrainingJob:
        """Continue a run that a restart, a cancel or a failure stopped, from its last checkpoint."""
        with self.owners.work(owner):
            run = self.store.run(owner, run_id)
            record = self.store.pet(owner, run.pet_id)
            cannot = f"The training of {self.pet_label(owner, record.id)} cannot be resumed now"
            if self.training_is_live(owner, run_id):  # already back in line, or running
                raise ValueError(f"{cannot}: {self.training(owner, run_id).summary(self.trainings.position(run_id))}")
            if not run.resumable:
                raise ValueError(f"{cannot}: {run.error or run.status}")
            self.store.update_run(owner, run_id, status="queued")
            init = PetModel.load(run.init_model_dir) if run.init_model_dir else None
            return self._queue(owner, record, run_id, run.training_config(), resume=True, init_model=init)

    def training(self, owner: str, run_id: str) -> TrainingJob | None:
        """The live state of `owner`'s run (None for anyone else's, or once the process restarted)."""
        job = self.trainings.job(run_id)
        return job if job is not None and job.owner == owner else None

    def training_is_live(self, owner: str, run_id: str) -> bool:
        """Whether `owner`'s run waits or runs in this process."""
        job = self.training(owner, run_id)
        return job is not None and not job.done

    def live_training(self, owner: str) -> TrainingJob | None:
        """`owner`'s newest training that is waiting or running in this process, if any."""
        for run in sorted(self.store.runs(owner), key=lambda run: run.created_at, reverse=True):
            if self.training_is_live(owner, run.id):
                return self.training(owner, run.id)
        return None

    def latest_training(self, owner: str) -> TrainingJob | None:
        """`owner`'s training known to this process that last started or ended (a resumed one counts from then),
        waiting, running or ended, if any."""
        def last_moment(run) -> str:  # ISO 8601 times, all UTC: they sort as text
            return max(run.created_at, run.started_at or "", run.finished_at or "")

        for run in sorted(self.store.runs(owner), key=last_moment, reverse=True):
            if (job := self.training(owner, run.id)) is not None:
                return job
        return None

    def cancel_training(self, owner: str, run_id: str) -> bool:
        job = self.training(owner, run_id)
        if job is None or not self.trainings.cancel(run_id):
            return False
        if job.status == "cancelled":  # taken out of the line before it started: the worker never sees it
            self.store.update_run(owner, run_id, status="cancelled")
        return True

    def _queue(self, owner: str, record: PetRecord, run_id: str, config: TrainingConfig, resume: bool,
               init_model: PetModel | None = None) -> TrainingJob:
        # Named as the lists name it: with two Brunos, the status line and Teach's messages say which one trains.
        job = TrainingJob(run_id=run_id, owner=owner, pet_name=self.pet_label(owner, record.id),
                          total_steps=config.steps)
        self.trainings.submit(job, lambda job: self._train(job, record, config, resume, init_model))
        return job

    def _train(self, job: TrainingJob, record: PetRecord, config: TrainingConfig, resume: bool,
               init_model: PetModel | None) -> None:
        """The worker's side of a training (see `_run_trainer`). A crash (a bug) is the queue's to report;
        the store must not keep the run "running" for ever, or it would never be offered for resuming."""
        try:
            self._run_trainer(job, record, config, resume, init_model)
        except Exception as error:
            try:
                status = self.store.run(job.owner, job.run_id).status
            except NotFound:  # its pet was deleted meanwhile: nothing to mark
                status = None
            if status in ("queued", "running"):
                self.store.update_run(job.owner, job.run_id, status="failed", error=f"{type(error).__name__}: {error}")
            raise

    def _run_trainer(self, job: TrainingJob, record: PetRecord, config: TrainingConfig, resume: bool,
                     init_model: PetModel | None) -> None:
        """Run the trainer, mirror its events into the job (what the page shows) and the store (what lasts)."""
        owner, store = job.owner, self.store
        photos_dir = store.paths(owner, record.id).run_photos(job.run_id)
        if not photos_dir.is_dir():  # a run on the pet's own photos (only Teach my pet's runs have a set of their own)
            photos_dir = Path(record.photos_dir)
        photos = intake(sorted(photos_dir.glob("*.png")), resolution=self.profile.resolution).accepted
        run = store.run(owner, job.run_id)
        extra = {"init_model": init_model} if init_model is not None else {}
        trainer = DreamBoothTrainer(self._ready(), photos, Pet(record.name, record.trigger, record.class_noun),
                                    run.output_dir, config, data_dir=self.data_dir, device=self.settings.device,
                                    lock_dir=self.settings.lock_dir, **extra)
        job.on_cancel = trainer.cancel
        if job.cancel_requested.is_set():
            trainer.cancel()
        job.status = "running"
        store.update_run(owner, job.run_id, status="running")
        samples_dir = run.output_dir / LIVE_SAMPLES_DIR
        for event in trainer.run(resume=resume):
            if isinstance(event, Progress):
                job.step, job.loss, job.eta_seconds = event.step, event.loss, event.eta_seconds
                job.steps_per_second = event.steps_per_second
                job.losses.append(event.loss)
            elif isinstance(event, Resumed):  # the chart shows the whole run, not from the resumed step on
                job.losses, job.resumed_from = list(event.losses), event.step
            elif isinstance(event, Sample):
                job.samples += [(str(path), f"step {event.step}: {prompt}")
                                for path, prompt in zip(event.save(samples_dir), event.prompts)]
            elif isinstance(event, Note):  # a fallback or a wait: shown until the next, and kept in the log
                job.message = event.text
                logger.info("training run %s: %s", job.run_id, event.text)
            elif isinstance(event, CheckpointSaved):
                job.message = f"Checkpoint saved at step {event.step}."
                store.update_run(owner, job.run_id, metrics={"step": event.step})
            elif isinstance(event, Finished):
                store.finish_run(owner, job.run_id, event.model.path, metrics={
                    "steps": event.model.training.get("steps_done"), "seconds": round(event.seconds, 1),
                    "final_loss": event.final_loss})
                job.message, job.status = f"{job.pet_name} is ready: chat with them on the Chat tab.", "finished"
            elif isinstance(event, Failed):
                store.update_run(owner, job.run_id, status="failed", error=event.reason,
                                 metrics={"resumable": event.resumable})
                job.message, job.status = event.reason, "failed"
            elif isinstance(event, Cancelled):
                store.update_run(owner, job.run_id, status="cancelled", metrics={"step": event.step})
                job.message = (f"Cancelled at step {event.step}: resume it under Unfinished trainings." if event.checkpoint
                               else "Cancelled before its first step: resume it under Unfinished trainings to start it.")
                job.status = "cancelled"

    # -- chat and pictures -------------------------------------------------------------------------

    def chat(self, owner: str, pet_id: str | None, message: str, *, person=None, history: list[dict] | None = None,
             on_token: Callable[[str], None] | None = None, on_drawing: Callable[[], None] | None = None):
        """The companion's Turn for `message`, and a picture of the pet (None on a crisis reply).
        on_token gets the reply's text as it is written; on_drawing is called as the picture starts.
        Without a pet (`pet_id` None), or with one that cannot be loaded (deleted in another tab, say), a
        crisis is still answered, with its helplines, and nothing is kept (there is no pet to keep it under);
        any other message raises: ValueError (choose a pet first) or why the pet cannot be loaded."""
        from petdream.companion import Person, answer_without_pet

        person = person or Person()
        try:
            model = self.pet_model(owner, pet_id) if pet_id is not None else None
        except Exception:
            if (crisis := answer_without_pet(message, person)) is None:
                raise
            return crisis, None  # help does not wait on a pet
        if model is None:
            if (crisis := answer_without_pet(message, person)) is None:
                raise ValueError("Choose a pet first (train one on the My pet tab).")
            return crisis, None
        turn = self.companion.respond(message, pet=model.pet, person=person, history=history,
                                      on_token=on_token)
        self.has_replied = True
        self.store.add_chat_turn(owner, "user", message, pet_id=pet_id, mood=turn.mood)
        picture = None
        if turn.draw:
            if on_drawing is not None:
                on_drawing()
            picture = self.draw(owner, pet_id, turn.image_prompt, turn.negative_prompt)
        self.store.add_chat_turn(owner, "assistant", turn.reply, pet_id=pet_id, mood=turn.mood,
                                 image_path=picture.path if picture else None, crisis=turn.safety.is_crisis)
        return turn, picture

    def draw(self, owner: str, pet_id: str, prompt: str, negative_prompt: str | None = None,
             seed: int | None = None, in_chat: bool = False) -> ChatPicture:
        """One picture of the pet, kept in its images folder and recorded for rating; `in_chat`: drawn
        into the chat on its own (New picture), so a kept conversation keeps it too."""
        with self.owners.work(owner):
            model = self.pet_model(owner, pet_id)
            result = self.generator.generate(prompt, pet=model, negative_prompt=negative_prompt, seed=seed)
            folder = self.store.paths(owner, pet_id).images
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{uuid.uuid4().hex}.png"
            result.images[0].save(path)
            try:
                image = self.store.add_image(owner, pet_id, path, prompt, result.seed)
            except Exception:  # no record, no file: nothing would ever delete it
                path.unlink(missing_ok=True)
                raise
        if in_chat:
            self.store.add_chat_turn(owner, "assistant", "", pet_id=pet_id, image_path=path)
        return ChatPicture(image.id, path, prompt, result.seed)

    def rate(self, owner: str, image_id: int, liked: bool | None) -> None:
        self.store.rate_image(owner, image_id, liked)

    # -- the Hub ---------------------------------------------------------------------------------

    def push_to_hub(self, owner: str, pet_id: str, token: str | None, oauth_scope: str | None = None,
                    repo: str | None = None, public: bool = False):
        """Push `owner`'s pet to their Hub account (private unless `public`); returns PushResult.

        token: the person's own (a Space login). None uses this machine's HF_TOKEN or saved login
        where `host_only` allows it."""
        from petdream.hub import HubError

        with self.owners.work(owner):
            record = self.store.pet(owner, pet_id)
            if not token and not self.host_only:
                raise HubError(
                    "This PetDream is open to other people (a Space, a share link or a public address), so it "
                    "never pushes with the Hugging Face token of the machine it runs on. Push from PetDream on "
                    "your own computer, or sign in with Hugging Face where the Space offers it.")
            hub = self._hub(token, oauth_scope)
            result = hub.push(self.pet_model(owner, pet_id), repo or None, public=public)
            self.store.update_pet(owner, pet_id, hub_repo=result.repo_id)
        logger.info("pushed %s's pet to %s", record.name, result.repo_id)
        return result

    def _hub(self, token: str | None, oauth_scope: str | None = None):
        from petdream.hub import PetHub

        if token or self.host_only:
            return PetHub.from_settings(self.settings, token=token, oauth_scope=oauth_scope)
        return PetHub(None, endpoint=self.settings.hub_endpoint)  # anonymous, whatever this machine has saved

    def load_from_hub(self, owner: str, repo_id: str, token: str | None = None, *, name: str | None = None,
                      class_noun: str | None = None) -> PetRecord:
        """A pet model pulled from a Hub repo (PetDream's or any diffusers DreamBooth LoRA) as a new pet.
        Without a token of the person's own and `host_only`, anonymously: public repos only."""
        with self.owners.work(owner):
            hub = self._hub(token)
            staging = self.store.paths(owner, "incoming").runs / uuid.uuid4().hex
            model = hub.pull(repo_id.strip(), staging, name=name or None, class_noun=class_noun or None)
            if model.base_model_id != self.profile.base_model_id:
                shutil.rmtree(staging, ignore_errors=True)
                raise ValueError(f"{repo_id} was trained on {model.base_model_id}, but this app runs "
                                 f"{self.profile.base_model_id}; it cannot draw with it.")
            record = self.store.add_pet(owner, model.pet.name, model.pet.class_noun, model.pet.trigger)
            target = self.store.paths(owner, record.id).runs / "from-hub"
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
            return self.store.update_pet(owner, record.id, model_dir=target, hub_repo=repo_id.strip())

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, owner: str, pet_id: str, config) -> Iterator:
        """The evaluator's events (see petdream.evaluation.events) for `owner`'s pet."""
        with self.owners.work(owner):
            record = self.store.pet(owner, pet_id)
            model = self.pet_model(owner, pet_id)
            photos = intake(sorted(Path(record.photos_dir).glob("*.png")), resolution=self.profile.resolution,
                            min_photos=1).accepted
            yield from self.evaluator.run(model, photos, config)

    def save_report(self, owner: str, pet_id: str, report) -> dict[str, Path]:
        """Write an evaluation report into the pet's folder; return its files (json, markdown, grid, chart)."""
        with self.owners.work(owner):
            self.store.pet(owner, pet_id)  # NotFound once deleted: its folder is not made again
            return report.save(self.store.paths(owner, pet_id).root / "evaluation" / uuid.uuid4().hex[:8])

    def last_report(self, owner: str, pet_id: str) -> dict | None:
        """The newest evaluation report saved for `owner`'s pet: its files as `save_report` returns them,
        plus "saved" (a UTC datetime) and "current" (whether it is of the pet's model as it is now, not of one
        it was trained further from). None if the pet has none."""
        from petdream.evaluation.report import report_files

        model = self.pet_model(owner, pet_id)
        reports = list((self.store.paths(owner, pet_id).root / "evaluation").glob("*/report.json"))
        if not reports:
            return None
        paths = report_files(max(reports, key=lambda path: path.stat().st_mtime).parent)
        if not all(path.is_file() for path in paths.values()):
            return None
        evaluated = json.loads(paths["json"].read_text()).get("model_created_at")
        saved = datetime.fromtimestamp(paths["json"].stat().st_mtime, timezone.utc)
        return paths | {"saved": saved, "current": evaluated == model.created_at}
