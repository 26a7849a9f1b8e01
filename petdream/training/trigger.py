"""Choosing the words a pet is trained on: its own name where that works, a rare token where not."""

from __future__ import annotations

import re
import unicodedata

from petdream.petmodel import Pet

# A rare single CLIP token with no meaning of its own (the community's replacement for "sks",
# which CLIP knows as a rifle).
RARE_TRIGGER = "ohwx"

# Popular pet names that are also things Stable Diffusion draws: "pepper dog" paints pepper, "kitty
# dog" a kitten. Foods, sweets, colours, gems, weather, animals and the words for pets themselves.
DRAWABLE_NAMES = frozenset("""
    amber angel apple ash bagel bambi bandit banana bean bear bee biscuit blue boots brownie bubbles
    buddy bunny burrito butter button candy caramel cat cheese cheeto cherry chip chocolate cinnamon
    cloud coal coco cocoa coffee cookie cupcake daisy diamond donut dog duck duke fox frog ginger gizmo
    ghost gold honey horse jade jelly kitten kitty king kiwi koala lemon lily lion lucky mango maple
    marshmallow midnight mocha monkey moon mouse muffin nacho noodle nugget nutella olive oreo owl
    panda pancake peach peaches peanut pearl pepper pickle piggy pixel pizza pony popcorn potato
    pretzel princess pumpkin puppy queen rabbit rainbow river rocky rose ruby rusty sandy shadow
    smokey snow snowball socks star storm sugar sunny sunshine sushi taco teddy thunder tiger toast
    tofu turtle waffle whiskey wolf ziggy
""".split())
# Rare-looking tokens CLIP already has a meaning for: "sks" is a rifle.
KNOWN_TOKENS = {"sks": "a rifle"}


def choose_trigger(name: str, tokenizer) -> tuple[str, str | None]:
    """(trigger, why a rare token replaced the name or None) for a pet called `name`.

    The name itself is the best trigger when CLIP reads it as at most two tokens and it does
    not name something drawable; otherwise the model would paint the word, or spread the pet
    over many fragments, and a rare token learns the pet more cleanly.
    """
    word = _ascii_word(name)
    if not word:
        return RARE_TRIGGER, f"the name {name!r} has no Latin letters for the text encoder to read"
    if any(c.isdigit() for c in name):  # "R2-D2" would be "rd", "K9" a bare "k"
        return RARE_TRIGGER, f"the name {name!r} has digits, which the text encoder reads as numbers"
    if len(word) < 3:
        return RARE_TRIGGER, f"{word!r} is too short to tell the pet apart from other words"
    if word in KNOWN_TOKENS:
        return RARE_TRIGGER, f"the text encoder already reads {word!r} as {KNOWN_TOKENS[word]}"
    if word in DRAWABLE_NAMES:
        return RARE_TRIGGER, f"{word!r} is also a common word, so the model would draw a {word}"
    pieces = len(tokenizer(word, add_special_tokens=False).input_ids)
    if pieces > 2:
        return RARE_TRIGGER, f"{word!r} splits into {pieces} tokens, which learn a subject poorly"
    return word, None


def new_pet(name: str, class_noun: str, trigger: str | None = None) -> tuple[Pet, str | None]:
    """A Pet to train, and a note for the person when a rare trigger stands in for the name.

    Every Stable Diffusion 1.x model reads prompts with CLIP ViT-L/14's tokenizer, so the
    offline copy decides for all of them.
    """
    from petdream.models.tiny import clip_tokenizer

    if problems := pet_problems(name, class_noun):
        raise ValueError(" ".join(problems))
    noun = class_noun.strip().lower()
    if trigger:
        return Pet(name.strip(), trigger, noun), None
    chosen, why = choose_trigger(name, clip_tokenizer())
    note = f"{name.strip()} will be called \"{chosen}\" in prompts: {why}." if why else None
    return Pet(name.strip(), chosen, noun), note


def pet_problems(name: str, class_noun: str) -> list[str]:
    """What keeps `name` and `class_noun` from making a Pet, each as what to do (none: they can)."""
    problems = [] if name.strip() else ["The pet needs a name."]
    if not class_noun.strip():  # no default: a cat trained as a "dog" draws a dog (and its class images are dogs)
        problems.append(f"Say what kind of animal {name.strip() or 'your pet'} is (the class noun: dog, cat, ...): "
                        "the model learns the pet as one of its kind, and the wrong kind draws the wrong animal.")
    return problems


def _ascii_word(name: str) -> str:
    """'Bruñó' -> 'bruno'; 'Mr. Whiskers' -> 'mrwhiskers'."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())
