"""--engine ray: the batch job as a Ray Data pipeline on a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.ingest.manifest import WorkItem
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.serving.runner import RunnerConfig

pytestmark = [pytest.mark.video, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_job_one_verdict_each_errors_recorded_and_resume(local_ray, policy, template, video_dir, tmp_path):
    pytest.importorskip("decord")
    from kuaimod_open.serving.ray_engine import BackendSpec, RayConfig, run_ray_job

    names = ("bikes", "carphone_pristine", "bigbuckbunny")
    items = [WorkItem(Sample(id=f"v{i}", video=video_dir / f"{names[i % 3]}.mp4", title=f"t{i}")) for i in range(6)]
    items.append(WorkItem(Sample(id="gone", video=tmp_path / "missing.mp4")))
    from test_fetch import Origin, body

    from kuaimod_open.ingest.fetch import FetchPolicy

    origin = Origin()  # a local HTTP server; loopback explicitly allowed below
    origin.routes["/bikes.mp4"] = body((video_dir / "bikes.mp4").read_bytes())
    items.append(WorkItem(Sample(id="remote", title="r"), url=f"{origin.base}/bikes.mp4"))
    spec = BackendSpec("scripted", {"default": verdict_json("HATE")})
    config = ModerationConfig(frames=2, frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=3))
    out = tmp_path / "v.jsonl"
    fetch = FetchPolicy(allow_networks=("127.0.0.1/32",))
    runner = RunnerConfig(progress=False, parquet=tmp_path / "v.parquet", fetch=fetch)
    summary = run_ray_job(items, policy, template, spec, out, config, runner, RayConfig())
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample_id"] for x in lines) == sorted(i.sample.id for i in items)
    by_id = {x["sample_id"]: x for x in lines}
    assert by_id["gone"]["status"] == "error" and by_id["gone"]["decision"] == "review"
    assert by_id["v0"]["decision"] == "block" and len(by_id["v0"]["provenance"]["frame_timestamps"]) == 3
    assert by_id["remote"]["decision"] == "block"  # fetched by a Ray task
    assert summary.written == 8 and summary.decisions == {"block": 7, "review": 1}
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["summary"]["engine"] == "ray" and manifest["model"] == "scripted"
    assert (tmp_path / "v.parquet").is_file()
    again = run_ray_job(items, policy, template, spec, out, config, runner, RayConfig())
    assert (again.written, again.skipped) == (0, 8) and len(out.read_text().splitlines()) == 8
    origin.close()


def test_ray_job_with_the_cascade_sends_only_escalated_rows_to_the_model(local_ray, policy, tmp_path):
    pytest.importorskip("sklearn")
    import numpy as np
    from router_data import synthetic_rows, write_rows

    from kuaimod_open.first_stage.cascade import FirstStage
    from kuaimod_open.first_stage.router import RouterConfig, train_router
    from kuaimod_open.ingest.benchmark import load_benchmark
    from kuaimod_open.judge.prompt import load_template
    from kuaimod_open.serving.ray_engine import BackendSpec, RayConfig, run_ray_job

    samples = load_benchmark(write_rows(tmp_path / "rows.jsonl", synthetic_rows(40, seed=3)))
    router = train_router(samples, policy, RouterConfig(features=["tfidf"], inner_folds=3))
    folder = router.save(tmp_path / "router")
    p = np.sort(router.score(samples).p_violative)
    first = FirstStage(str(folder), allow_below=float(p[13]), flag_at=float(p[27]))  # ~a third in each band
    spec = BackendSpec("scripted", {"default": verdict_json("HATE"), "model_id": "vlm"})
    out = tmp_path / "v.jsonl"
    config = ModerationConfig(frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=8))
    items = [WorkItem(s) for s in samples]
    from kuaimod_open.cli.moderate import store_hooks
    from kuaimod_open.loop.feedback import latest_verdicts, stored_samples
    from kuaimod_open.loop.store import Store

    store = Store(f"sqlite:///{tmp_path / 'k.db'}")  # the driver records what the actors prepared and judged
    hooks = store_hooks(store, policy, 0)
    summary = run_ray_job(items, policy, load_template(), spec, out, config, RunnerConfig(progress=False),
                          RayConfig(), first, **hooks)  # fmt: skip
    assert len(stored_samples(store)) == 40 and len(latest_verdicts(store)) == 40
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(x["sample_id"] for x in lines) == sorted(s.id for s in samples) and summary.written == 40
    vlm = [x for x in lines if x["stage"] == "vlm"]
    assert len(vlm) == 14 and all(x["provenance"]["model"] == "vlm" and "escalated" in x["flags"] for x in vlm)
    assert all(x["provenance"]["model"].startswith("router:router@") for x in lines if x["stage"] == "router")
