"""Build a tiny, randomly initialised Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint offline, for smoke tests.

It uses the real ``transformers`` classes of each family (e.g. ``Qwen2VLForConditionalGeneration``
and ``Qwen2VLProcessor``; ``Qwen3VLForConditionalGeneration`` with 16-pixel patches) and a byte-level
BPE tokenizer trained on the spot, so the whole ``hf`` path (chat template, image packing, batched
generation, decoding, LoRA) runs with no download. Its answers are random tokens: verdicts come out
``unparsed`` (or a loose hint) and go to human review, which is exactly the behaviour under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kuaimod_open._lazy import require
from kuaimod_open.errors import ConfigError

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The shape of the real Qwen2-VL / Qwen2.5-VL chat template, written for this builder: a default system
# turn when the conversation has none, content given as a string or as a list of items, an item counts
# as an image when its type is "image" or it carries an "image" / "image_url" key (as a video with
# "video"), optional "Picture N: " / "Video N: " labels (add_vision_id), and the generation prompt.
# Qwen3-VL's template is the same without the default system turn.
_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' and DEFAULT_SYSTEM %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEMPLATE = _TEMPLATE.replace("DEFAULT_SYSTEM", "true")
CHAT_TEMPLATE_QWEN3 = _TEMPLATE.replace("DEFAULT_SYSTEM", "false")

# Decoding defaults as published with Qwen2.5-VL-3B/7B-Instruct (generation_config.json on the hub; the
# same values appear in PaddleMIX's deploy/qwen2_5_vl/scripts/qwen2_5_vl.sh). Real checkpoints sample
# with top_k=1 and a repetition penalty; tiny checkpoints without these fields hid that generation and
# log-probabilities go through these processors (issue #18).
QWEN25_VL_GENERATION = {
    "do_sample": True,
    "top_k": 1,
    "top_p": 0.001,
    "temperature": 0.1,
    "repetition_penalty": 1.05,
}
# The image budget of the real processors (preprocessor_config.json): Qwen2/2.5-VL min 3,136 and max
# 12,845,056 pixels (4 to 16,384 tokens of 28x28); Qwen3-VL 65,536 to 16,777,216 (32x32 tokens).
REAL_PIXELS = {"qwen2_vl": (56 * 56, 16384 * 28 * 28), "qwen3_vl": (65536, 16777216)}
# Qwen2/2.5-VL's embedding rows (151,936) exceed its tokenizer's 151,665 tokens; see build_tiny_qwen_vl.
QWEN_VOCAB_ROWS = 151936

_CORPUS = [
    "你是短视频平台的内容审核员。请根据平台规则判断视频是否违规。",
    '```json {"category": "BENIGN", "confidence": 0.9, "evidence": {"frames": [1]}, "summary": "ok"} ```',
    "正向 违法犯罪 涉政不当言行 辱骂、引战、宣扬仇恨 出售违禁品 历史虚无主义 色情低俗 不实信息",
    "危害未成年人身心健康 未成年不适当行为 夸大商品功效 引导私下交易 虚假承诺福利 炒作卖货 未添加AI标识 盗用抄袭作品",
    "Content extraction. Text analysis. Interim check. User feedback analysis. Final summary.",
    "frame 1 @ 0.00s title ocr asr comments untrusted policy category decision",
]


# transformers class prefix (Config, ForConditionalGeneration), processor and video processor per family
_CLASSES = {
    "qwen2_vl": ("Qwen2VL", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VL", "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VL", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}
ARCHITECTURES = tuple(_CLASSES)


def build_tiny_qwen2vl(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Write a tiny Qwen2-VL model + processor to ``out_dir`` and return the directory."""
    return build_tiny_qwen_vl(out_dir, arch="qwen2_vl", seed=seed, vocab_size=vocab_size)


def build_tiny_qwen_vl(
    out_dir: str | Path,
    *,
    arch: str = "qwen2_vl",
    seed: int = 0,
    vocab_size: int = 1024,
    model_vocab: int | None = None,
    generation: dict[str, Any] | None = None,
) -> Path:
    """Write a tiny Qwen2-VL, Qwen2.5-VL or Qwen3-VL model + processor to ``out_dir``; return the directory.

    About 1 MB on disk; loads with ``AutoProcessor`` / ``AutoModelForImageTextToText`` like any
    real checkpoint of that family. Where it matters for the code under test it behaves like a real
    checkpoint: Qwen2.5-VL's published sampling and penalty defaults (``generation``, default
    :data:`QWEN25_VL_GENERATION`; pass ``{}`` for none), the real processors' pixel budget, the real
    chat template's shape and end-of-turn token ids. ``model_vocab`` pads the embedding to that many
    rows (e.g. :data:`QWEN_VOCAB_ROWS`, ~80 MB) so log-softmax runs over a real-sized vocabulary; the
    default keeps the fixture small.

    Raises:
        ConfigError: ``arch`` is not one of :data:`ARCHITECTURES`, or ``model_vocab`` is smaller than the tokenizer.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown tiny-model architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    torch = require("torch", extra="hf", purpose="building the tiny test model")
    transformers = require("transformers", extra="hf", purpose="building the tiny test model")
    tokenizers = require("tokenizers", extra="hf", purpose="building the tiny test model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    template = CHAT_TEMPLATE_QWEN3 if arch == "qwen3_vl" else CHAT_TEMPLATE
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = template
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    rows = len(tokenizer) if model_vocab is None else model_vocab
    if rows < len(tokenizer):
        raise ConfigError(f"model_vocab={model_vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)")

    torch.manual_seed(seed)
    text_config = {
        "vocab_size": rows,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        # mrope sections must sum to head_dim / 2 = 64 / 4 / 2 = 8
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
    }
    special = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    # Each architecture's own config, model and processor classes; only the sizes are shrunk.
    prefix, processor_name, video_name = _CLASSES[arch]
    vision: dict[str, Any] = {"depth": 2, "num_heads": 2}
    low, high = REAL_PIXELS["qwen3_vl" if arch == "qwen3_vl" else "qwen2_vl"]
    images: dict[str, Any] = {"size": {"shortest_edge": low, "longest_edge": high}}
    if arch == "qwen2_vl":
        vision |= {"embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2}
    else:
        vision |= {"hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64}
    if arch == "qwen2_5_vl":
        vision["fullatt_block_indexes"] = [1]  # one windowed and one full-attention block, as in the real model
    if arch == "qwen3_vl":
        text_config = {**text_config, "head_dim": 16}
        text_config["rope_parameters"] = {**text_config["rope_parameters"], "mrope_interleaved": True}
        # Qwen3-VL's 16-pixel patches (Qwen2/2.5-VL use 14)
        vision |= {"patch_size": 16, "num_position_embeddings": 64, "deepstack_visual_indexes": [1]}
        images["patch_size"] = 16
    config = getattr(transformers, f"{prefix}Config")(text_config=text_config, vision_config=vision, **special)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    processor = getattr(transformers, processor_name)(
        image_processor=transformers.Qwen2VLImageProcessor(**images),
        video_processor=getattr(transformers, video_name)(),
        tokenizer=tokenizer,
        chat_template=template,
    )
    model.eval()
    gen = model.generation_config
    # Real checkpoints stop on either end token: <|im_end|> (end of turn) and <|endoftext|>.
    gen.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    gen.pad_token_id = ids["<|endoftext|>"]
    gen.bos_token_id = ids["<|endoftext|>"]
    for key, value in (QWEN25_VL_GENERATION if generation is None else generation).items():
        setattr(gen, key, value)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
