"""GPU memory of hf inference per Qwen2.5-VL size and batch size: an estimate from the published architectures.

    python bench/memory_estimate.py --prompt-tokens 6582 --new-tokens 1024

Not a measurement (no GPU here): the arithmetic a reader can check, to size ``--batch-size`` before the
first real run, which then measures the peak (``bench/gpu_run.sh`` reports ``torch.cuda.max_memory_allocated``).

- weights: parameters x 2 bytes (bf16). Parameters are counted from each checkpoint's published
  ``config.json`` dimensions (below): embeddings (+ an untied output layer), per decoder layer the
  q/k/v/o projections with their biases and the gated MLP, plus the vision tower (32 blocks of 1,280
  with a 3,420 gated MLP) and its patch merger.
- KV cache: 2 (K and V) x layers x KV heads x head dim x 2 bytes per token, for prompt + new tokens, per
  sample. ``generate`` pads a batch to its longest prompt.
- prefill working memory: the largest transient of one decoder layer over the whole batched prompt,
  the gated MLP's three (batch, tokens, intermediate) tensors plus a few (batch, tokens, hidden)
  ones, in bf16; attention through SDPA/flash keeps no (tokens x tokens) matrix; ``logits_to_keep=1``
  keeps logits for the last position only.
- overhead: 1 GiB for the CUDA context, allocator fragmentation and the vision tower's activations.
"""

from __future__ import annotations

import argparse

GIB = 1024**3

# Published text-model dimensions of Qwen2.5-VL-{3B,7B,32B,72B}-Instruct (config.json on the hub):
# hidden, layers, attention heads, KV heads, intermediate, vocabulary, tied embeddings.
MODELS = {
    "Qwen2.5-VL-3B": (2048, 36, 16, 2, 11008, 151936, True),
    "Qwen2.5-VL-7B": (3584, 28, 28, 4, 18944, 152064, False),
    "Qwen2.5-VL-32B": (5120, 64, 40, 8, 27648, 152064, False),
    "Qwen2.5-VL-72B": (8192, 80, 64, 8, 29568, 152064, False),
}
VISION = (1280, 32, 3420)  # hidden, blocks, MLP intermediate (the same tower in every size)
BYTES = 2  # bf16


def parameters(hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int, tied: bool) -> int:
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    attention = hidden * hidden + hidden + 2 * (hidden * kv + kv) + hidden * hidden
    mlp = 3 * hidden * inter
    text = layers * (attention + mlp + 2 * hidden) + vocab * hidden * (1 if tied else 2) + hidden
    v_hidden, v_blocks, v_inter = VISION
    vision = v_blocks * (4 * v_hidden * v_hidden + 3 * v_hidden * v_inter) + 14 * 14 * 3 * 2 * v_hidden
    merger = (4 * v_hidden) ** 2 + 4 * v_hidden * hidden
    return text + vision + merger


def kv_per_token(hidden: int, layers: int, heads: int, kv_heads: int) -> int:
    return 2 * layers * kv_heads * (hidden // heads) * BYTES


def prefill(hidden: int, inter: int, batch: int, tokens: int) -> int:
    return batch * tokens * (3 * inter + 4 * hidden) * BYTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=6582, help="longest prompt of a batch")
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    seq = args.prompt_tokens + args.new_tokens
    print(f"prompt {args.prompt_tokens} + {args.new_tokens} new tokens per sample; GiB; estimate, not measured\n")
    print("| model | params | weights | KV / sample | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(args.batches))
    for name, (hidden, layers, heads, kv_heads, inter, vocab, tied) in MODELS.items():
        params = parameters(hidden, layers, heads, kv_heads, inter, vocab, tied)
        weights = params * BYTES
        kv = kv_per_token(hidden, layers, heads, kv_heads) * seq
        totals = [(weights + b * kv + prefill(hidden, inter, b, args.prompt_tokens)) / GIB + 1 for b in args.batches]
        cells = " | ".join(f"{t:.1f}" for t in totals)
        print(f"| {name} | {params / 1e9:.2f} B | {weights / GIB:.1f} | {kv / GIB:.2f} | {cells} |")


if __name__ == "__main__":
    main()
