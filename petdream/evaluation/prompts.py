"""Evaluation prompts: templates with "{0}" for the pet's trigger word and "{1}" for its class.

The default set (`prompts.txt`, beside this file) is the paper's two Table I prompts followed by
DreamBench's 25 live-subject prompts. DreamBench writes its prompts as Python format strings
("a {0} {1} in the snow"); a prompt file here uses the same placeholders, one prompt a line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from petdream.petmodel import Pet

DEFAULT_PROMPTS_FILE = Path(__file__).with_name("prompts.txt")
_PLACEHOLDER = re.compile(r"\{(\d*)\}")


@dataclass(frozen=True)
class EvaluationPrompt:
    """One prompt, as the model is asked and as CLIP is asked about the result."""

    text: str  # what the model draws: "a bruno dog in the snow"
    caption: str  # what CLIPScore and CLIP-T compare the images with: "a dog in the snow"


def load_prompts(path: str | Path | None = None) -> list[str]:
    """The prompt templates in `path` (default: the packaged set), in file order."""
    path = Path(path) if path else DEFAULT_PROMPTS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the prompt file {path}: {error}") from None
    templates = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        unknown = sorted({f"{{{key}}}" for key in _PLACEHOLDER.findall(line)} - {"{0}", "{1}"})
        if unknown:
            raise ValueError(
                f"{path}, line {number}: {', '.join(unknown)} is not a placeholder; use {{0}} for the "
                f"pet's trigger word and {{1}} for its class, e.g. 'a {{0}} {{1}} in the snow'."
            )
        templates.append(line)
    if not templates:
        raise ValueError(f"{path} holds no prompts: write one a line, e.g. 'a {{0}} {{1}} in the snow'.")
    return templates


def render_prompt(template: str, pet: Pet) -> EvaluationPrompt:
    """Fill in the pet, DreamBench style: "a {0} {1} in the snow" -> "a bruno dog in the snow".

    The caption drops the trigger word: CLIP has never seen "bruno" or "ohwx" mean this pet, so
    prompt fidelity is judged on the words it knows ("a dog in the snow"), for the pet and the
    base model alike.
    """
    text = _squash(template.replace("{0}", pet.trigger).replace("{1}", pet.class_noun))
    caption = _squash(re.sub(rf"(?<!\w){re.escape(pet.trigger)}(?!\w)", " ", text, flags=re.IGNORECASE))
    return EvaluationPrompt(text=text, caption=caption or text)


def _squash(text: str) -> str:
    return " ".join(text.split())
