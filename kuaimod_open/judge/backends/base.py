"""The one polymorphic seam: a batch-first ``Backend`` protocol and the plain data it exchanges."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from kuaimod_open.judge.prompt import Message, messages_digest


@dataclass(frozen=True)
class Request:
    """One sample's rendered conversation, ready for a model."""

    sample_id: str
    messages: tuple[Message, ...]

    @property
    def digest(self) -> str:
        """Content digest of the conversation (text and image paths)."""
        return messages_digest(self.messages)


@dataclass(frozen=True)
class Generation:
    """A model's answer to one request. ``error`` is set when this request failed; the batch goes on."""

    text: str = ""
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None
    # (token text, log-probability) for each generated token, when the backend exposes them. The
    # probability is the model's own (softmax of the raw logits), not the sampler's after top-k/top-p,
    # temperature or repetition penalty reshaped it.
    token_logprobs: tuple[tuple[str, float], ...] | None = None
    # The answer stopped at max_new_tokens, not at the end of its turn: whatever it says is unfinished.
    truncated: bool = False


@dataclass(frozen=True)
class GenerateConfig:
    """Decoding settings shared by all backends."""

    # Five reasoning steps plus the JSON verdict fit in ~600 tokens for Qwen2.5-VL-7B; 1024 leaves
    # headroom while bounding endless generations.
    max_new_tokens: int = 1024
    temperature: float = 0.0
    batch_size: int = 4
    logprobs: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        """Digest of the settings, recorded in provenance."""
        text = f"{self.max_new_tokens}|{self.temperature}|{sorted(self.extra.items())}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@runtime_checkable
class Backend(Protocol):
    """Anything that turns requests into generations.

    ``generate`` returns exactly one :class:`Generation` per request, in order. A failure that
    concerns one request is reported in that Generation's ``error``; only a failure of the whole
    backend (cannot load, cannot connect at all) raises :class:`~kuaimod_open.errors.BackendError`.
    """

    model_id: str
    adapter: str | None

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        """Answer every request, same order."""
        ...


@runtime_checkable
class WindowedBackend(Backend, Protocol):
    """A backend that answers one request at a time, thread-safely, with up to ``window`` in flight.

    Servers that batch continuously (vLLM, SGLang) start each request as soon as it arrives, so the
    pipeline keeps ``window`` requests in flight over the whole stream instead of sending a batch and
    waiting for its slowest answer (:func:`kuaimod_open.judge.pipeline.moderate`).
    """

    window: int

    def generate_one(self, request: Request, config: GenerateConfig) -> Generation:
        """Answer one request; a failure is the Generation's ``error``, never an exception."""
        ...
