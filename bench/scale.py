"""The store and review queue at 10^3..10^6 samples, new code side by side with the code before #17.

    nice -n 10 python bench/scale.py --sizes 1000 100000 1000000 \\
        --sqlite-dir /tmp/kuaimod_scale --pg-url postgresql+psycopg://u:p@localhost/scratch_db

For each backend and size: a fresh store filled by bench/synthetic_store.py (at 10^6: the 10^5 fill
replicated 10x in SQL, with new ids, so the fill stays within the machine's time; the generator's own
rate is reported at 10^5), then, each in its own process so that peak memory (max RSS) is its own:

- new: first queue page (50 rows + total), a page 20 pages deep (cursor), and decision-to-next-item
  (record_decision on the claimed item, then claim_next), 20 times each, median and p95;
- ``kuaimod queue --db URL`` wall time (a fresh interpreter, as an operator runs it);
- old: ``app/queue.py review_queue`` as it was at 1fb8b9c (loaded from git), one call, and its
  decision-to-next (add_feedback, then the whole review_queue again, as the app did), under a memory
  cap and a time limit (reported as not finished when hit);
- feedback import throughput (a CSV of 20,000 rows through import_feedback; the old per-row import
  on 5,000 rows);
- bytes per verdict (whole store / verdicts; SQLite file after a checkpoint, PostgreSQL database size).

Writes bench/results/scale.json; BENCHMARKS.md "Scale" quotes it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
LEGACY_COMMIT = "1fb8b9c"  # main before the store/queue work of #17
PY = sys.executable


def _legacy(path: str, name: str) -> Any:
    """A module as it was at LEGACY_COMMIT (git show), importable beside the current code."""
    folder = Path(os.environ.get("KUAIMOD_SCALE_TMP", "/tmp")) / "kuaimod_legacy"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.py"
    repo = os.environ.get("KUAIMOD_LEGACY_REPO", str(REPO))  # a git checkout that has LEGACY_COMMIT
    target.write_text(subprocess.check_output(["git", "-C", repo, "show", f"{LEGACY_COMMIT}:{path}"], text=True))
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 1),
    }


def _cpu() -> float:
    """This process's CPU seconds (user + system): what the code costs, whatever the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --------------------------------------------------------------------------- measurements (child processes)


def measure_new(url: str) -> dict[str, Any]:
    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop.feedback import record_decision
    from kuaimod_open.loop.queue import claim_next, queue_page
    from kuaimod_open.loop.store import Store

    store = Store(url)
    policy = load_policy(default_policy_path())
    queue_page(store)  # warm the connection pool and caches, as a running app is
    first, deep = [], []
    cpu = _cpu()
    for _ in range(20):
        t = time.perf_counter()
        page = queue_page(store)
        first.append(time.perf_counter() - t)
    page_cpu = (_cpu() - cpu) / 20
    cursor = None
    for _ in range(20):
        cursor = queue_page(store, cursor=cursor, with_total=False).next_cursor
    for _ in range(20):
        t = time.perf_counter()
        queue_page(store, cursor=cursor)
        deep.append(time.perf_counter() - t)
    decide = []
    item = claim_next(store, "bench-reviewer", lease_s=600)
    cpu = _cpu()
    for _ in range(20):
        if item is None:
            break
        t = time.perf_counter()
        category = item.category or policy.benign
        decision = "allow" if category == policy.benign else "block"
        record_decision(store, policy, sample_id=item.sample_id, verdict_id=item.verdict_id, author="bench-reviewer",
                        category=category, decision=decision, reason_code="other")  # fmt: skip
        item = claim_next(store, "bench-reviewer", lease_s=600)
        decide.append(time.perf_counter() - t)
    decide_cpu = (_cpu() - cpu) / max(1, len(decide))
    return {
        "total": page.total,
        "page_client_cpu_ms": round(page_cpu * 1000, 1),
        "decide_next_client_cpu_ms": round(decide_cpu * 1000, 1),
        "page": _stats(first),
        "deep_page": _stats(deep),
        "decide_next": _stats(decide),
        "maxrss_mb": _maxrss_mb(),
    }


def measure_old(url: str) -> dict[str, Any]:
    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback
    from kuaimod_open.loop.store import Store

    legacy = _legacy("app/queue.py", "legacy_queue")
    store = Store(url)
    policy = load_policy(default_policy_path())
    t, cpu = time.perf_counter(), _cpu()
    items = legacy.review_queue(store, policy)
    once, once_cpu = time.perf_counter() - t, _cpu() - cpu
    top = items[0]
    t = time.perf_counter()
    add_feedback(store, FeedbackEvent(sample_id=top.sample_id, kind="reviewer_decision", category=policy.benign,
                                      decision="allow", author="bench-old"), policy)  # fmt: skip
    legacy.review_queue(store, policy)
    decide = time.perf_counter() - t
    return {
        "total": len(items),
        "page_ms": round(once * 1000),
        "page_client_cpu_ms": round(once_cpu * 1000),
        "decide_next_ms": round(decide * 1000),
        "maxrss_mb": _maxrss_mb(),
    }


def measure_import(url: str, csv_path: str, legacy_csv: str) -> dict[str, Any]:
    from kuaimod_open.judge.policy import default_policy_path, load_policy
    from kuaimod_open.loop.feedback import import_feedback
    from kuaimod_open.loop.store import Store

    store = Store(url)
    policy = load_policy(default_policy_path())
    rows = sum(1 for _ in open(csv_path, encoding="utf-8")) - 1
    t, cpu = time.perf_counter(), _cpu()
    result = import_feedback(store, csv_path, policy)
    new, new_cpu = time.perf_counter() - t, _cpu() - cpu
    legacy = _legacy("kuaimod_open/loop/feedback.py", "legacy_feedback")
    old_rows = sum(1 for _ in open(legacy_csv, encoding="utf-8")) - 1
    t, cpu = time.perf_counter(), _cpu()
    legacy.import_feedback(store, legacy_csv, policy)
    old, old_cpu = time.perf_counter() - t, _cpu() - cpu
    return {
        "rows": rows,
        "inserted": result.inserted,
        "rows_per_s": round(rows / new),
        "rows_per_client_cpu_s": round(rows / new_cpu),
        "old_rows": old_rows,
        "old_rows_per_s": round(old_rows / old),
        "old_rows_per_client_cpu_s": round(old_rows / old_cpu),
    }


def _child(kind: str, args: list[str], *, mem_gb: float, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process with a memory cap and a time limit."""
    cmd = [PY, __file__, "--child", kind, *args]
    limit = int(mem_gb * 2**30)
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed (memory cap {mem_gb} GB?): {last[:200]}"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- filling


def _reset(url: str, sqlite_dir: Path) -> str:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return url
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP OWNED BY CURRENT_USER"))
    engine.dispose()
    return url


def replicate(url: str, copies: int) -> None:
    """Multiply a filled store by ``copies`` in SQL: every sample, verdict, feedback event and queue row
    again under new ids (sample ids get a ``-rK`` suffix), so the data keeps the generator's shape."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    cat = "||"
    with engine.begin() as conn:
        vmax = conn.execute(sa.text("SELECT max(id) FROM verdicts")).scalar_one()
        for k in range(1, copies):
            sfx = f"'-r{k}'"
            conn.execute(sa.text(
                f"INSERT INTO samples (id, title, ocr, asr, comments, video, frames, label, created_at) "
                f"SELECT id {cat} {sfx}, title, ocr, asr, comments, video, frames, label, created_at FROM samples "
                f"WHERE id NOT LIKE '%-r%'"))  # fmt: skip
            conn.execute(sa.text(
                f"INSERT INTO verdicts (id, sample_id, decision, category, confidence, status, stage, model, "
                f"policy_version, policy_digest, payload, created_at, adapter, prompt_digest) "
                f"SELECT id + {k * vmax}, sample_id {cat} {sfx}, decision, category, confidence, status, stage, model, "
                f"policy_version, policy_digest, payload, created_at, adapter, prompt_digest FROM verdicts "
                f"WHERE id <= {vmax}"))  # fmt: skip
            conn.execute(sa.text(
                f"INSERT INTO feedback (event_id, sample_id, kind, category, decision, reason, author, created_at, "
                f"source) "
                f"SELECT substr(event_id, 1, 58) {cat} {sfx}, sample_id {cat} {sfx}, kind, category, decision, reason, "
                f"author, created_at, source FROM feedback WHERE sample_id NOT LIKE '%-r%'"))  # fmt: skip
            conn.execute(sa.text(
                f"INSERT INTO review_queue (sample_id, verdict_id, fifo_rank, verdict_at, decision, category, "
                f"policy_version, self_confidence, confidence, uncertainty, severity_rank, review_required, why, "
                f"decided_at, reports, open_reports, pending, claimed_by, claim_expires) "
                f"SELECT sample_id {cat} {sfx}, verdict_id + {k * vmax}, fifo_rank - {k * vmax}, verdict_at, decision, "
                f"category, policy_version, self_confidence, confidence, uncertainty, severity_rank, review_required, "
                f"why, decided_at, reports, open_reports, pending, NULL, NULL FROM review_queue "
                f"WHERE sample_id NOT LIKE '%-r%'"))  # fmt: skip
        if url.startswith("postgresql"):
            conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('verdicts', 'id'), (SELECT max(id) FROM verdicts))")
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()


def store_bytes(url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        verdicts = conn.execute(sa.text("SELECT count(*) FROM verdicts")).scalar_one()
        if url.startswith("sqlite"):
            conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
            total = Path(url.removeprefix("sqlite:///")).stat().st_size
            table = None
        else:
            total = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
            table = conn.execute(sa.text("SELECT pg_total_relation_size('verdicts')")).scalar_one()
    engine.dispose()
    out = {"verdicts": verdicts, "bytes_per_verdict": round(total / verdicts)}
    if table is not None:
        out["verdict_table_bytes_per_verdict"] = round(table / verdicts)
    return out


def feedback_csv(path: Path, sample_ids: list[str], rows: int, seed: int, tag: str) -> str:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["sample_id", "kind", "category", "decision", "reason", "author", "created_at"])
        for i in range(rows):
            sid = rng.choice(sample_ids)
            if rng.random() < 0.5:
                when = f"2026-06-01T00:{i % 60:02d}:{i % 59:02d}Z"
                category = rng.choice(["HATE", "BENIGN", "MISINFO"])
                w.writerow([sid, "reviewer_decision", category, "", "", f"{tag}{i % 50}", when])
            else:
                w.writerow([sid, "user_report", "", "", f"r{i}", f"{tag}u{i}", "2026-06-02T00:00:00Z"])
    return str(path)


def run(args: argparse.Namespace) -> None:
    from synthetic_store import fill

    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    backends = []
    if args.sqlite_dir:
        args.sqlite_dir.mkdir(parents=True, exist_ok=True)
        backends.append(("sqlite", f"sqlite:///{args.sqlite_dir / 'scale.db'}"))
    if args.pg_url:
        backends.append(("postgresql", args.pg_url))
    for name, url in backends:
        for size in args.sizes:
            key = f"{name}/{size}"
            print(f"== {key}", file=sys.stderr, flush=True)
            _reset(url, args.sqlite_dir)
            entry: dict[str, Any] = {"load_avg_start": round(os.getloadavg()[0], 1)}
            base = min(size, 100_000)
            entry["fill"] = fill(url, base, seed=1, quiet=True)
            if size > base:
                t = time.perf_counter()
                replicate(url, size // base)
                entry["replicate_s"] = round(time.perf_counter() - t)
            entry["bytes"] = store_bytes(url)
            entry["new"] = _child("new", [url], mem_gb=4, timeout=900)
            t = time.perf_counter()
            cli = subprocess.run([PY, "-m", "kuaimod_open", "queue", "--db", url, "--limit", "50"], capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
            entry["cli_queue_s"] = (
                round(time.perf_counter() - t, 2) if cli.returncode == 0 else f"failed: {cli.stderr[-200:]}"
            )
            entry["old"] = _child("old", [url], mem_gb=args.old_mem_gb, timeout=args.old_timeout)
            ids = [f"vid-{i:08d}" for i in range(0, base, max(1, base // 20_000))]
            tmp = Path(os.environ.get("KUAIMOD_SCALE_TMP", "/tmp"))
            new_csv = feedback_csv(tmp / "scale_feedback.csv", ids, 20_000, 2, "imp")
            old_csv = feedback_csv(tmp / "scale_feedback_old.csv", ids, 5_000, 3, "old")
            entry["import"] = _child("import", [url, new_csv, old_csv], mem_gb=4, timeout=1800)
            entry["load_avg_end"] = round(os.getloadavg()[0], 1)
            results[key] = entry
            print(json.dumps({key: entry}), file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        _reset(url, args.sqlite_dir)  # leave no big scratch store behind
    if args.sqlite_dir:
        shutil.rmtree(args.sqlite_dir, ignore_errors=True)


def render(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md table from a results file (``--table``)."""

    def ms(entry: dict[str, Any], key: str) -> str:
        value = entry.get(key)
        return "—" if value is None else f"{value['median_ms']:.0f} / {value['p95_ms']:.0f}"

    lines = [
        "| backend, samples | queue page: new (p50 / p95 ms; client CPU ms) | old `review_queue` (ms; CPU ms; max RSS) "
        "| decision → next item: new (p50 / p95 ms; CPU ms) | old (ms) | page 20 deep (ms) | `kuaimod queue` (s) "
        "| new app max RSS (MB) | import rows/s: new (per client CPU s) | old (per CPU s) | bytes / verdict "
        "| fill samples/min |",
        "|---|---|---|---|---|---|---:|---:|---|---|---:|---:|",
    ]
    for key, e in results.items():
        new, old, imp = e.get("new", {}), e.get("old", {}), e.get("import", {})
        if "error" in old:
            old_page = old_decide = f"not finished: {old['error']}"
        else:
            old_page = f"{old['page_ms']:,} ; {old['page_client_cpu_ms']:,} ; {old['maxrss_mb']:,.0f} MB"
            old_decide = f"{old['decide_next_ms']:,}"
        fill = (
            e["fill"]["samples_per_min"]
            if "replicate_s" not in e
            else f"{e['fill']['samples_per_min']:,} (10^5) + replica"
        )
        lines.append(
            f"| {key} (pending {new.get('total', '?'):,}) | {ms(new, 'page')} ; {new.get('page_client_cpu_ms')} "
            f"| {old_page} | {ms(new, 'decide_next')} ; {new.get('decide_next_client_cpu_ms')} | {old_decide} "
            f"| {ms(new, 'deep_page')} | {e.get('cli_queue_s')} | {new.get('maxrss_mb')} "
            f"| {imp.get('rows_per_s', '?'):,} ({imp.get('rows_per_client_cpu_s', '?'):,}) "
            f"| {imp.get('old_rows_per_s', '?'):,} ({imp.get('old_rows_per_client_cpu_s', '?'):,}) "
            f"| {e['bytes']['bytes_per_verdict']:,} | {fill} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--sqlite-dir", type=Path, default=None)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--old-mem-gb", type=float, default=6.0, help="memory cap for the old review_queue")
    parser.add_argument("--old-timeout", type=float, default=600.0, help="time limit for the old review_queue")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    args = parser.parse_args()
    if args.table:
        print(render(json.loads(args.out.read_text())))
        return
    if args.child:
        kind, *rest = args.child
        fn = {"new": measure_new, "old": measure_old, "import": measure_import}[kind]
        print(json.dumps(fn(*rest)))
        return
    run(args)


if __name__ == "__main__":
    main()
