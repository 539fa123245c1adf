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
from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from kuaimod_open.judge.prompt import ImagePart, Message


class HFBackend:
    """A Qwen-VL checkpoint by hub id or local directory, with an optional PEFT LoRA adapter.

    ``device="auto"`` loads with ``device_map="auto"``: the weights are spread over every visible GPU
    (and CPU memory when they do not fit), so a teacher larger than one GPU still loads. An explicit
    device (``cuda``, ``cuda:1``, ``cpu``) puts the whole model there.
    """

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        attn_implementation: str | None = None,
    ) -> None:
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
        if device == "auto":
            kwargs["device_map"] = "auto"
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
        if "device_map" in kwargs:
            self.device = str(self.model.device)  # inputs go where the first layers are
        else:
            self.model.to(self.device)
        self.model.eval()
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
        # Explicit, because the checkpoint's generation_config decides otherwise: Qwen2.5-VL ships
        # do_sample=True with top_k=1. Its top_k/top_p/repetition penalty still apply to sampling.
        sampling: dict[str, Any] = {"do_sample": False}
        if config.temperature > 0:
            sampling = {"do_sample": True, "temperature": config.temperature}
        recorder = _raw_logprob_recorder(torch, self.model) if config.logprobs else None
        extra: dict[str, Any] = {"stopping_criteria": [recorder.criterion]} if recorder is not None else {}
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=config.max_new_tokens,
                    return_dict_in_generate=True,
                    pad_token_id=self.processor.tokenizer.pad_token_id,
                    **sampling,
                    **extra,
                )
        finally:
            if recorder is not None:
                recorder.remove()
        elapsed = time.perf_counter() - started
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        logprobs = recorder.logprobs() if recorder is not None else None
        eos = self._end_tokens()
        pad = self.processor.tokenizer.pad_token_id
        # Rows that produced no end token in max_new_tokens steps were cut off mid-answer.
        at_limit = new_tokens.shape[1] >= config.max_new_tokens
        results = []
        for i, request_tokens in enumerate(new_tokens):
            tokens = [int(t) for t in request_tokens]
            ids = [t for t in tokens if t not in eos and t != pad]
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            token_lp = None
            if logprobs is not None:
                token_lp = tuple(
                    (self.processor.tokenizer.decode([t]), float(lp))
                    for t, lp in zip(tokens, logprobs[i].tolist(), strict=False)
                    if t not in eos and t != pad
                )
            results.append(
                Generation(
                    text=text,
                    input_tokens=int(inputs["attention_mask"][i].sum()),
                    output_tokens=len(ids),
                    latency_s=elapsed / len(batch),
                    token_logprobs=token_lp,
                    truncated=at_limit and not eos.intersection(tokens),
                )
            )
        return results

    def _end_tokens(self) -> set[int]:
        """Every token id that ends a turn: the tokenizer's and the generation config's (often a list)."""
        ids = {self.processor.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {int(i) for i in ids if i is not None}

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


class _RawLogprobs:
    """Each generated token's log-probability under the model's raw logits, at O(batch x vocab) memory.

    ``generate(output_scores=True)`` would keep a float32 (batch, vocab) tensor for every step (~0.6 MB
    per token per sample for Qwen's 152k vocabulary) and, worse, those scores come *after* the logits
    processors: with Qwen2.5-VL's shipped top_k=1 every sampled token has log-probability 0.0. Instead a
    forward hook on the output layer keeps only the current step's log-softmax, and a stopping criterion
    (called once per step, after the chosen token is appended) reads the chosen token's value and drops it.
    """

    def __init__(self, torch: Any, output_layer: Any, criterion_base: type) -> None:
        self.torch = torch
        self.current: Any = None
        self.steps: list[Any] = []
        self.handle = output_layer.register_forward_hook(self._hook)
        recorder = self

        class _Criterion(criterion_base):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                recorder._take(input_ids)
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        self.criterion = _Criterion()

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        logits = output[:, -1, :] if output.dim() == 3 else output
        self.current = self.torch.log_softmax(logits.float(), dim=-1)

    def _take(self, input_ids: Any) -> None:
        if self.current is None:
            return
        chosen = input_ids[:, -1:].to(self.current.device)
        self.steps.append(self.current.gather(-1, chosen).squeeze(-1).cpu())
        self.current = None

    def logprobs(self) -> Any:
        """(batch, steps) log-probabilities of the generated tokens."""
        return self.torch.stack(self.steps, dim=1) if self.steps else None

    def remove(self) -> None:
        """Detach the hook (always, even when generation failed)."""
        self.handle.remove()
        self.current = None


def _raw_logprob_recorder(torch: Any, model: Any) -> _RawLogprobs:
    transformers = require("transformers", extra="hf", purpose="the hf backend")
    return _RawLogprobs(torch, model.get_output_embeddings(), transformers.StoppingCriteria)
