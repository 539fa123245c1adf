"""A small OpenAI-compatible chat-completions server over any kuaimod backend (``kuaimod openai-server``).

It lets the ``openai`` backend, its HTTP client, concurrency, retries and error handling be tested
end to end without a GPU: serve the tiny Qwen2-VL (or any local checkpoint) here and point
``kuaimod moderate --backend openai --base-url http://127.0.0.1:PORT/v1`` at it, exactly as one
would at vLLM or SGLang. It is a test and development tool, not a production inference server:
requests are answered one at a time, in arrival order.

Supported: ``POST /v1/chat/completions`` (text and ``image_url`` parts with base64 data URLs,
``max_tokens``, ``temperature``) and ``GET /v1/models``. ``fail_first`` makes the first N completions
answer 503, to exercise client retries. ``adapters`` serves LoRA adapters under their own names, as
vLLM's ``--lora-modules NAME=DIR`` does (a request naming the adapter is answered with it; ``/v1/models``
lists it with its ``parent``). ``latency=(low, high)`` adds an uneven, per-request delay before each
answer, slept concurrently, which is how a continuously batching server looks from outside: answers of
400 to 1,024 tokens finish at different times (``bench/openai_window.py`` measures clients against it).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import asyncio
import base64
import binascii
import hashlib
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kuaimod_open._lazy import require
from kuaimod_open.judge.backends.base import Backend, GenerateConfig, Request
from kuaimod_open.judge.prompt import ImagePart, Message, Part


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request that kuaimod sends."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = 0.0


def _to_message(raw: dict[str, Any], folder: Path) -> Message:
    role = raw.get("role")
    if role not in ("system", "user", "assistant"):
        raise ValueError(f"unsupported role {role!r}")
    content = raw.get("content")
    if isinstance(content, str):
        return Message(role, (content,))
    parts: list[Part] = []
    for item in content or []:
        if item.get("type") == "text":
            parts.append(str(item.get("text", "")))
        elif item.get("type") == "image_url":
            url = str((item.get("image_url") or {}).get("url", ""))
            if not url.startswith("data:image/") or ";base64," not in url:
                raise ValueError("only base64 data: URLs are accepted for images")
            path = folder / f"{uuid.uuid4().hex}.jpg"
            path.write_bytes(base64.b64decode(url.split(";base64,", 1)[1], validate=True))
            parts.append(ImagePart(path))
        else:
            raise ValueError(f"unsupported content part {item.get('type')!r}")
    return Message(role, tuple(parts))


def request_delay(messages: list[dict[str, Any]], latency: tuple[float, float]) -> float:
    """A delay in ``[low, high]`` fixed by the request's content: the same request waits the same in every run."""
    low, high = latency
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).digest()
    return low + (high - low) * int.from_bytes(digest[:4], "big") / 2**32


def create_openai_app(
    backend: Backend,
    served_name: str | None = None,
    *,
    fail_first: int = 0,
    adapters: dict[str, Backend] | None = None,
    latency: tuple[float, float] | None = None,
) -> Any:
    """A FastAPI app answering chat completions with ``backend`` under the model name ``served_name``.

    ``adapters`` maps served LoRA names to backends that apply them; ``latency`` is ``(low, high)`` seconds.
    """
    require("fastapi", extra="serve", purpose="the OpenAI-compatible test server")
    from fastapi import FastAPI, HTTPException
    from fastapi.concurrency import run_in_threadpool

    name = served_name or backend.model_id
    models: dict[str, Backend] = {name: backend, **(adapters or {})}
    lock = threading.Lock()
    failures = {"left": fail_first}
    app = FastAPI(title="kuaimod OpenAI-compatible server", version="1")
    app.state.requests_by_model = {key: 0 for key in models}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        """The served model and its adapters (each with the base model as ``parent``, as vLLM lists them)."""
        data = [{"id": name, "object": "model", "owned_by": "kuaimod", "parent": None}]
        data += [{"id": key, "object": "model", "owned_by": "kuaimod", "parent": name} for key in adapters or {}]
        return {"object": "list", "data": data}

    def complete(body: ChatRequest) -> dict[str, Any]:
        with lock, tempfile.TemporaryDirectory(prefix="kuaimod-oai-") as tmp:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise HTTPException(503, "temporarily unavailable (fail_first)")
            try:
                messages = tuple(_to_message(m, Path(tmp)) for m in body.messages)
            except (ValueError, binascii.Error) as exc:
                raise HTTPException(400, f"bad message: {exc}") from None
            limit = body.max_tokens or 1024
            config = GenerateConfig(max_new_tokens=limit, temperature=body.temperature, batch_size=1)
            app.state.requests_by_model[body.model] += 1
            (gen,) = models[body.model].generate([Request("request", messages)], config)
        if gen.error is not None:
            raise HTTPException(500, f"generation failed: {gen.error}")
        out_tokens = gen.output_tokens or 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": "length" if gen.truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": gen.input_tokens or 0,
                "completion_tokens": out_tokens,
                "total_tokens": (gen.input_tokens or 0) + out_tokens,
            },
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> dict[str, Any]:
        """Answer one chat completion (generation runs in a thread, one at a time)."""
        if body.model not in models:
            raise HTTPException(404, f"model {body.model!r} is not served here (serving {', '.join(models)})")
        if latency is not None:
            await asyncio.sleep(request_delay(body.messages, latency))  # concurrent, like continuous batching
        result: dict[str, Any] = await run_in_threadpool(complete, body)
        return result

    return app
