"""Evaluate: the DreamBench-style protocol on one pet, beside the base model, with its report."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from petdream.evaluation import EvaluationConfig, Failed, Finished, Note, Progress, load_prompts
from petdream.service import PetDreamService
from petdream.store import NotFound
from petdream.training.queue import time_left
from petdream.ui.events import refusal, while_busy
from petdream.ui.session import owner_of, served_copy, trained_pets

QUICK_PROMPTS = 4


def render(service: PetDreamService, browser_id: gr.BrowserState, tiny: bool) -> dict:
    with gr.Tab("Evaluate", id="evaluate") as tab:
        gr.Markdown(
            "How well does the model know your pet? Each prompt is drawn by your pet's model and by the base "
            "model with the same seeds, then scored: CLIPScore (does the picture match the prompt), CLIP-I and "
            "DINO (does it look like your photos), SSIM, and FID over all pictures.")
        with gr.Row():
            pet = gr.Dropdown([], label="Pet", elem_id="eval-pet", allow_custom_value=True)
            size = gr.Radio([f"quick ({QUICK_PROMPTS} prompts, 1 picture each)", "full (every prompt, 4 pictures)"],
                            value=f"quick ({QUICK_PROMPTS} prompts, 1 picture each)", label="How thorough",
                            info=f"Each picture is drawn twice, by your pet's model and by the base model: quick "
                                 f"draws {2 * QUICK_PROMPTS}, full {2 * 4 * len(load_prompts())} (the DreamBench "
                                 "protocol; several minutes on a GPU).", elem_id="eval-size")
            steps = gr.Slider(5, 50, value=10 if tiny else 25, step=1, label="Sampling steps",
                              info="Denoising steps per picture: more are cleaner and slower.")
        run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
        status = gr.Markdown(elem_id="eval-status")
        metrics = gr.Markdown(elem_id="eval-metrics")
        # Captions above, not Gradio's labels and share buttons: those float over the pictures' own headings.
        gr.Markdown("The pictures: a row per prompt, your pet's model, then the base model. The chart: subject "
                    "fidelity against prompt fidelity.")
        with gr.Row():
            # Shown as WebP: the full protocol's grid.png is ~15 MB (it is among the report's files).
            grid = gr.Image(label="A row per prompt: your pet's model, then the base model", show_label=False,
                            format="webp", buttons=["fullscreen"], elem_id="eval-grid")
            chart = gr.Image(label="Subject fidelity against prompt fidelity", show_label=False,
                             buttons=["download", "fullscreen"], elem_id="eval-chart")
        report = gr.File(label="Report", file_count="multiple", interactive=False, elem_id="eval-report")  # no ×

    def evaluate(pet_id, size, steps, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Stream progress, then the metrics table, the grid, the chart and the report files."""
        owner = owner_of(browser_id, request, profile)
        if not pet_id:
            raise refusal("Choose a trained pet first.")
        quick = size.startswith("quick")
        config = EvaluationConfig(prompts=tuple(load_prompts()[:QUICK_PROMPTS]) if quick else None,
                                  images_per_prompt=1 if quick else 4, steps=int(steps))
        try:
            events = service.evaluate(owner, pet_id, config)
            for event in events:
                if isinstance(event, Progress):
                    who = "your pet's model" if event.model == "pet" else "the base model"
                    yield (f"Drawing {event.step} of {event.total_steps} with {who}: {event.prompt} "
                           f"({time_left(event.eta_seconds)})"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                elif isinstance(event, Note):
                    gr.Warning(event.text)
                elif isinstance(event, Failed):
                    raise gr.Error(event.reason, print_exception=False)  # the evaluator logged its cause
                elif isinstance(event, Finished):
                    paths = service.save_report(owner, pet_id, event.report)
                    yield (_verdict(event.report, event.seconds), event.report.to_markdown(verdict=False),
                           *_shown(owner, paths))  # the verdict once: in the status line
        except NotFound as error:
            raise refusal(str(error)) from None

    # Evaluate rests while its evaluation runs (minutes on a GPU): a second click would queue a second one. So
    # does the pet: another chosen would show its last results, then the running one's under its name.
    while_busy(run.click, [run, pet], lambda: (gr.Button(interactive=False), gr.Dropdown(interactive=False)),
               lambda: (gr.Button(interactive=True), gr.Dropdown(interactive=True)), evaluate,
               [pet, size, steps, browser_id], [status, metrics, grid, chart, report], api_name="evaluate",
               show_progress_on=status)  # a refusal marks the status line, not every panel

    def show_last(pet_id, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """(status, metrics, grid, chart, files) of the chosen pet's last evaluation, kept with the pet: after
        a reload, or back on this pet, its results are there without drawing them again; none, all empty."""
        owner, nothing = owner_of(browser_id, request, profile), ("", "", None, None, None)
        try:
            last = service.last_report(owner, pet_id) if pet_id else None
            if last is None:
                return ("Not evaluated yet: choose how thorough, then Evaluate." if pet_id else "", *nothing[1:])
            earlier = "" if last["current"] else " (of an earlier model: it has been taught since; evaluate again)"
            return (f"Last evaluated {last['saved']:%d %b %Y %H:%M} UTC{earlier}.", last["markdown"].read_text(),
                    *_shown(owner, last))
        except (NotFound, OSError):  # deleted meanwhile (in another tab): the pet list is refreshed as the tab opens
            return nothing

    pet.change(show_last, inputs=[pet, browser_id], outputs=[status, metrics, grid, chart, report],
               api_visibility="private")
    list_pets = trained_pets(service)
    tab.select(list_pets, inputs=[pet, browser_id], outputs=pet, api_visibility="private")
    return {"list_pets": (list_pets, [pet, browser_id], [pet])}


def _shown(owner: str, paths: dict) -> tuple:
    """(grid, chart, report files) of a saved report (`report_files`), as the page shows them."""
    with Image.open(paths["grid"]) as grid_png:
        grid = grid_png.convert("RGB")  # Gradio sends it in the component's format
    return (grid, served_copy(owner, paths["chart"]),
            [served_copy(owner, paths[part]) for part in ("markdown", "json", "grid")])


def _verdict(report, seconds: float) -> str:
    """The status line of a finished evaluation: what it says of the pet model in plain words, then the
    overall numbers (the tables below have the rest)."""
    caveat = ["⚠️ Demo profile: the models have random weights, so this verdict means nothing."
              ] if report.profile.random_weights else []
    verdict = report.verdict()
    how_sure = [line for line in verdict if line.startswith("ℹ️")]  # after what it says
    lines = [f"✅ Done in {seconds:.0f} s.", *[line for line in verdict if line not in how_sure], *caveat, *how_sure,
             f"<small>{report.summary()}</small>"]
    return "\n\n".join(lines)
