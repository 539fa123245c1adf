"""Measure the prompt-injection detector: detection on the attack corpus, false positives on real text.

    python eval/injection_eval.py --data ../shared/data/kuaimod_dev.jsonl

The corpus (tests/data/injection_corpus.jsonl) holds attacks in Chinese and English across title, OCR,
ASR and comments, plus hard negatives (ordinary text with similar words). False positives are
counted on the benchmark rows' real title/OCR/ASR text, where no row is an injection attempt.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kuaimod_open.ingest.benchmark import load_benchmark  # noqa: E402
from kuaimod_open.ingest.sample import Sample  # noqa: E402
from kuaimod_open.judge.injection import detect  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kuaimod_dev.jsonl"))
    parser.add_argument("--corpus", default=str(REPO / "tests" / "data" / "injection_corpus.jsonl"))
    args = parser.parse_args()
    cases = [json.loads(x) for x in Path(args.corpus).read_text(encoding="utf-8").splitlines() if x.strip()]
    caught, missed, fields, rules = 0, [], Counter(), Counter()
    hard_fp = 0
    for case in cases:
        value = (case["text"],) if case["field"] == "comments" else case["text"]
        hits = detect(Sample(id="c", **{case["field"]: value}))
        if case["attack"]:
            fields[case["field"]] += 1
            if hits:
                caught += 1
                rules.update(h.rule for h in hits)
            else:
                missed.append(case["text"])
        elif hits:
            hard_fp += 1
    attacks = sum(c["attack"] for c in cases)
    negatives = len(cases) - attacks
    dev = load_benchmark(args.data)
    flagged = [(s.id, [(h.rule, h.field, h.text) for h in detect(s)]) for s in dev]
    flagged = [f for f in flagged if f[1]]
    print(
        f"attack corpus: {caught}/{attacks} caught ({caught / attacks:.1%}); fields {dict(fields)}; rules {dict(rules)}"
    )
    print(f"hard negatives flagged: {hard_fp}/{negatives}")
    print(f"benchmark rows flagged (false positives): {len(flagged)}/{len(dev)} ({len(flagged) / len(dev):.2%})")
    for sid, hits in flagged[:20]:
        print(f"  {sid}: {hits}")
    for text in missed:
        print(f"  missed: {text}")


if __name__ == "__main__":
    main()
