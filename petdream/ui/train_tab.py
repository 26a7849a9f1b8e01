"""My pet: upload photos, see which are usable and why not, train, follow it live, cancel, resume."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from petdream.photos import MAX_PHOTOS, NotEnoughPhotosError
from petdream.service import PetDreamService
from petdream.store import NotFound
from petdream.ui.session import owner_of, served_copy

POLL_SECONDS = 0.5


def render(service: PetDreamService, browser_id: gr.BrowserState, tiny: bool) -> dict:
    presets = ["tiny", "quick", "paper"] if tiny else ["quick", "paper"]
    with gr.Tab("My pet", id="pet"):
        gr.Markdown(
            f"Upload 3 to {MAX_PHOTOS} photos of your pet: different places, angles and light, the pet clearly "
            "visible. Each photo is checked and cropped to a square around the pet.")
        uploads = gr.File(label="Photos", file_count="multiple", file_types=["image", ".heic", ".heif"],
                          elem_id="photos")
        summary = gr.Markdown(elem_id="intake-summary")
        accepted = gr.Gallery(label="Ready for training", columns=6, height="auto", elem_id="accepted")
        rejected = gr.Dataframe(headers=["file", "why it was not used"], label="Not used", wrap=True,
                                elem_id="rejected")
        with gr.Row():
            name = gr.Textbox(label="Pet name", placeholder="Bruno", elem_id="pet-name")
            class_noun = gr.Dropdown(["dog", "cat", "rabbit", "bird", "hamster"], value="dog", allow_custom_value=True,
                                     label="Kind of pet", elem_id="class-noun")
            preset = gr.Radio(presets, value=presets[0], label="Preset", elem_id="preset",
                              info="quick: a LoRA in minutes on a GPU; paper: the paper's full fine-tune"
                                   + ("; tiny: seconds on this CPU" if tiny else ""))
        with gr.Accordion("Advanced", open=False):
            with gr.Row():
                method = gr.Radio(["lora", "full"], value=None, label="Method (default: the preset's)")
                steps = gr.Number(label="Steps (0: the preset's)", value=0, precision=0, minimum=0)
                learning_rate = gr.Number(label="Learning rate (0: the preset's)", value=0, minimum=0)
                rank = gr.Number(label="LoRA rank (0: the preset's)", value=0, precision=0, minimum=0)
                seed = gr.Number(label="Seed", value=0, precision=0)
                prior = gr.Radio(["preset", "on", "off"], value="preset", label="Prior preservation")
        with gr.Row():
            train = gr.Button("Train", variant="primary", elem_id="train-button")
            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
        status = gr.Markdown(elem_id="train-status")
        progress = gr.Slider(0, 1, value=0, label="Progress (steps)", interactive=False, elem_id="train-progress")
        loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=220, elem_id="loss-plot")
        samples = gr.Gallery(label="Samples as it learns", columns=4, height="auto", elem_id="samples")
        run_id = gr.State("")
        with gr.Accordion("Unfinished trainings", open=False):
            resumable = gr.Dropdown([], label="Cut off by a restart, cancelled or failed", elem_id="resumable",
                                    allow_custom_value=True)
            resume = gr.Button("Resume", elem_id="resume-button")

    def check(paths):
        if not paths:
            return "", [], []
        report = service.check_photos(paths)
        count = len(report.accepted)
        text = (f"**{count} photos ready for training.**" if report.enough else
                f"**{count} usable photo{'s' * (count != 1)}: add {report.missing} more to train.**")
        return text, [(photo.image, photo.file) for photo in report.accepted], [[r.file, r.reason] for r in report.rejected]

    def start(paths, name, class_noun, preset, method, steps, learning_rate, rank, seed, prior, browser_id,
              request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Start training on the uploaded photos, then stream its progress until it ends."""
        owner = owner_of(browser_id, request, profile)
        overrides = dict(method=method or None, steps=int(steps) or None, learning_rate=learning_rate or None,
                         rank=int(rank) or None, seed=int(seed or 0),
                         prior_preservation=None if prior == "preset" else prior == "on")
        try:
            job = service.start_training(owner, name or "", class_noun or "", list(paths or []), preset, **overrides)
        except (NotEnoughPhotosError, ValueError) as error:
            raise gr.Error(str(error)) from None
        yield from follow(owner, job.run_id)

    def resume_run(chosen, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not chosen:
            raise gr.Error("Choose an unfinished training to resume.")
        try:
            job = service.resume_training(owner, chosen)
        except (NotFound, ValueError) as error:
            raise gr.Error(str(error)) from None
        yield from follow(owner, job.run_id)

    def follow(owner: str, run: str):
        """(run id, status, progress, loss chart, samples) every time they change, until the run ends."""
        last = None
        while True:
            job = service.training(owner, run)
            if job is None:
                return
            position = service.trainings.position(run)
            if job.status == "queued":
                text = (f"Waiting: {position} training{'s' * (position != 1)} ahead of {job.pet_name}'s."
                        if position else "Starting...")
            elif job.status == "running":
                eta = f", about {job.eta_seconds:.0f} s left" if job.eta_seconds is not None else ""
                text = (f"Training {job.pet_name}: step {job.step} of {job.total_steps}, loss {job.loss:.4f}{eta}."
                        if job.loss is not None else f"Preparing {job.pet_name}'s training. {job.message}")
            else:
                text = {"finished": "✅ ", "failed": "❌ ", "cancelled": "⏹ "}[job.status] + job.message
            state = (job.status, job.step, len(job.samples), text)
            if state != last:
                last = state
                chart = pd.DataFrame({"step": range(1, len(job.losses) + 1), "loss": job.losses})
                progress_bar = gr.Slider(maximum=job.total_steps, value=job.step)
                gallery = [(served_copy(path), caption) for path, caption in job.samples[-8:]]
                yield run, text, progress_bar, chart, gallery
            if job.done:
                return
            time.sleep(POLL_SECONDS)

    def stop(run, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not run or not service.cancel_training(owner, run):
            gr.Info("No training of yours is running.")
        else:
            gr.Info("Stopping after this step; a checkpoint is kept so you can resume.")

    def list_resumable(browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        names = {p.id: p.name for p in service.pets(owner)}
        live = lambda run: (job := service.training(owner, run.id)) is not None and not job.done  # noqa: E731
        runs = [r for r in service.store.runs(owner) if r.status in ("interrupted", "cancelled", "failed")
                and not live(r)]
        return gr.Dropdown([(f"{names.get(r.pet_id, '?')}: {r.status} ({r.created_at[:16]})", r.id) for r in runs],
                           value=None)

    uploads.change(check, inputs=uploads, outputs=[summary, accepted, rejected], api_name="check_photos")
    inputs = [uploads, name, class_noun, preset, method, steps, learning_rate, rank, seed, prior, browser_id]
    outputs = [run_id, status, progress, loss, samples]
    train.click(start, inputs=inputs, outputs=outputs, api_name="train", concurrency_limit=None)
    cancel.click(stop, inputs=[run_id, browser_id], api_name="cancel_training")
    resume.click(resume_run, inputs=[resumable, browser_id], outputs=outputs, api_name="resume_training",
                 concurrency_limit=None)
    return {"list_resumable": (list_resumable, [browser_id], [resumable])}

