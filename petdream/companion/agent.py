"""Companion: the supportive chat agent (the paper's "therapist agent", which PetDream does
not call therapy). One turn: screen the message, ask the LLM for a reply, a mood and a scene,
validate and screen what comes back, and build the pet's image prompt.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Callable

from petdream.companion import prompts
from petdream.companion.backends import BackendUnavailable, closing_brace
from petdream.companion.safety import CRISIS_MESSAGE, DISCLOSURE, SafetyAssessment, screen_message, screen_reply
from petdream.petmodel import Pet

logger = logging.getLogger(__name__)

HISTORY_TURNS = 6  # person/companion exchanges the LLM sees
HISTORY_CHARS = 500  # characters kept of each past message
MAX_REPLY_TOKENS = 160
BACKEND_TROUBLE = ("My usual voice is not reachable right now, so a simpler one is answering; "
                   "I'm still here with you.")
NO_BACKEND = ("I'm sorry, I can't find my words right now: none of my language models answered. "
              "Please try again in a moment.")
SAFE_REPLY = ("Thank you for telling me how you feel. I'm here with you, and I'm glad you reached out. "
              "Would you like to tell me a little more about what's on your mind?")


@dataclass(frozen=True)
class Person:
    """Who the companion talks to; every field is optional."""

    name: str | None = None
    age: str | None = None
    occupation: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "age": self.age, "occupation": self.occupation}


@dataclass
class Turn:
    """The companion's answer to one message."""

    reply: str
    image_prompt: str  # always carries the pet's trigger phrase; fits 60 CLIP tokens
    negative_prompt: str
    mood: str  # one of prompts.MOODS
    safety: SafetyAssessment  # of the person's message
    draw: bool = True  # False on a crisis: a calming picture may be offered, not pushed
    notices: list[str] = field(default_factory=list)  # disclosure, fallbacks: shown beside the reply


class Companion:
    """Answers a person's messages with empathy and a picture of their pet.

    backend: anything with `complete(messages, max_tokens, on_token)`, see backends.py.
    """

    def __init__(self, backend):
        self.backend = backend

    def respond(self, message: str, *, pet: Pet, person: Person = Person(), history: list[dict] | None = None,
                on_token: Callable[[str], None] | None = None) -> Turn:
        """One turn. `history` holds earlier {"role", "content"} messages of this conversation
        (replies as shown); `on_token` receives the reply as it streams."""
        if not message or not message.strip():
            raise ValueError("The message is empty: say how you feel or what's on your mind.")
        history = history or []
        notices = [] if history else [DISCLOSURE]
        safety = _screen_everything(message, pet, person)
        if safety.is_crisis:
            logger.warning("crisis screen: reasons=%s (message not recorded)", ",".join(safety.reasons))
            prompt, negative = prompts.image_prompt(None, pet, "calm", "")
            return Turn(CRISIS_MESSAGE, prompt, negative, prompts.mood_from_text(message), safety, draw=False,
                        notices=notices)

        messages = [{"role": "system", "content": prompts.system_prompt(pet, person.as_dict())}]
        for turn in history[-2 * HISTORY_TURNS:]:
            text = str(turn.get("content"))[:HISTORY_CHARS]
            if turn.get("role") == "user":
                messages.append({"role": "user", "content": text})
            elif turn.get("role") == "assistant":  # as it answered: in the JSON it is asked for
                messages.append({"role": "assistant", "content": json.dumps({"reply": text}, ensure_ascii=False)})
        messages.append({"role": "user", "content": message})
        try:
            answer = self._ask(messages, on_token)
        except BackendUnavailable:
            notices.append(NO_BACKEND)
            answer = {}
        if getattr(self.backend, "fallbacks", None):
            notices.append(BACKEND_TROUBLE)

        reply = answer.get("reply") or SAFE_REPLY
        if screen_reply(reply).is_crisis or prompts.leaks_instructions(reply):
            logger.warning("companion reply replaced: %s", ",".join(screen_reply(reply).reasons) or "instructions")
            reply = SAFE_REPLY
        elif prompts.cheers_at_low_mood(reply, message):
            logger.warning("companion reply replaced: cheerful at a low mood")
            reply = SAFE_REPLY
        mood = answer.get("mood") if answer.get("mood") in prompts.MOODS else prompts.mood_from_text(message)
        prompt, negative = prompts.image_prompt(answer.get("image_prompt"), pet, mood, message)
        return Turn(reply, prompt, negative, mood, safety, notices=notices)

    def _ask(self, messages: list[dict], on_token) -> dict:
        """The LLM's answer as a dict with at least "reply"; output without a whole reply is retried
        once, then the reply is salvaged from the text."""
        stream = _ReplyStream(on_token) if on_token else None
        first = self.backend.complete(messages, max_tokens=MAX_REPLY_TOKENS, on_token=stream)
        # A whole reply in JSON broken further on is kept: asked again, a small model tends to answer
        # worse (apologies, refusals), and the person has already seen this reply stream in.
        answer = parse_answer(first) or partial_answer(first)
        if answer is None:
            logger.info("companion: malformed LLM output, asking once more")
            retry = messages + [{"role": "assistant", "content": first[:400]},
                                {"role": "user", "content": 'That was not valid JSON. Answer again with JSON only: '
                                                            '{"reply": "...", "mood": "...", "image_prompt": "..."}'}]
            stream = _ReplyStream(on_token) if on_token and not (stream and stream.emitted) else None
            second = self.backend.complete(retry, max_tokens=MAX_REPLY_TOKENS, on_token=stream)
            answer = parse_answer(second) or {"reply": salvage_reply(first, second)}
        return answer


def answer_without_pet(message: str, person: Person = Person()) -> Turn | None:
    """The crisis reply to `message` from someone with no pet to chat with yet (help does not wait for a
    pet, nor for a chat model to load); None when it is not a crisis: that message waits for a pet."""
    safety = _screen_everything(message, None, person)
    if not safety.is_crisis:
        return None
    logger.warning("crisis screen: reasons=%s (message not recorded; no pet yet)", ",".join(safety.reasons))
    return Turn(CRISIS_MESSAGE, "", "", prompts.mood_from_text(message), safety, draw=False)


def _screen_everything(message: str, pet: Pet | None, person: Person) -> SafetyAssessment:
    """The message decides, but a crisis typed into a profile field counts too."""
    assessment = screen_message(message)
    if assessment.is_crisis:
        return assessment
    fields = " . ".join(v for v in (person.name, person.occupation, pet and pet.name) if v)
    from_fields = screen_message(fields) if fields else None
    return from_fields if from_fields is not None and from_fields.is_crisis else assessment


def parse_answer(text: str) -> dict | None:
    """The first JSON object in `text` with a non-empty string "reply", or None."""
    start = text.find("{")
    while start >= 0:
        end = closing_brace(text, start)
        if end is None:
            return None
        try:
            value = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("reply"), str) and value["reply"].strip():
            return {k: v.strip() if isinstance(v, str) else None for k, v in value.items()
                    if k in ("reply", "mood", "image_prompt")}
        start = text.find("{", start + 1)
    return None


def partial_answer(text: str) -> dict | None:
    """The whole string fields ("reply", "mood", "image_prompt") of a JSON answer that is broken
    elsewhere (stray keys, a missing brace), or None without a whole non-empty "reply"."""
    fields = {}
    for key, value in re.findall(r'"(reply|mood|image_prompt)"\s*:\s*"((?:[^"\\]|\\.)*)"\s*(?:[,}]|$)', text):
        try:
            value = json.loads(f'"{value}"').strip()
        except json.JSONDecodeError:
            continue
        if not re.search(r'"\s*[:,]\s*"|[{}]', value):  # over-escaped JSON in the string: not a reply to show
            fields.setdefault(key, value)
    return fields if fields.get("reply") else None


def salvage_reply(*attempts: str) -> str:
    """A readable reply from malformed outputs: a "reply" value visible in any attempt, else the
    first attempt's prose without JSON, code or markup. Raw JSON never reaches the person."""
    for text in attempts:
        match = re.search(r'"reply"\s*:\s*"((?:[^"\\]|\\.)*)', text)
        if match and match.group(1).strip():
            try:
                return json.loads(f'"{match.group(1)}"').strip()
            except json.JSONDecodeError:
                return match.group(1).strip()
    for text in attempts:
        prose = re.sub(r"```.*?(```|$)|\{.*?(\}|$)", " ", text, flags=re.DOTALL)
        prose = re.sub(r"\s+", " ", prose).strip()
        if prose:
            return prose
    return SAFE_REPLY


class _ReplyStream:
    """Passes on the JSON "reply" value as the LLM streams its answer, a sentence at a time,
    each screened first: a reply that turns unsafe stops streaming before the unsafe part
    shows (the final Turn.reply then replaces what was shown)."""

    def __init__(self, on_token: Callable[[str], None]):
        self.on_token, self.buffer, self.state = on_token, "", "searching"
        self.shown, self.pending, self.emitted = "", "", 0

    def __call__(self, piece: str) -> None:
        self.buffer += piece
        if self.state == "searching":
            match = re.search(r'"reply"\s*:\s*"', self.buffer)
            if not match:
                return
            self.state, self.buffer = "inside", self.buffer[match.end():]
        if self.state != "inside":
            return
        i = 0
        while i < len(self.buffer):
            char = self.buffer[i]
            if char == "\\":
                if i + 1 >= len(self.buffer):
                    break  # wait for the escaped character
                self.pending += {"n": "\n", "t": "\t"}.get(self.buffer[i + 1], self.buffer[i + 1])
                i += 2
                continue
            if char == '"':
                self.state = "closed"
                break
            self.pending += char
            i += 1
        self.buffer = self.buffer[i:]
        sentence_end = max(self.pending.rfind(mark) for mark in ".!?\n")
        if self.state == "closed":
            sentence_end = len(self.pending) - 1
        if sentence_end >= 0:
            self._release(self.pending[: sentence_end + 1])
            self.pending = self.pending[sentence_end + 1:]

    def _release(self, text: str) -> None:
        if screen_reply(self.shown + text).is_crisis:
            self.state = "stopped"
            return
        self.shown += text
        self.emitted += len(text)
        self.on_token(text)
