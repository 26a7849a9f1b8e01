"""The supportive companion: an LLM-backed agent behind a crisis-safety screen."""

from __future__ import annotations

from petdream.companion.agent import Companion, Person, Turn, answer_without_pet
from petdream.companion.backends import (
    BackendUnavailable,
    FallbackChatBackend,
    LocalChatBackend,
    RemoteChatBackend,
    embedded_model_dir,
)

__all__ = ["Companion", "Person", "Turn", "answer_without_pet", "BackendUnavailable", "FallbackChatBackend",
           "LocalChatBackend", "RemoteChatBackend", "embedded_model_dir", "backend_for"]


ANSWER_PREFIX = '{"reply": "'  # local models start their answer inside the JSON the companion asks for


def backend_for(settings, profile_name: str) -> FallbackChatBackend:
    """The chain of chat backends these settings ask for, ending with the offline model.

    tiny: the embedded SmolLM2-135M. sd15: a server at PETDREAM_LLM_BASE_URL if set, else HF
    Inference Providers when a token is available, then the local transformers model
    PETDREAM_LLM_MODEL; the embedded model answers last, so the chat never goes silent.
    """
    backends = []
    if profile_name != "tiny":
        token = settings.hf_token()
        if settings.llm_base_url:
            backends.append(RemoteChatBackend(settings.llm_remote_model, base_url=settings.llm_base_url, token=token))
        elif token:
            backends.append(RemoteChatBackend(settings.llm_remote_model, token=token))
        backends.append(LocalChatBackend(settings.llm_model, device="cuda" if _cuda() else "cpu",
                                         answer_prefix=ANSWER_PREFIX))
    backends.append(_EmbeddedBackend(settings.data_dir))
    return FallbackChatBackend(backends)


class _EmbeddedBackend(LocalChatBackend):
    """The offline SmolLM2-135M-Instruct, converted from its GGUF file on first use."""

    def __init__(self, data_dir):
        super().__init__("SmolLM2-135M-Instruct (embedded)", answer_prefix=ANSWER_PREFIX)
        self.data_dir = data_dir

    def load(self):
        if self._model is None:
            self.model_id = str(embedded_model_dir(self.data_dir))
        return super().load()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
