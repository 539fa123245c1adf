"""Any OpenAI-compatible chat-completions server: vLLM, SGLang, LMDeploy, or a hosted API.

Frames are sent inline as base64 JPEG data URLs, so the server needs no access to our disk.
Requests of a batch run concurrently; the ``openai`` client retries timeouts, connection errors,
429 and 5xx answers with exponential backoff, and a request that still fails becomes an error
Generation (→ an error verdict, decision = review) without stopping the batch.

Serving a Qwen-VL model with vLLM (on a GPU machine)::

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --limit-mm-per-prompt '{"image": 9}' --max-model-len 32768
    kuaimod moderate clips/ --backend openai --model Qwen/Qwen2.5-VL-7B-Instruct \
        --base-url http://localhost:8000/v1
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import BackendError
from kuaimod_open.judge.backends.base import GenerateConfig, Generation, Request
from kuaimod_open.judge.prompt import ImagePart, Message

# Frames are re-encoded to bound request size: a 9-frame prompt stays well under 2 MB.
_MAX_SIDE = 896


class OpenAIBackend:
    """Chat completions against ``base_url`` with the served model name ``model``."""

    adapter: str | None = None

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 8,
    ) -> None:
        openai = require("openai", extra="openai", purpose="the openai backend")
        if not base_url:
            raise BackendError(
                "The openai backend needs a server URL: pass --base-url (e.g. http://localhost:8000/v1) "
                "or set KUAIMOD_BASE_URL / OPENAI_BASE_URL."
            )
        self.model_id = model
        self.base_url = base_url
        self.concurrency = max(1, concurrency)
        # vLLM accepts any key unless started with --api-key; the client insists on a non-empty one.
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries
        )
        self._errors = (openai.APIError, openai.APIConnectionError, openai.APITimeoutError)

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        """Send every request (``concurrency`` at a time); results come back in request order."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, config), requests))

    def _one(self, request: Request, config: GenerateConfig) -> Generation:
        try:
            messages = [_to_openai(m) for m in request.messages]
        except OSError as exc:
            return Generation(error=f"cannot read a frame image: {exc}")
        kwargs: dict[str, Any] = {
            "model": self.model_id,
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
        if choice.finish_reason == "length" and "```json" not in text:
            # Cut off before the verdict: the parser would find nothing, so say why.
            return Generation(
                text=text,
                error=f"generation hit max_new_tokens={config.max_new_tokens} before the verdict",
                latency_s=elapsed,
            )
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
        )


def _to_openai(message: Message) -> dict[str, Any]:
    if message.role != "user" or not message.images:
        return {"role": message.role, "content": message.text}
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": image_data_url(part.path)}})
        else:
            content.append({"type": "text", "text": part})
    return {"role": message.role, "content": content}


def image_data_url(path: Path) -> str:
    """The image as a ``data:image/jpeg;base64,...`` URL, downscaled to at most 896 px."""
    from PIL import Image

    with Image.open(path) as source:
        image = source.convert("RGB")
    if max(image.size) > _MAX_SIDE:
        image.thumbnail((_MAX_SIDE, _MAX_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
