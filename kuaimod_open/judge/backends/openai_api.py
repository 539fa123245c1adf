r"""Any OpenAI-compatible chat-completions server: vLLM, SGLang, LMDeploy, or a hosted API.

Frames are sent inline as data URLs, so the server needs no access to our disk, and already resized
to the pixel budget hf inference and training use (:mod:`.images`): the server sees the same images.
Requests are sent through a sliding window (``window`` in flight over the whole job, see
:class:`~kuaimod_open.judge.backends.base.WindowedBackend`): a continuously batching server never
waits for the slowest answer of a batch. The ``openai`` client retries timeouts, connection errors,
429 and 5xx answers with exponential backoff, and a request that still fails becomes an error
Generation (→ an error verdict, decision = review) without stopping the job.

A LoRA adapter is applied by the server: start vLLM with ``--enable-lora --lora-modules NAME=DIR``
and pass ``adapter=NAME`` (or the adapter's directory, whose folder name is then the NAME); requests
name the adapter as their model, and the backend checks at start that the server serves it.

Serving a Qwen-VL model with vLLM (on a GPU machine)::

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --max-model-len 16384 --gpu-memory-utilization 0.85 \
        --limit-mm-per-prompt '{"image": 9, "video": 0}' --enable-prefix-caching
    kuaimod moderate clips/ --backend openai --model Qwen/Qwen2.5-VL-7B-Instruct \
        --base-url http://localhost:8000/v1
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import BackendError, ConfigError
from kuaimod_open.judge.backends.base import GenerateConfig, Generation, Request
from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, budget_data_url
from kuaimod_open.judge.prompt import ImagePart, Message


class OpenAIBackend:
    """Chat completions against ``base_url`` with the served model name ``model`` (and LoRA ``adapter``)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        adapter: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 8,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        image_factor: int | None = None,
    ) -> None:
        openai = require("openai", extra="openai", purpose="the openai backend")
        if not base_url:
            raise BackendError(
                "The openai backend needs a server URL: pass --base-url (e.g. http://localhost:8000/v1) "
                "or set KUAIMOD_BASE_URL / OPENAI_BASE_URL."
            )
        self.model_id = model
        self.base_url = base_url
        self.window = max(1, concurrency)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        # 2 x the patch size: Qwen3-VL's patches are 16 px, Qwen2/2.5-VL's 14.
        self.image_factor = image_factor or (32 if "qwen3" in model.lower() else 28)
        # vLLM accepts any key unless started with --api-key; the client insists on a non-empty one.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries
        )
        self._errors = (openai.APIError, openai.APIConnectionError, openai.APITimeoutError)
        self.adapter = _adapter_name(adapter) if adapter else None
        if self.adapter is not None:
            self._check_adapter_served(self.adapter)

    @property
    def concurrency(self) -> int:
        """Requests in flight at once (the sliding window)."""
        return self.window

    def _check_adapter_served(self, name: str) -> None:
        """Fail before any request unless the server serves the adapter (on this base model, when it says)."""
        try:
            served = list(self.client.models.list())
        except self._errors as exc:
            raise BackendError(f"cannot list the models of {self.base_url} to check adapter {name!r}: {exc}") from None
        by_id = {m.id: m for m in served}
        how = (
            f"start the server with the adapter, e.g. `vllm serve {self.model_id} --enable-lora "
            f"--lora-modules {name}=/path/to/{name} --max-lora-rank 64` (or `kuaimod openai-server DIR "
            f"--lora-modules {name}=/path/to/{name}`)"
        )
        if name not in by_id:
            raise ConfigError(
                f"adapter {name!r} is not served by {self.base_url} "
                f"(it serves: {', '.join(sorted(by_id)) or 'nothing'}); {how}"
            )
        parent = getattr(by_id[name], "parent", None)
        if parent and parent != self.model_id:
            raise ConfigError(
                f"adapter {name!r} on {self.base_url} belongs to base model {parent!r}, not {self.model_id!r}"
            )

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        """Send every request (``window`` at a time); results come back in request order."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.window, len(requests))) as pool:
            return list(pool.map(lambda r: self.generate_one(r, config), requests))

    def generate_one(self, request: Request, config: GenerateConfig) -> Generation:
        """Answer one request (thread-safe); any failure is the Generation's ``error``."""
        try:
            messages = [self._to_openai(m) for m in request.messages]
        except (OSError, ValueError) as exc:
            return Generation(error=f"cannot read a frame image: {exc}")
        kwargs: dict[str, Any] = {
            # vLLM applies a LoRA module when the request names it as the model.
            "model": self.adapter or self.model_id,
            "messages": messages,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
        }
        if config.logprobs:
            kwargs["logprobs"] = True
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(**kwargs)
        except self._errors as exc:
            return Generation(error=f"{type(exc).__name__} from {self.base_url}: {str(exc)[:300]}")
        elapsed = time.perf_counter() - started
        if not response.choices:
            return Generation(error="the server returned no choices", latency_s=elapsed)
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        token_lp = None
        if choice.logprobs is not None and choice.logprobs.content:
            token_lp = tuple((t.token, float(t.logprob)) for t in choice.logprobs.content if math.isfinite(t.logprob))
        return Generation(
            text=text,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            latency_s=elapsed,
            token_logprobs=token_lp,
            # Cut off at max_tokens: the pipeline turns it into an error verdict whatever it contains.
            truncated=choice.finish_reason == "length",
        )

    def _to_openai(self, message: Message) -> dict[str, Any]:
        if message.role != "user" or not message.images:
            return {"role": message.role, "content": message.text}
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                url = budget_data_url(
                    part.path, factor=self.image_factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
                )
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": part})
        return {"role": message.role, "content": content}


def _adapter_name(adapter: str) -> str:
    """The served name of an adapter given by name or by its directory (the folder's name)."""
    path = Path(adapter)
    return path.name if path.is_dir() else adapter
