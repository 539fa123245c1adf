"""Per-video CPU cost of the first-stage router (the cascade's extra stage), cold and warm embedding cache.

    taskset -c 0 python bench/router_scoring.py --router routers/v1 --data rows.jsonl --n 100

Scores ``--n`` rows one at a time (as a batch job's first stage sees them, batch size 1) and then as
one batch, first with an empty embedding cache (every e5 embedding computed), then warm (every
embedding read from the cache). CPU seconds of this process; the e5 model load is excluded (one
untimed warm-up row).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kuaimod_open.ingest.benchmark import load_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--router", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    os.environ["KUAIMOD_CACHE"] = tempfile.mkdtemp(prefix="kuaimod-bench-cache-")  # cold
    from kuaimod_open.first_stage.router import load_router

    router = load_router(args.router)
    rows = load_benchmark(args.data)
    warmup, rows = rows[0], rows[1 : args.n + 1]
    router.score([warmup])  # loads the embedding model; not timed
    table = []
    for cache in ("cold", "warm"):
        t0 = time.process_time()
        for sample in rows:
            router.score([sample])
        one = (time.process_time() - t0) / len(rows)
        if cache == "cold":  # batch scoring must not re-use the cache the one-by-one pass just filled
            os.environ["KUAIMOD_CACHE"] = tempfile.mkdtemp(prefix="kuaimod-bench-cache-")
            router = load_router(args.router)
            router.score([warmup])
        t0 = time.process_time()
        router.score(rows)
        batch = (time.process_time() - t0) / len(rows)
        table.append((cache, one, batch))
    print(f"router {router.model_id} ({', '.join(router.card.features)}), {len(rows)} rows of {args.data.name}\n")
    print("| embedding cache | CPU ms / video, one at a time | CPU ms / video, one batch |")
    print("|---|---|---|")
    for cache, one, batch in table:
        print(f"| {cache} | {one * 1000:.1f} | {batch * 1000:.1f} |")


if __name__ == "__main__":
    main()
