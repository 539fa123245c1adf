"""The tiny checkpoints behave like real ones where the code depends on it (issue #18 item 13)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.hf


def test_tiny_checkpoint_carries_qwen25_vl_generation_defaults(tiny_model):
    import transformers

    config = transformers.GenerationConfig.from_pretrained(tiny_model)
    assert config.do_sample is True
    assert (config.top_k, config.top_p, config.temperature, config.repetition_penalty) == (1, 0.001, 0.1, 1.05)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    ends = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    assert set(config.eos_token_id) == ends  # both end tokens, as real checkpoints list them


def test_tiny_processor_has_the_real_pixel_budget(tiny_model):
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(tiny_model)
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (3136, 12845056)  # 4 to 16,384 tokens of 28x28


def test_tiny_chat_template_has_the_real_shape(tiny_model):
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(tiny_model)
    items = [{"type": "image", "image": "a.jpg"}, {"image_url": "b"}, {"type": "text", "text": "hi"}]
    user = {"role": "user", "content": items}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True, add_vision_id=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Picture 1: <|vision_start|><|image_pad|><|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>"
        "hi<|im_end|>\n<|im_start|>assistant\n"
    )
    system = {"role": "system", "content": "policy"}
    assert processor.apply_chat_template([system, user], tokenize=False).startswith(
        "<|im_start|>system\npolicy<|im_end|>\n"
    )


def test_tiny_checkpoint_can_have_a_real_sized_vocabulary_and_a_bare_config(tmp_path):
    import transformers

    from kuaimod_open.judge.backends.tiny import QWEN_VOCAB_ROWS, build_tiny_qwen_vl

    path = build_tiny_qwen_vl(tmp_path / "big", model_vocab=QWEN_VOCAB_ROWS, generation={})
    model = transformers.AutoModelForImageTextToText.from_pretrained(path)
    assert model.get_output_embeddings().weight.shape[0] == QWEN_VOCAB_ROWS
    assert transformers.GenerationConfig.from_pretrained(path).top_k in (None, 50)  # no Qwen sampling fields
