"""The Gradio app: one Blocks, one module per tab. The UI only calls into the engine."""

from __future__ import annotations

import gradio as gr

from petdream.generate import Generator
from petdream.models import TINY_WARNING, resolve_profile
from petdream.settings import Settings
from petdream.ui import draw_tab, photos_tab


def build_app(settings: Settings) -> gr.Blocks:
    """The whole app. Models load on first use, so the page is up in seconds."""
    profile = resolve_profile(settings)
    generator = Generator(profile, device=settings.device, dtype=settings.dtype)
    with gr.Blocks(title="PetDream") as app:
        gr.Markdown(
            "# PetDream\nA personal image model of your pet, drawn by Stable Diffusion. "
            f"Running profile **{profile.name}** ({profile.reason})."
        )
        if profile.random_weights:
            gr.Markdown(f"⚠️ {TINY_WARNING}", elem_id="tiny-banner")
        with gr.Tabs():
            photos_tab.render(resolution=profile.resolution)
            draw_tab.render(generator)
    return app
