"""My pet: upload photos and see, per photo, whether it can be trained on and why not."""

from __future__ import annotations

import gradio as gr

from petdream.photos import intake


def render(resolution: int) -> None:
    with gr.Tab("My pet"):
        gr.Markdown(
            "Upload 3 to 50 photos of your pet: different places, angles and light, the pet clearly "
            "visible. Each photo is checked and cropped to a square around the pet."
        )
        uploads = gr.File(label="Photos", file_count="multiple", file_types=["image", ".heic", ".heif"])
        summary = gr.Markdown()
        accepted = gr.Gallery(label="Ready for training", columns=5, height="auto")
        rejected = gr.Dataframe(headers=["file", "why it was not used"], label="Not used", wrap=True)
        uploads.change(
            lambda paths: check_photos(paths, resolution),
            inputs=uploads,
            outputs=[summary, accepted, rejected],
            api_name="check_photos",
        )


def check_photos(paths: list[str] | None, resolution: int):
    """(summary markdown, [(image, caption)], [[file, reason]]) for the uploaded files."""
    if not paths:
        return "", [], []
    report = intake(paths, resolution=resolution)
    if report.enough:
        summary = f"**{len(report.accepted)} photos ready for training.**"
    else:
        usable = len(report.accepted)
        summary = f"**{usable} usable photo{'s' * (usable != 1)}: add {report.missing} more to train.**"
    gallery = [(photo.image, photo.file) for photo in report.accepted]
    table = [[r.file, r.reason] for r in report.rejected]
    return summary, gallery, table
