"""Local Qwen-VL inference through ``transformers`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

The official preprocessing path is used end to end: ``AutoProcessor`` and its chat template,
``qwen_vl_utils.process_vision_info`` for resizing the frames, ``AutoModelForImageTextToText``
for the model. Frames arrive as image files we sampled ourselves (with timestamps), so the
qwen-vl-utils video reader is never involved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import BackendError
from kuaimod_open.judge.backends.base import GenerateConfig, Generation, Request
from kuaimod_open.judge.prompt import ImagePart, Message


def _check_reachable(model: str) -> None:
    """Fail in seconds when ``model`` must come from the hub and the hub cannot be reached.

    A hub id that is neither a local folder nor in the Hugging Face cache is downloaded; offline, the hub
    client would retry for minutes before failing. One short request (it honours the proxy settings)
    tells first. Raises :class:`BackendError` with the offline way out.
    """
    if Path(model).exists():
        return
    hub = require("huggingface_hub", extra="hf", purpose="the hf backend")
    try:
        cached = hub.try_to_load_from_cache(model, "config.json")
    except Exception:  # an id the cache cannot even name (e.g. a typo'd path): let transformers explain
        return
    if isinstance(cached, str):
        return  # in the cache: transformers loads it, offline too
    endpoint = str(hub.constants.ENDPOINT)
    if hub.constants.HF_HUB_OFFLINE:
        why = "the hub is switched off (HF_HUB_OFFLINE=1)"
    elif not _answers(endpoint):
        why = f"the hub ({endpoint}) cannot be reached"
    else:
        return
    raise BackendError(
        f"Cannot load model '{model}': it is not a local directory, not in the Hugging Face cache, and {why}. "
        "Pass a local checkpoint directory with --model, or try the pipeline offline with a tiny test model: "
        "`kuaimod tiny-model /tmp/tiny` then `--model /tmp/tiny`."
    )


def _answers(url: str, timeout: float = 5.0) -> bool:
    """Whether a server answers at ``url`` at all (any HTTP status counts) within ``timeout`` seconds."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only to say no
    except (OSError, ValueError):  # DNS failure, refused, timed out, no route, a malformed endpoint
        return False


class HFBackend:
    """A Qwen-VL checkpoint by hub id or local directory, with an optional PEFT LoRA adapter."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        min_pixels: int = 64 * 28 * 28,
        max_pixels: int = 448 * 28 * 28,
        attn_implementation: str | None = None,
    ) -> None:
        _check_reachable(model)  # before torch loads: offline, the answer takes a second, not a minute
        self.torch = require("torch", extra="hf", purpose="the hf backend")
        transformers = require("transformers", extra="hf", purpose="the hf backend")
        self.vision = require(
            "qwen_vl_utils", extra="hf", purpose="Qwen-VL image preprocessing", package="qwen-vl-utils"
        )
        self.model_id = model
        self.adapter = adapter
        self.device = self._pick_device(device)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        torch_dtype = self._pick_dtype(dtype)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(model)
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(model, **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"Cannot load model '{model}': {exc}. Pass a Hugging Face hub id (needs network access) "
                "or a local checkpoint directory; `kuaimod tiny-model DIR` builds an offline test model."
            ) from None
        if adapter:
            peft = require("peft", extra="train", purpose="loading a LoRA adapter")
            if not Path(adapter).exists():
                raise BackendError(f"LoRA adapter directory not found: {adapter}")
            self.model = peft.PeftModel.from_pretrained(self.model, adapter)
        self.model.to(self.device).eval()
        # Decoder-only batching needs left padding so every prompt ends where generation starts.
        self.processor.tokenizer.padding_side = "left"
        # Qwen3-VL uses 16-pixel patches, Qwen2/2.5-VL 14; qwen-vl-utils must resize to match.
        self.patch_size = int(getattr(self.processor.image_processor, "patch_size", 14) or 14)

    def _pick_device(self, device: str) -> str:
        if device != "auto":
            return device
        if self.torch.cuda.is_available():
            return "cuda"
        return "cpu"

    def _pick_dtype(self, dtype: str) -> Any:
        if dtype != "auto":
            return getattr(self.torch, dtype)
        if self.device.startswith("cuda"):
            return self.torch.bfloat16 if self.torch.cuda.is_bf16_supported() else self.torch.float16
        return self.torch.float32  # bf16 matmuls are slow or unsupported on many CPUs

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        """Generate in batches of ``config.batch_size``; a failing batch is retried in halves."""
        results: list[Generation] = []
        for start in range(0, len(requests), max(1, config.batch_size)):
            results.extend(self._generate_safely(list(requests[start : start + config.batch_size]), config))
        return results

    def _generate_safely(self, batch: list[Request], config: GenerateConfig) -> list[Generation]:
        try:
            return self._generate_batch(batch, config)
        except self.torch.cuda.OutOfMemoryError:
            self.torch.cuda.empty_cache()
            if len(batch) == 1:
                return [Generation(error="out of GPU memory on a single request; lower --frames or max_pixels")]
        except Exception as exc:  # one bad input (unreadable image...) must not sink the batch
            if len(batch) == 1:
                return [Generation(error=f"{type(exc).__name__}: {exc}"[:500])]
        mid = len(batch) // 2
        return self._generate_safely(batch[:mid], config) + self._generate_safely(batch[mid:], config)

    def _generate_batch(self, batch: list[Request], config: GenerateConfig) -> list[Generation]:
        torch = self.torch
        conversations = [self._to_qwen(r.messages) for r in batch]
        texts = [
            self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        images, _ = self.vision.process_vision_info(conversations, image_patch_size=self.patch_size)
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        started = time.perf_counter()
        sampling: dict[str, Any] = {"do_sample": False}
        if config.temperature > 0:
            sampling = {"do_sample": True, "temperature": config.temperature}
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=config.max_new_tokens,
                output_scores=config.logprobs,
                return_dict_in_generate=True,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                **sampling,
            )
        elapsed = time.perf_counter() - started
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        logprobs = None
        if config.logprobs and out.scores:
            # scores[t] is (batch, vocab) for step t; log-softmax gives each chosen token's log-prob.
            steps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1)
            logprobs = steps.gather(-1, new_tokens[:, : steps.shape[1], None]).squeeze(-1)
        eos = {self.processor.tokenizer.pad_token_id, self.processor.tokenizer.eos_token_id}
        results = []
        for i, request_tokens in enumerate(new_tokens):
            ids = [int(t) for t in request_tokens if int(t) not in eos]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            token_lp = None
            if logprobs is not None:
                token_lp = tuple(
                    (self.processor.tokenizer.decode([int(t)]), float(lp))
                    for t, lp in zip(request_tokens, logprobs[i], strict=False)
                    if int(t) not in eos
                )
            results.append(
                Generation(
                    text=text,
                    input_tokens=int(inputs["attention_mask"][i].sum()),
                    output_tokens=len(ids),
                    latency_s=elapsed / len(batch),
                    token_logprobs=token_lp,
                )
            )
        return results

    def _to_qwen(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        conversation = []
        for message in messages:
            content: list[dict[str, Any]] = []
            for part in message.parts:
                if isinstance(part, ImagePart):
                    content.append(
                        {
                            "type": "image",
                            "image": str(Path(part.path).resolve()),
                            "min_pixels": self.min_pixels,
                            "max_pixels": self.max_pixels,
                        }
                    )
                else:
                    content.append({"type": "text", "text": part})
            conversation.append({"role": message.role, "content": content})
        return conversation
