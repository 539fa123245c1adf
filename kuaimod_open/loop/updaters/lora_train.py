"""SFT then DPO of a LoRA adapter on a Qwen-VL student, with ``trl`` and ``peft``.

The student sees exactly what it sees in production: the moderation messages, with the sampled
frames as images where the sample has frames (resized by ``qwen-vl-utils`` with the same pixel
budget as :class:`~kuaimod_open.judge.backends.hf.HFBackend`) and text only where it has none. Loss is on
the answer only (trl's prompt-completion format). DPO starts from the SFT adapter and uses a frozen
copy of it as the reference (trl adds one when it is given a PEFT model).

Heavy imports (torch, transformers, trl, peft, datasets) happen inside the functions.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from kuaimod_open._lazy import require
from kuaimod_open.errors import BackendError, ConfigError
from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from kuaimod_open.judge.prompt import ImagePart, Message
from kuaimod_open.loop.updaters.tag2cot import Chain, PreferencePair

# The versions `update lora` is tested with (pyproject's [train] extra has the same floors): the code relies
# on trl's vision prompt-completion collator for SFT and DPO, and on max_length=None meaning "never truncate".
TESTED_VERSIONS = {"trl": "1.16", "peft": "0.21"}

# Attention projections of the *language* model only. Qwen-VL vision towers name theirs ``attn.qkv``
# and ``attn.proj``, so this pattern leaves the vision encoder frozen on Qwen2-, 2.5- and 3-VL.
DEFAULT_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


class LoraTrainConfig(BaseModel):
    """Training settings (recorded in the adapter's metadata)."""

    # Length in passes over the data, so that 30 cases are not seen 50 times and 5,000 not a tenth of a time.
    epochs: float = Field(default=2.0, gt=0, description="SFT passes over the kept chains")
    dpo_epochs: float | None = Field(
        default=None, ge=0, description="DPO passes over the pairs; default: epochs; 0 skips"
    )
    max_steps: int = Field(default=1000, ge=1, description="safety cap on optimizer steps per stage (SFT, DPO)")
    learning_rate: float = Field(default=1e-4, gt=0)
    dpo_learning_rate: float | None = Field(default=None, gt=0, description="default: learning_rate / 2")
    dpo_beta: float = Field(default=0.1, gt=0)
    rank: int = Field(default=16, ge=1)
    alpha: int | None = Field(default=None, ge=1, description="default: 2 * rank")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str = DEFAULT_TARGET_MODULES
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=4, ge=1)
    max_length: int | None = Field(
        default=None,
        ge=64,
        description="skip examples longer than this many tokens (prompt + frames + answer); None: keep all. "
        "Never truncated: a cut would drop answer tokens or image placeholders",
    )
    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: bool | None = Field(default=None, description="default: on for GPU, off for CPU")
    min_pixels: int = DEFAULT_MIN_PIXELS  # the pixel budget of inference (hf, and openai client-side)
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    progress: bool = False


class TrainResult(BaseModel):
    """What training did: losses per logged step and how many LoRA tensors each stage changed."""

    sft_losses: list[float]
    dpo_losses: list[float]
    dpo_reward_accuracy: float | None = None
    lora_tensors: int
    changed_by_sft: int
    changed_by_dpo: int
    sft_examples: int
    dpo_pairs: int
    device: str
    seconds: float
    sft_steps: int | None = None
    dpo_steps: int | None = None
    sft_epochs: float | None = Field(default=None, description="passes actually made (below --epochs when capped)")
    dpo_epochs: float | None = None
    skipped_too_long: int = Field(default=0, description="SFT examples and DPO pairs over max_length, not trained on")
    longest_tokens: int | None = Field(default=None, description="the longest example measured, in tokens")


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Refuse to train with a trl or peft older than :data:`TESTED_VERSIONS` (``installed``: name -> version).

    Raises:
        ConfigError: a package is older than what was tested, with the pip line that fixes it.
    """
    from importlib.metadata import version as installed_version

    from packaging.version import Version

    for name, floor in TESTED_VERSIONS.items():
        have = (installed or {}).get(name) or installed_version(name)
        if Version(have) < Version(floor):
            raise ConfigError(
                f"{name} {have} is installed, but `update lora` needs {name}>={floor} (tested with it): "
                f"pip install --upgrade '{name}>={floor}'"
            )


def _use_cuda(torch: Any, device: str) -> bool:
    if device.startswith("cuda:"):
        raise ConfigError(
            f"--device {device}: training uses the visible GPU(s); "
            "pick one with CUDA_VISIBLE_DEVICES=N and --device cuda"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA GPU is visible; use --device cpu (slow) or auto")
    return device != "cpu" and bool(torch.cuda.is_available())


def _conversation(messages: Sequence[Message], load_image: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Our messages as trl conversational messages, with image placeholders where the frames are."""
    turns, images = [], []
    for message in messages:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "image", "text": None})
                images.append(load_image(part.path))
            else:
                content.append({"type": "text", "text": part})
        turns.append({"role": message.role, "content": content})
    return turns, images


def _answer(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def plan_steps(examples: int, epochs: float, config: LoraTrainConfig) -> tuple[int, float]:
    """Optimizer steps for ``epochs`` passes over ``examples`` (as the trainer counts them), capped; and the epochs run.

    One step takes ``batch_size x grad_accum`` examples; the last, short batch of an epoch still counts.
    """
    if examples <= 0 or epochs <= 0:
        return 0, 0.0
    per_epoch = math.ceil(math.ceil(examples / config.batch_size) / config.grad_accum)
    steps = min(config.max_steps, max(1, math.ceil(epochs * per_epoch)))
    return steps, round(steps / per_epoch, 3)


def _token_length(processor: Any, conversation: list[dict[str, Any]], images: list[Any]) -> int:
    """Tokens of a whole training example as the model sees it: chat template, image tokens expanded."""
    text = processor.apply_chat_template(conversation, tokenize=False)
    encoded = processor(text=[text], images=images or None, return_tensors="pt")
    return int(encoded["input_ids"].shape[1])


def _dataset(datasets: Any, rows: list[dict[str, Any]]) -> Any:
    # A dataset with an "images" column takes trl's vision path; drop it when no example has a frame.
    if not any(row["images"] for row in rows):
        rows = [{k: v for k, v in row.items() if k != "images"} for row in rows]
    return datasets.Dataset.from_list(rows)


def _lora_state(torch: Any, model: Any) -> dict[str, Any]:
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if "lora_" in name and ".default." in name
    }


def _changed(torch: Any, before: dict[str, Any], model: Any) -> int:
    after = dict(model.named_parameters())
    return sum(not torch.equal(value, after[name].detach().to("cpu")) for name, value in before.items())


def _quiet(transformers: Any, trainer: Any, config: LoraTrainConfig) -> None:
    # Without a progress bar, transformers prints every log dict; the losses are returned instead.
    if not config.progress:
        trainer.remove_callback(transformers.PrinterCallback)


def _checkpointing_flag(trl: Any) -> str:
    names = {f.name for f in dataclasses.fields(trl.SFTConfig)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _losses(history: list[dict[str, Any]]) -> list[float]:
    return [round(float(entry["loss"]), 6) for entry in history if "loss" in entry]


def train_lora(
    base_model: str,
    chains: Sequence[Chain],
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    config: LoraTrainConfig | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``chains`` (SFT) then ``pairs`` (DPO) and save it to ``out_dir``.

    Raises:
        ConfigError: nothing to train on, or an unusable device.
        BackendError: the base model cannot be loaded.
        MissingDependencyError: the ``train`` or ``hf`` extra is not installed.
    """
    config = config or LoraTrainConfig()
    if not chains:
        raise ConfigError("no training chains: nothing to fine-tune on")
    torch = require("torch", extra="hf", purpose="LoRA training")
    transformers = require("transformers", extra="hf", purpose="LoRA training")
    vision = require("qwen_vl_utils", extra="hf", purpose="Qwen-VL image preprocessing", package="qwen-vl-utils")
    peft = require("peft", extra="train", purpose="LoRA training")
    trl = require("trl", extra="train", purpose="SFT and DPO training")
    datasets = require("datasets", extra="train", purpose="SFT and DPO training")
    check_versions()
    started = time.perf_counter()
    cuda = _use_cuda(torch, config.device)
    dtype = torch.float32
    if config.dtype != "auto":
        dtype = getattr(torch, config.dtype)
    elif cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        processor = transformers.AutoProcessor.from_pretrained(base_model)
        model = transformers.AutoModelForImageTextToText.from_pretrained(base_model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"Cannot load base model '{base_model}': {exc}. Pass a hub id (needs network access) or a local "
            "checkpoint directory."
        ) from None
    patch = int(getattr(processor.image_processor, "patch_size", 14) or 14)

    def load_image(path: Path) -> Any:
        # Same resizing as inference (HFBackend), so the adapter learns on the pixels it will see.
        element = {"image": str(Path(path).resolve()), "min_pixels": config.min_pixels, "max_pixels": config.max_pixels}
        return vision.fetch_image(element, image_patch_size=patch)

    # Lengths are measured before training, on the full example (frames expanded to their image tokens):
    # one over max_length is skipped and counted, never truncated, since a cut from the end drops the
    # answer the loss is on, and a cut anywhere else can split an image's placeholder tokens.
    longest, skipped = 0, 0

    def fits(prompt: list[dict[str, Any]], answers: list[str], images: list[Any]) -> bool:
        nonlocal longest, skipped
        length = max(_token_length(processor, prompt + _answer(a), images) for a in answers)
        longest = max(longest, length)
        if config.max_length is not None and length > config.max_length:
            skipped += 1
            return False
        return True

    sft_rows = []
    for chain in chains:
        prompt, images = _conversation(chain.messages, load_image)
        if fits(prompt, [chain.answer], images):
            sft_rows.append({"prompt": prompt, "completion": _answer(chain.answer), "images": images})
    dpo_rows = []
    for pair in pairs:
        prompt, images = _conversation(pair.messages, load_image)
        if fits(prompt, [pair.chosen, pair.rejected], images):
            dpo_rows.append(
                {"prompt": prompt, "chosen": _answer(pair.chosen), "rejected": _answer(pair.rejected), "images": images}
            )
    if not sft_rows:
        raise ConfigError(
            f"all {len(chains)} training chains are longer than --max-length {config.max_length} tokens "
            f"(the longest has {longest}); raise --max-length, or lower --frames / the pixel budget"
        )
    sft_steps, sft_epochs = plan_steps(len(sft_rows), config.epochs, config)
    dpo_epochs_wanted = config.epochs if config.dpo_epochs is None else config.dpo_epochs
    dpo_steps, dpo_epochs = plan_steps(len(dpo_rows), dpo_epochs_wanted, config)

    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha or 2 * config.rank,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
    )
    checkpointing = cuda if config.gradient_checkpointing is None else config.gradient_checkpointing
    common: dict[str, Any] = {
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "max_length": None,  # every example was measured and fits: the trainer must never truncate
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": not cuda,
        "bf16": cuda and dtype == torch.bfloat16,
        "fp16": cuda and dtype == torch.float16,
        # transformers 5.x renamed the flag (the old name warns and goes away in v6); 4.x knows only the old one.
        _checkpointing_flag(trl): checkpointing,
        "remove_unused_columns": False,  # the vision collator needs the raw "images" column
        "seed": config.seed,
        "disable_tqdm": not config.progress,
    }
    with tempfile.TemporaryDirectory(prefix="kuaimod-lora-") as work:
        sft = trl.SFTTrainer(
            model=model,
            args=trl.SFTConfig(
                output_dir=str(Path(work) / "sft"),
                max_steps=sft_steps,
                learning_rate=config.learning_rate,
                **common,
            ),
            train_dataset=_dataset(datasets, sft_rows),
            processing_class=processor,
            peft_config=lora,
        )
        _quiet(transformers, sft, config)
        initial = _lora_state(torch, sft.model)
        sft.train()
        peft_model = sft.model
        changed_sft = _changed(torch, initial, peft_model)
        sft_losses = _losses(sft.state.log_history)
        del sft

        dpo_losses: list[float] = []
        reward_accuracy = None
        changed_dpo = 0
        if dpo_rows and dpo_steps > 0:
            after_sft = _lora_state(torch, peft_model)
            dpo = trl.DPOTrainer(
                model=peft_model,
                args=trl.DPOConfig(
                    output_dir=str(Path(work) / "dpo"),
                    max_steps=dpo_steps,
                    learning_rate=config.dpo_learning_rate or config.learning_rate / 2,
                    beta=config.dpo_beta,
                    **common,
                ),
                train_dataset=_dataset(datasets, dpo_rows),
                processing_class=processor,
            )
            _quiet(transformers, dpo, config)
            dpo.train()
            peft_model = dpo.model
            changed_dpo = _changed(torch, after_sft, peft_model)
            dpo_losses = _losses(dpo.state.log_history)
            accuracies = [e["rewards/accuracies"] for e in dpo.state.log_history if "rewards/accuracies" in e]
            reward_accuracy = round(float(accuracies[-1]), 4) if accuracies else None
            del dpo
    # trl's frozen reference copy must not ship with the adapter.
    if "ref" in peft_model.peft_config:
        peft_model.delete_adapter("ref")
    peft_model.set_adapter("default")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    result = TrainResult(
        sft_losses=sft_losses,
        dpo_losses=dpo_losses,
        dpo_reward_accuracy=reward_accuracy,
        lora_tensors=len(initial),
        changed_by_sft=changed_sft,
        changed_by_dpo=changed_dpo,
        sft_examples=len(sft_rows),
        dpo_pairs=len(dpo_rows),
        device="cuda" if cuda else "cpu",
        seconds=round(time.perf_counter() - started, 2),
        sft_steps=sft_steps,
        dpo_steps=dpo_steps if dpo_rows else 0,
        sft_epochs=sft_epochs,
        dpo_epochs=dpo_epochs if dpo_rows else 0.0,
        skipped_too_long=skipped,
        longest_tokens=longest,
    )
    del peft_model, model
    release_memory()
    return result


def release_memory() -> None:
    """Free what a finished model left behind (the gate loads two more models next)."""
    gc.collect()
    torch = require("torch", extra="hf", purpose="LoRA training")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "TESTED_VERSIONS",
    "LoraTrainConfig",
    "TrainResult",
    "check_versions",
    "plan_steps",
    "release_memory",
    "train_lora",
]
