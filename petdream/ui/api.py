"""Endpoints for scripts (gradio_client) that no button has: the asker's pets, and one picture.

The tabs' own endpoints (check_photos, train, chat, evaluate, ...) are registered where their
buttons are. A script names itself with `browser_id`, a secret of 32 or more URL-safe characters that it
keeps (as a browser keeps its own): its pets belong to that key. Without one, they belong to
the connection (see session.py).
"""

from __future__ import annotations

import gradio as gr

from petdream.service import PetDreamService
from petdream.store import NotFound
from petdream.ui.events import refusal
from petdream.ui.session import owner_of, served_copy


def register(service: PetDreamService) -> None:
    def pets(browser_id: str = "", request: gr.Request = None) -> list[dict]:
        """Your pets: id, name, the phrase prompts use for them, and whether a trained model is ready.
        browser_id: the same key the other endpoints were given (empty: this connection's pets)."""
        return [{"id": p.id, "name": p.name, "phrase": f"{p.trigger} {p.class_noun}", "trained": p.model_dir is not None}
                for p in service.pets(owner_of(browser_id, request))]

    def generate(pet_id: str, prompt: str, seed: int = -1, browser_id: str = "", request: gr.Request = None) -> str:
        """A picture of your pet from a prompt that uses its phrase (see /pets); seed -1: random."""
        owner = owner_of(browser_id, request)
        try:
            picture = service.draw(owner, pet_id, prompt, seed=None if seed < 0 else seed)
        except (NotFound, ValueError) as error:
            raise refusal(str(error)) from None
        return served_copy(owner, picture.path)

    gr.api(pets, api_name="pets")
    gr.api(generate, api_name="generate")
