"""Sample identity: ids that sanitise alike never share artifacts, and canonical ids survive a change of path spelling.

Regression tests for issue #13 ("Identity"): on the old code, ids ``clip/1`` and ``clip_1`` shared one
frames folder (verdicts judged on the other video's frames), ``..`` wrote frames into the work folder,
two concurrent ``serve`` uploads with the same id saw each other's frames, and resuming a folder by its
absolute path changed the ids.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import verdict_json
from media import COLOURS, nearest_colour, solid_video

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.manifest import collect_items, load_manifest
from kuaimod_open.ingest.sample import VIDEO_EXTENSIONS
from kuaimod_open.judge.backends.base import GenerateConfig, Request
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig
from kuaimod_open.serving.runner import RunnerConfig, run_job

pytest.importorskip("av")

# Pairs (and more) of ids that the old sanitiser mapped to one folder name, plus ids that are paths.
CLASHING_IDS = ["clip/1", "clip_1", "clip 1", "clip:1", "..", ".", "a/../b", "a_.._b", "../../escape"]


def _colour_checker(expected: dict[str, str], seen: dict[str, list[str]]):
    """A scripted model answer that records the colour of every frame it was shown, per sample id."""

    def answer(request: Request) -> str:
        seen[request.sample_id] = [nearest_colour(p) for p in request.messages[1].images]
        return verdict_json("BENIGN")

    return answer


def test_ids_that_sanitise_alike_are_judged_on_their_own_frames(policy, template, tmp_path):
    pytest.importorskip("decord")
    colours = list(COLOURS)
    expected = {sid: colours[i % len(colours)] for i, sid in enumerate(CLASHING_IDS)}
    rows = []
    for i, (sid, colour) in enumerate(expected.items()):
        video = solid_video(tmp_path / "videos" / f"v{i}.mp4", colour)
        rows.append({"id": sid, "path": str(video)})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    seen: dict[str, list[str]] = {}
    backend = ScriptedBackend(default=_colour_checker(expected, seen))
    work = tmp_path / "work"
    config = ModerationConfig(frames=2, frames_dir=work / "frames", generate=GenerateConfig(batch_size=16))
    run_job(load_manifest(manifest), policy, backend, template, work / "v.jsonl", config, RunnerConfig(workers=0))
    assert set(seen) == set(expected)
    wrong = {sid: got for sid, got in seen.items() if set(got) != {expected[sid]}}
    assert wrong == {}, f"verdicts judged on another video's frames: {wrong}"
    # Nothing was written outside the frames folder (an id of '..' once wrote into the work folder).
    stray = [p for p in work.rglob("*.jpg") if not p.is_relative_to(work / "frames")]
    assert stray == [] and not list(tmp_path.glob("*.jpg"))
    verdicts = [json.loads(line) for line in (work / "v.jsonl").read_text().splitlines()]
    keys = {v["sample_id"]: v["provenance"]["sample_key"] for v in verdicts}
    assert len(set(keys.values())) == len(CLASHING_IDS) and all(keys.values())


def test_resuming_a_folder_by_its_absolute_path_keeps_the_ids(policy, template, tmp_path, monkeypatch):
    pytest.importorskip("decord")
    clips = tmp_path / "clips"
    names = ["a.mp4", "b.mp4", "x/a.mp4", "x/c.mp4", "y/a.mp4", "y/z/a.mp4", "y/z/d.mov", "e.mkv", "x/e.mp4"]
    for i, name in enumerate(names):
        solid_video(clips / name, list(COLOURS)[i % len(COLOURS)], frames=3)
    monkeypatch.chdir(tmp_path)
    relative = collect_items([Path("clips")])
    absolute = collect_items([clips.resolve()])
    dotted = collect_items([Path("./clips/../clips")])
    assert [i.sample.id for i in relative] == [i.sample.id for i in absolute] == [i.sample.id for i in dotted]
    assert sorted(i.sample.id for i in relative) == sorted(n.rsplit(".", 1)[0] for n in names)
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames=1, frames_dir=tmp_path / "frames", generate=GenerateConfig(batch_size=4))
    out = tmp_path / "v.jsonl"
    first = run_job(relative[:5], policy, backend, template, out, config, RunnerConfig(workers=0, progress=False))
    again = run_job(absolute, policy, backend, template, out, config, RunnerConfig(workers=0, progress=False))
    lines = [json.loads(x)["sample_id"] for x in out.read_text().splitlines()]
    assert (first.written, again.skipped, again.written) == (5, 5, 4)
    assert len(lines) == len(set(lines)) == 9


def test_canonical_ids_of_files_given_directly_and_clashes(tmp_path, monkeypatch):
    from kuaimod_open.ingest.keys import video_inputs

    for name in ("x/a.mp4", "y/a.mp4", "x/b.mp4", "x/b.mov"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"v")
    monkeypatch.chdir(tmp_path)
    ids = [sid for _, sid in video_inputs([Path("x/a.mp4"), tmp_path / "y/a.mp4", Path("x/b.mp4")], VIDEO_EXTENSIONS)]
    assert ids == ["x/a", "y/a", "b"]
    # The same stem twice in one folder keeps the suffix; the same file twice is listed once.
    both = video_inputs([Path("x")], VIDEO_EXTENSIONS)
    assert [sid for _, sid in both] == ["a", "b.mov", "b.mp4"]
    assert len(video_inputs([Path("x"), tmp_path / "x" / "a.mp4"], VIDEO_EXTENSIONS)) == 3
    with pytest.raises(ConfigError, match="Input not found"):
        video_inputs([Path("missing")], VIDEO_EXTENSIONS)


def test_keys_separate_ids_and_contents_and_names_are_safe():
    from kuaimod_open.ingest.keys import key_for, key_name, safe_suffix, stored_name

    content_a, content_b = "a" * 64, "b" * 64
    keys = {key_for(sid, c).digest for sid in CLASHING_IDS for c in (content_a, content_b)}
    assert len(keys) == 2 * len(CLASHING_IDS)
    names = {key_for(sid, content_a).name for sid in CLASHING_IDS}
    assert len(names) == len(CLASHING_IDS)
    for name in names:
        assert "/" not in name and name not in (".", "..") and len(name) <= 73
    assert key_name("..", key_for("..", content_a).digest).startswith("sample-")
    assert stored_name(content_a, ".MP4") == content_a + ".mp4" and safe_suffix("x.m p4") == ""
    with pytest.raises(ValueError):
        stored_name("../x", ".mp4")


def test_a_fifo_is_refused_without_blocking(tmp_path, policy, template):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    started = time.monotonic()
    # In a manifest, as a path and as a file:// URL: an error verdict at once, never a hung worker.
    manifest = tmp_path / "m.jsonl"
    rows = [{"id": "p", "path": str(fifo)}, {"id": "u", "url": fifo.as_uri()}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    config = ModerationConfig(frames=1, frames_dir=tmp_path / "frames")
    out = tmp_path / "v.jsonl"
    done = threading.Event()

    def job() -> None:
        run_job(load_manifest(manifest), policy, backend, template, out, config, RunnerConfig(workers=0))
        done.set()

    threading.Thread(target=job, daemon=True).start()
    assert done.wait(20), "a FIFO hung the batch"
    assert time.monotonic() - started < 20
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [v["decision"] for v in lines] == ["review", "review"]
    assert all("not a regular file" in v["error"] for v in lines)
    from kuaimod_open.ingest.keys import file_digest

    with pytest.raises(InputError, match="not a regular file"):
        file_digest(fifo)


@pytest.mark.video
def test_concurrent_serve_uploads_with_one_id_never_see_each_others_frames(policy, template, tmp_path):
    pytest.importorskip("decord")
    pytest.importorskip("fastapi")
    import uvicorn
    from test_serve import KEY, call, multipart

    from kuaimod_open.serving.service import ServeSettings, create_app

    colours = ["red", "green", "blue", "yellow", "magenta", "cyan"]
    videos = {c: solid_video(tmp_path / f"{c}.mp4", c).read_bytes() for c in colours}

    def answer(request: Request) -> str:
        got = {nearest_colour(p) for p in request.messages[1].images}
        claimed = request.messages[1].text.split("COLOUR=")[1].split()[0]
        return verdict_json("BENIGN" if got == {claimed} else "PORN_VULGAR")

    settings = ServeSettings(api_keys=frozenset({KEY}), work_dir=tmp_path / "serve", batch_wait_s=0.05)
    config = ModerationConfig(frames=2, generate=GenerateConfig(batch_size=8))
    app = create_app(settings, policy, template, ScriptedBackend(default=answer), config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        for trial in range(5):

            def upload(colour: str, trial: int = trial) -> dict:
                body, kind = multipart({"id": f"same-{trial}", "title": f"COLOUR={colour} "}, "v.mp4", videos[colour])
                status, verdict = call(f"{base}/v1/moderate/upload", body, headers={"Content-Type": kind})
                assert status == 200, verdict
                return verdict

            with ThreadPoolExecutor(len(colours)) as pool:
                verdicts = list(pool.map(upload, colours))
            assert [v["category"] for v in verdicts] == ["BENIGN"] * len(colours), f"trial {trial}: frames mixed up"
            assert len({v["provenance"]["sample_key"] for v in verdicts}) == len(colours)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
