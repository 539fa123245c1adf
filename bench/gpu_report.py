"""The one report of ``bench/gpu_run.sh``: reads its output folder, prints Markdown and writes ``report.json``.

python bench/gpu_report.py runs/gpu_run-20261203-120000
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _shares(verdicts: list[dict[str, Any]], key: str) -> dict[str, float]:
    counts = Counter(str(v.get(key)) for v in verdicts)
    return {k: round(c / len(verdicts), 3) for k, c in counts.most_common()}


def moderation(verdicts: list[dict[str, Any]], seconds: float | None) -> dict[str, Any]:
    """Shares, throughput and token counts of one moderate run."""
    if not verdicts:
        return {}
    out_tokens = [v["output_tokens"] for v in verdicts if v.get("output_tokens")]
    in_tokens = [v["input_tokens"] for v in verdicts if v.get("input_tokens")]
    result: dict[str, Any] = {
        "videos": len(verdicts),
        "status_shares": _shares(verdicts, "status"),
        "review_share": round(sum(v["decision"] == "review" for v in verdicts) / len(verdicts), 3),
        "truncated": sum("truncated_answer" in v.get("flags", []) for v in verdicts),
        "median_input_tokens": statistics.median(in_tokens) if in_tokens else None,
        "median_output_tokens": statistics.median(out_tokens) if out_tokens else None,
    }
    if seconds:
        # Wall time of the whole command (model load included): a floor on steady-state throughput.
        result["seconds"] = round(seconds, 1)
        result["videos_per_s"] = round(len(verdicts) / seconds, 3)
        result["output_tokens_per_s"] = round(sum(out_tokens) / seconds, 1) if out_tokens else None
    return result


def main() -> None:
    out = Path(sys.argv[1])
    steps = {s["step"]: s for s in _lines(out / "steps.jsonl")}
    env = json.loads((out / "env.json").read_text(encoding="utf-8")) if (out / "env.json").is_file() else {}
    server = json.loads((out / "server.json").read_text(encoding="utf-8")) if (out / "server.json").is_file() else {}
    report: dict[str, Any] = {"environment": env, "steps": list(steps.values())}

    def seconds(name: str) -> float | None:
        value = steps.get(name, {}).get("seconds")
        return float(value) if value is not None else None

    hf = _lines(out / "hf_clips" / "verdicts.jsonl")
    served = _lines(out / "served_clips" / "verdicts.jsonl")
    report["hf_clips"] = moderation(hf, seconds("hf_clips"))
    report["served_clips"] = {**moderation(served, seconds("served_clips")), "server": server.get("server")}
    # The same prompt through both paths must cost the same tokens: same template, same pixels.
    by_id = {v["sample_id"]: v.get("input_tokens") for v in hf}
    pairs = [(by_id.get(v["sample_id"]), v.get("input_tokens")) for v in served if v["sample_id"] in by_id]
    report["served_vs_hf_prompt_tokens"] = [{"hf": a, "served": b} for a, b in pairs]

    eval_report = out / "eval" / "report.json"
    if eval_report.is_file():
        r = json.loads(eval_report.read_text(encoding="utf-8"))
        verdicts = _lines(out / "eval" / "verdicts.jsonl")
        report["eval"] = {
            "n": r["n"],
            "category_accuracy": round(r["category_accuracy"], 3),
            "strict_binary_accuracy": round(r["strict_binary"]["accuracy"], 3),
            "review_share": round(r["review_share"], 3),
            "status_shares": {k: round(v / r["n"], 3) for k, v in r["statuses"].items()},
            **{
                k: v
                for k, v in moderation(verdicts, seconds("eval")).items()
                if k.endswith("_per_s") or k == "median_input_tokens"
            },
        }
    log = out / "logs" / "lora_update.log"
    gates = sorted((out / "lora" / "adapters").glob("*/gate.json")) if (out / "lora" / "adapters").is_dir() else []
    report["lora"] = {
        "output": [
            x
            for x in (log.read_text(encoding="utf-8").splitlines() if log.is_file() else [])
            if x.startswith(("data:", "train:", "adapter:", "watermark")) or "adapter" in x
        ],
        "gate": json.loads(gates[-1].read_text(encoding="utf-8")) if gates else None,
    }
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")

    print(f"# GPU run report: {out}\n")
    gpus = env.get("gpus") or ["none (CPU only: the real-GPU steps were skipped)"]
    print(f"- model {env.get('model')}, GPU {', '.join(gpus)}, vLLM {env.get('vllm') or 'not installed'}")
    versions = ", ".join(f"{k} {env.get(k)}" for k in ("torch", "transformers", "trl", "peft") if env.get(k))
    print(f"- {versions}\n")
    print("| step | status | seconds | peak GPU MiB |")
    print("|---|---|---:|---:|")
    for s in steps.values():
        status = s["status"] if s["status"] != "skipped" else f"skipped: {s.get('why', '')}"
        took = f"{float(s['seconds']):.1f}" if s.get("seconds") is not None else ""
        print(f"| {s['step']} | {status} | {took} | {s.get('peak_gpu_mib') or 'n/a'} |")
    print("\n| run | videos | status shares | review share | videos/s | output tokens/s | median prompt tokens |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in ("hf_clips", "served_clips", "eval"):
        m = report.get(name) or {}
        if name == "eval" and m:
            m = {**m, "videos": m["n"]}
        if not m.get("videos"):
            continue
        label = f"{name} ({m['server']})" if m.get("server") else name
        print(
            f"| {label} | {m['videos']} | {m.get('status_shares')} | {m.get('review_share')} | "
            f"{m.get('videos_per_s', '')} | {m.get('output_tokens_per_s', '')} | {m.get('median_input_tokens', '')} |"
        )
    if pairs:
        same = sum(a == b for a, b in pairs)
        print(f"\nPrompt tokens hf vs served, same clip: {same} of {len(pairs)} equal {pairs}")
    if "eval" in report:
        e = report["eval"]
        print(
            f"\nEval on {e['n']} rows: category accuracy {e['category_accuracy']}, strict binary accuracy "
            f"{e['strict_binary_accuracy']}, review share {e['review_share']}"
        )
    print("\nLoRA update:")
    for line in report["lora"]["output"]:
        print(f"    {line}")
    gate = report["lora"]["gate"]
    if gate:
        print(f"Gate: passed={gate['passed']}; " + "; ".join(gate["reasons"]))
    else:
        print("Gate: not run (no adapter was trained)")


if __name__ == "__main__":
    main()
