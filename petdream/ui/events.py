"""Event wiring the tabs share."""

from __future__ import annotations

from typing import Callable


def while_busy(trigger, controls: list, busy: Callable, idle: Callable, fn: Callable, inputs, outputs, **event_args):
    """`trigger(fn, inputs, outputs, **event_args)`, with `controls` set to `busy()` before it runs and back
    to `idle()` once it ends, failed or not (Gradio 6 runs `.then` only after a success, so `.failure` too).
    A button that rests while its work runs says "wait"; one that silently ignores a click does not."""
    work = trigger(busy, None, controls, queue=False, api_visibility="private").then(fn, inputs, outputs, **event_args)
    work.then(idle, None, controls, api_visibility="private")
    work.failure(idle, None, controls, api_visibility="private")
    return work
