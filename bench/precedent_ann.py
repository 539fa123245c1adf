"""Case-law retrieval at scale: the precedent ANN index (faiss HNSW) against brute force, in one run.

    nice -n 10 python bench/precedent_ann.py --sizes 10000 100000 1000000 --out bench/precedent_ann.json

What it measures, for each number of cases N:

* **brute force** (today's code before the index: ``matrix @ query`` then a full ``argsort``, the exact
  numpy path ``PrecedentIndex.search`` used): p50/p99 per query, and the exact top 10 (ground truth);
* **faiss** HNSW through the project's own ``VectorIndex`` (the store's index, at the settings it ships;
  float16 and float32 vectors) and, where cheap, **usearch** HNSW for comparison: build time (added in
  blocks of 50,000, as precedents arrive), memory, p50/p99 per query (one query at a time: how a lookup
  runs), recall@10 against the exact top 10, at several search depths (efSearch).

Vectors. Embedding 10^6 texts with e5 on 2 CPU cores would take days, so the bench embeds a real
sample and grows it:

1. The 599 dev rows are split by a fixed seed: 80% give **base** texts, 20% give **query** texts.
2. Base texts: each row's case text (what a precedent stores: title | OCR | ASR, 600 chars) and its
   title alone, each embedded once as an e5 *passage*; query texts: each held-out row's case text and
   title alone, embedded as e5 *queries*. Both through the project's embedding service (cached on disk).
3. The N base vectors are the real passage vectors plus generated ones: a real passage vector plus
   Gaussian noise drawn from the real vectors' own covariance (so the noise has the distribution's
   shape), scaled by sigma ~ U(0.25, 1.0) per vector, then L2-normalised. Queries are only real
   (held-out, never in the base). The report gives the cosine of each generated vector to its seed and
   the nearest-neighbour cosines of real and generated points, to judge the realism.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# OpenMP threads that wait by spinning steal the other core on a shared 2-core machine: let them sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kuaimod_open.core.embedding import E5Embedder  # noqa: E402
from kuaimod_open.ingest.benchmark import load_benchmark  # noqa: E402
from kuaimod_open.loop.precedents import case_text  # noqa: E402

DEV = Path("/work/shared/data/kuaimod_dev.jsonl")
K = 10


def rss_mb() -> float:
    """Resident memory of this process, MB."""
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def real_texts(rows: list[Any], seed: int = 7) -> tuple[list[str], list[str]]:
    """(base passage texts, held-out query texts) from the dev rows, split 80/20 by row."""
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(0.8 * len(rows))
    base: dict[str, None] = {}
    for i in order[:cut]:
        r = rows[i]
        for text in (case_text(r), r.title):
            if len(text.strip()) >= 4:
                base[text.strip()] = None
    queries: dict[str, None] = {}
    for i in order[cut:]:
        r = rows[i]
        for text in (case_text(r), r.title):
            if len(text.strip()) >= 4 and text.strip() not in base:
                queries[text.strip()] = None
    return list(base), list(queries)


def real_vectors(cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Real e5 passage (base) and query vectors of the dev texts."""
    rows = load_benchmark(DEV)
    base_texts, query_texts = real_texts(rows)
    embedder = E5Embedder(cache_dir, threads=2)
    t0 = time.perf_counter()
    base = embedder.passages(base_texts)
    queries = embedder.queries(query_texts)
    info = {
        "dev_rows": len(rows),
        "real_base_texts": len(base_texts),
        "real_query_texts": len(query_texts),
        "embed_s": round(time.perf_counter() - t0, 1),
        "embedded_now": embedder.misses,
    }
    return base, queries, info


def grow(real: np.ndarray, n: int, seed: int = 11) -> tuple[np.ndarray, dict[str, float]]:
    """``n`` base vectors: the real ones, then real ones plus covariance-shaped noise (see module doc)."""
    rng = np.random.default_rng(seed)
    centered = real - real.mean(axis=0)
    # Noise with the real vectors' covariance: z @ (S / sqrt(m)) Vt has covariance V S^2 Vt / m.
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    shape = (s[:, None] / np.sqrt(len(real))) * vt
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    m = min(n, len(real))
    out[:m] = real[:m]
    seed_cos: list[float] = []
    for start in range(m, n, 65536):
        stop = min(n, start + 65536)
        seeds = rng.integers(0, len(real), stop - start)
        sigma = rng.uniform(0.25, 1.0, (stop - start, 1)).astype(np.float32)
        noise = rng.standard_normal((stop - start, len(s))).astype(np.float32) @ shape.astype(np.float32)
        block = real[seeds] + sigma * noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
        if len(seed_cos) < 20000:
            seed_cos.extend(np.einsum("ij,ij->i", block[:2000], real[seeds[:2000]]).tolist())
    stats: dict[str, float] = {}
    if seed_cos:
        stats["generated_cos_to_seed_p50"] = round(float(np.median(seed_cos)), 3)
    return out, stats


def nn_cos(vectors: np.ndarray, probes: np.ndarray) -> float:
    """Median cosine of each probe row to its nearest other row in ``vectors``."""
    sims = probes @ vectors.T
    sims[sims > 0.99999] = -1  # the probe itself
    return round(float(np.median(sims.max(axis=1))), 3)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k ids by inner product (ground truth), in chunks of the base to bound memory."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(base), 200_000):
        sims = queries @ base[start : start + 200_000].T
        part = np.argpartition(-sims, k, axis=1)[:, :k] if sims.shape[1] > k else np.argsort(-sims, axis=1)
        s = np.take_along_axis(sims, part, axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argsort(-all_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, axis=1), np.take_along_axis(all_i, top, axis=1)
    return best_i


def pct(times: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    """p50 and p99 in milliseconds: wall clock and, when given, this thread's CPU time (immune to a loaded machine)."""
    out: dict[str, float] = {}
    for name, values in (("", times), ("cpu_", cpu or [])):
        if values:
            arr = np.asarray(values) * 1000
            out[f"{name}p50_ms"] = round(float(np.percentile(arr, 50)), 3)
            out[f"{name}p99_ms"] = round(float(np.percentile(arr, 99)), 3)
    return out


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    """Mean share of the exact top 10 found in the returned 10."""
    return round(
        float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)])), 4
    )


def bench_brute(base: np.ndarray, queries: np.ndarray, max_queries: int) -> dict[str, Any]:
    """Today's code: one matmul and a full argsort per query (PrecedentIndex.search before the index)."""
    times, cpu = [], []
    for q in queries[:max_queries]:
        t0, c0 = time.perf_counter(), time.thread_time()
        scores = base @ q
        np.argsort(-scores)[:K]
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {
        "library": "brute force (numpy, before)",
        **pct(times, cpu),
        "recall@10": 1.0,
        "memory_mb": base.nbytes / 2**20,
    }


def bench_usearch(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, settings: dict[str, Any]) -> dict[str, Any]:
    """Build a usearch HNSW index incrementally (in blocks, as precedents arrive) and query it."""
    from usearch.index import Index

    before = rss_mb()
    t0 = time.perf_counter()
    index = Index(
        ndim=base.shape[1],
        metric="cos",
        dtype=settings["dtype"],
        connectivity=settings["connectivity"],
        expansion_add=settings["expansion_add"],
    )
    for start in range(0, len(base), 50_000):
        stop = min(len(base), start + 50_000)
        index.add(np.arange(start, stop, dtype=np.uint64), base[start:stop], threads=2)
    build = time.perf_counter() - t0
    memory = rss_mb() - before
    out: dict[str, Any] = {
        "library": f"usearch {settings['dtype']} M={settings['connectivity']}",
        "build_s": round(build, 1),
    }
    out["memory_mb"] = round(memory, 0)
    out["index_bytes_mb"] = round(index.memory_usage / 2**20, 0)
    for ef in settings["expansion_search"]:
        index.expansion_search = ef
        times, cpu, found = [], [], []
        for q in queries:
            t1, c1 = time.perf_counter(), time.thread_time()
            m = index.search(q, K, threads=1)
            times.append(time.perf_counter() - t1)
            cpu.append(time.thread_time() - c1)
            found.append(np.asarray(m.keys, dtype=np.int64))
        out[f"ef={ef}"] = {**pct(times, cpu), "recall@10": recall(found, truth)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix.usearch"
        t1 = time.perf_counter()
        index.save(str(path))
        out["save_s"] = round(time.perf_counter() - t1, 2)
        out["file_mb"] = round(path.stat().st_size / 2**20, 0)
        del index
        gc.collect()
        t1 = time.perf_counter()
        Index.restore(str(path))
        out["load_s"] = round(time.perf_counter() - t1, 2)
    return out


def bench_faiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, settings: dict[str, Any]) -> dict[str, Any]:
    """The store's index: faiss HNSW (float32, or float16 scalar-quantised) with ids, built by VectorIndex."""
    import faiss

    from kuaimod_open.loop.precedent_index import AnnSettings, VectorIndex

    ann = AnnSettings(
        connectivity=settings["connectivity"], expansion_add=settings["expansion_add"], dtype=settings["dtype"]
    )
    faiss.omp_set_num_threads(2)
    before = rss_mb()
    t0 = time.perf_counter()
    index = VectorIndex(base.shape[1], ann)
    for start in range(0, len(base), 50_000):  # incrementally, in blocks, as precedents arrive
        stop = min(len(base), start + 50_000)
        index.add(list(range(start, stop)), base[start:stop])
    build = time.perf_counter() - t0
    label = f"faiss HNSW{'SQ fp16' if settings['dtype'] == 'f16' else 'Flat f32'} M={settings['connectivity']}"
    out: dict[str, Any] = {"library": label, "build_s": round(build, 1), "memory_mb": round(rss_mb() - before, 0)}
    graph = faiss.downcast_index(index._index.index)
    for ef in settings["expansion_search"]:
        graph.hnsw.efSearch = ef
        times, cpu, found = [], [], []
        for q in queries:
            t1, c1 = time.perf_counter(), time.thread_time()
            hits = index.search(q, K)
            times.append(time.perf_counter() - t1)
            cpu.append(time.thread_time() - c1)
            found.append(np.asarray([i for i, _ in hits], dtype=np.int64))
        out[f"ef={ef}"] = {**pct(times, cpu), "recall@10": recall(found, truth)}
    return out


def fill_store(url: str, vectors: np.ndarray) -> Any:
    """A fresh store at ``url`` with one active precedent per vector (bulk insert, the rows add_precedent writes)."""
    from datetime import UTC, datetime

    from kuaimod_open.loop.store import Store

    store = Store(url)
    t = store.table("precedents")
    with store.begin() as conn:
        conn.execute(t.delete())
    now = datetime.now(UTC)
    for start in range(0, len(vectors), 10_000):
        rows = [
            {
                "sample_id": f"s{i}",
                "text": f"标题: case {i}",
                "category": "BENIGN",
                "decision": "allow",
                "reason": "",
                "author": "bench",
                "embedding": vectors[i].tobytes(),
                "created_at": now,
            }
            for i in range(start, min(len(vectors), start + 10_000))
        ]
        with store.begin() as conn:
            conn.execute(t.insert(), rows)
    return store


def bench_store(url: str, base: np.ndarray, queries: np.ndarray, folder: Path) -> list[dict[str, Any]]:
    """Precedent lookup through the store: the old in-memory brute force vs PrecedentIndex (ANN + row fetch)."""
    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop.precedents import PrecedentIndex, active_precedents

    policy = load_policy(default_policy_path())
    t0 = time.perf_counter()
    store = fill_store(url, base)
    fill_s = time.perf_counter() - t0
    backend = store.engine.dialect.name
    rows: list[dict[str, Any]] = []

    before, t0 = rss_mb(), time.perf_counter()
    items = active_precedents(store)  # what PrecedentIndex did on open before the index
    matrix = np.stack([np.frombuffer(blob or b"", dtype=np.float32) for _, blob in items])
    open_s, mem = time.perf_counter() - t0, rss_mb() - before
    times = []
    for q in queries[:60]:
        t1 = time.perf_counter()
        order = np.argsort(-(matrix @ q))
        [items[i][0] for i in order[:3]]
        times.append(time.perf_counter() - t1)
    rows.append({"backend": backend, "path": "before: load all + brute force", "open_s": round(open_s, 1)})
    rows[-1].update({**pct(times), "memory_mb": round(mem, 0), "fill_s": round(fill_s, 1)})
    del items, matrix
    gc.collect()

    embedder = E5Embedder(None)  # every row has its vector: nothing is embedded
    t0 = time.perf_counter()
    index = PrecedentIndex(store, embedder, policy, index_dir=folder)
    build_s = time.perf_counter() - t0
    before, t0 = rss_mb(), time.perf_counter()
    index = PrecedentIndex(store, embedder, policy, index_dir=folder)
    reopen_s = time.perf_counter() - t0
    times, cpu = [], []
    for q in queries:
        t1, c1 = time.perf_counter(), time.thread_time()
        index.search_vector(q, 3)
        times.append(time.perf_counter() - t1)
        cpu.append(time.thread_time() - c1)
    rows.append({"backend": backend, "path": "PrecedentIndex (faiss + row fetch)", "open_s": round(reopen_s, 1)})
    rows[-1].update({**pct(times, cpu), "build_s": round(build_s, 1), "memory_mb": round(rss_mb() - before, 0)})
    return rows


def main() -> None:
    """Run the benchmark and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--compare-up-to", type=int, default=100_000, help="compare usearch at sizes up to this")
    parser.add_argument("--dtypes", nargs="+", default=["f16", "f32"])
    parser.add_argument("--connectivity", type=int, default=32)
    parser.add_argument("--expansion-add", type=int, default=64)
    parser.add_argument("--expansion-search", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--brute-queries", type=int, default=60)
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: $KUAIMOD_CACHE)")
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--store", nargs="*", default=[], help="also look up through these store URLs (emptied!)")
    parser.add_argument("--store-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "precedent_ann.json")
    args = parser.parse_args()

    real, queries, info = real_vectors(args.cache_dir)
    print(json.dumps(info), flush=True)
    if args.embed_only:
        return
    results: dict[str, Any] = {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start",
        "vectors": info,
        "runs": [],
    }
    settings = {
        "connectivity": args.connectivity,
        "expansion_add": args.expansion_add,
        "expansion_search": args.expansion_search,
    }
    for n in args.store_sizes if args.store else []:
        base, _ = grow(real, n)
        for url in args.store:
            with tempfile.TemporaryDirectory() as tmp:
                for row in bench_store(url, base, queries, Path(tmp)):
                    results.setdefault("store", []).append({"n": n, **row})
                    print(json.dumps(results["store"][-1]), flush=True)
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    for n in args.sizes:
        base, stats = grow(real, n)
        probe = base[np.random.default_rng(3).choice(n, min(n, 500), replace=False)]
        stats["real_nn_cos_p50"] = nn_cos(real, real[:500])
        stats[f"nn_cos_p50_at_{n}"] = nn_cos(base, probe)
        stats["query_top1_cos_p50"] = round(float(np.median((queries @ real.T).max(axis=1))), 3)
        t0 = time.perf_counter()
        truth = exact_topk(base, queries)
        run: dict[str, Any] = {"n": n, "stats": stats, "truth_s": round(time.perf_counter() - t0, 1), "rows": []}
        print(f"n={n}: {stats}", flush=True)
        run["rows"].append(bench_brute(base, queries, args.brute_queries))
        print(json.dumps(run["rows"][-1]), flush=True)
        for dtype in args.dtypes:
            run["rows"].append(bench_faiss(base, queries, truth, {**settings, "dtype": dtype}))
            print(json.dumps(run["rows"][-1]), flush=True)
            gc.collect()
        if n <= args.compare_up_to:
            try:
                run["rows"].append(bench_usearch(base, queries, truth, {**settings, "dtype": "f16"}))
                print(json.dumps(run["rows"][-1]), flush=True)
            except ImportError:
                print("usearch not installed: comparison skipped (pip install 'kuaimod_open[bench]')", flush=True)
            gc.collect()
        results["runs"].append(run)
        del base
        gc.collect()
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
