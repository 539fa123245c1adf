"""A small OpenAI-compatible chat-completions server over any kuaimod backend (``kuaimod openai-server``).

It lets the ``openai`` backend, its HTTP client, concurrency, retries and error handling be tested
end to end without a GPU: serve the tiny Qwen2-VL (or any local checkpoint) here and point
``kuaimod moderate --backend openai --base-url http://127.0.0.1:PORT/v1`` at it, exactly as one
would at vLLM or SGLang. It is a test and development tool, not a production inference server:
requests are answered one at a time, in arrival order.

Supported: ``POST /v1/chat/completions`` (text and ``image_url`` parts with base64 data URLs,
``max_tokens``, ``temperature``) and ``GET /v1/models``. ``fail_first`` makes the first N completions
answer 503, to exercise client retries.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

import base64
import binascii
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


def create_openai_app(backend: Backend, served_name: str | None = None, *, fail_first: int = 0) -> Any:
    """A FastAPI app answering chat completions with ``backend`` under the model name ``served_name``."""
    require("fastapi", extra="serve", purpose="the OpenAI-compatible test server")
    from fastapi import FastAPI, HTTPException
    from fastapi.concurrency import run_in_threadpool

    name = served_name or backend.model_id
    lock = threading.Lock()
    failures = {"left": fail_first}
    app = FastAPI(title="kuaimod OpenAI-compatible server", version="1")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        """The one served model."""
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "kuaimod"}]}

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
            (gen,) = backend.generate([Request("request", messages)], config)
        if gen.error is not None:
            raise HTTPException(500, f"generation failed: {gen.error}")
        out_tokens = gen.output_tokens or 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": "length" if out_tokens >= limit else "stop",
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
        if body.model != name:
            raise HTTPException(404, f"model {body.model!r} is not served here (serving {name!r})")
        result: dict[str, Any] = await run_in_threadpool(complete, body)
        return result

    return app
