"""Event wiring the tabs share."""

from __future__ import annotations

import html
from typing import Callable

import gradio as gr


def refusal(message: str, *, stays: bool = False) -> gr.Error:
    """The error to raise when the app turns down what a person asked (no pet chosen, too few photos):
    shown on the page and not logged as a traceback, since nothing went wrong in the app. `stays`: until
    closed, for a message with steps to follow; else it fades after 10 s, as Gradio's errors do.
    The toast shows HTML: the message is escaped (it may name a person's file), its lines kept as <br>
    (which a script calling the app's API gets too)."""
    return gr.Error(html.escape(message, quote=False).replace("\n", "<br>"), duration=None if stays else 10,
                    print_exception=False)


def while_busy(trigger, controls: list, busy: Callable, idle: Callable, fn: Callable, inputs, outputs,
               failed: Callable | None = None, focus: str | None = None, **event_args):
    """`trigger(fn, inputs, outputs, **event_args)`, with `controls` set to `busy()` before it runs and to
    `idle()` once it ends, or `failed()` (default: `idle()`) after a failure (Gradio 6 runs `.then` only
    after a success). A button that rests while its work runs says "wait"; one that ignores a click does not.
    focus: a CSS selector of what gets the keyboard's focus back once the controls are idle (a control
    that rested lost it, and the next keys would go nowhere), unless the person has moved it elsewhere or
    has a touch screen."""
    work = trigger(busy, None, controls, queue=False, api_visibility="private").then(fn, inputs, outputs, **event_args)
    for rested in (work.then(idle, None, controls, api_visibility="private"),
                   work.failure(failed or idle, None, controls, api_visibility="private")):
        if focus:
            rested.then(None, js=f"""() => {{
                const target = document.querySelector({focus!r});
                // Not on a touch screen: there focus opens the keyboard, over what just came in.
                const dropped = [document.body, null].includes(document.activeElement);
                if (target && dropped && matchMedia("(pointer: fine)").matches) target.focus();
            }}""", api_visibility="private")
    return work
