"""The benchmark through `datasets`: a dataset folder or hub id, its split, and its frames (folder or archive)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.benchmark import load_eval_data

pytest.importorskip("datasets")

ROWS = [
    {"pid": "101", "tag": "正向", "title": "做菜", "OCR": "红烧肉", "ASR": "", "images": ["101_0.jpg", "101_1.jpg"]},
    {"pid": "102", "tag": "引导私下交易", "title": "私聊", "OCR": None, "ASR": "加我V", "images": ["102_0.jpg"]},
    {"pid": "103", "tag": "色情低俗", "title": "深夜", "OCR": "", "ASR": "", "images": []},
]
# Sorts before test/benchmark.jsonl: the old hub loader took the first *.jsonl alphabetically.
DECOY = [{"pid": "x1", "tag": "正向", "title": "not the benchmark", "OCR": "", "ASR": "", "images": []}]


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _dataset(folder: Path, *, evil: bool = False) -> Path:
    """The KuaiMod hub layout: test/benchmark.jsonl + test/images.tar.gz (frames one folder down)."""
    (folder / "test").mkdir(parents=True)
    (folder / "dev").mkdir()
    (folder / "test" / "benchmark.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8"
    )
    (folder / "dev" / "aaa.jsonl").write_text(json.dumps(DECOY[0], ensure_ascii=False) + "\n", encoding="utf-8")
    with tarfile.open(folder / "test" / "images.tar.gz", "w:gz") as tar:
        members = [(f"images/{name}", _jpeg((10 * i, 100, 200))) for i, name in enumerate(["101_0.jpg", "101_1.jpg",
                                                                                           "102_0.jpg"])]  # fmt: skip
        if evil:
            members += [("../../escaped.jpg", _jpeg((0, 0, 0))), ("/tmp/absolute.jpg", _jpeg((0, 0, 0)))]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KUAIMOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


def test_a_dataset_folder_loads_its_split_with_frames_from_the_archive(tmp_path):
    folder = _dataset(tmp_path / "KuaiMod")
    samples, root = load_eval_data(str(folder))
    assert [s.id for s in samples] == ["101", "102", "103"]  # the test split, not the decoy
    assert [len(s.frames) for s in samples] == [2, 1, 0] and samples[1].ocr == "" and samples[1].label == "引导私下交易"
    assert root is not None and root.is_relative_to(tmp_path / "cache" / "benchmarks")
    assert all(f.path.is_file() for s in samples for f in s.frames)
    again, root_again = load_eval_data(str(folder))  # extracted once, reused
    assert root_again == root and [s.id for s in again] == ["101", "102", "103"]
    decoy, _ = load_eval_data(str(folder), split="validation")  # "dev" is datasets' validation split
    assert [s.id for s in decoy] == ["x1"]
    with pytest.raises(ConfigError, match="train"):
        load_eval_data(str(folder), split="train")
    own = tmp_path / "own-frames"
    own.mkdir()
    (own / "103_0.jpg").write_bytes(_jpeg((1, 2, 3)))
    _, given = load_eval_data(str(folder), frames_root=own)
    assert given == own


def test_hub_id_downloads_rows_and_frames_then_loads_the_split_not_the_first_jsonl(tmp_path, monkeypatch):
    import huggingface_hub

    folder = _dataset(tmp_path / "snapshot")
    asked = {}

    def snapshot_download(*, repo_id: str, repo_type: str, allow_patterns: list[str]) -> str:
        asked.update(repo_id=repo_id, repo_type=repo_type, patterns=allow_patterns)
        return str(folder)  # what the hub client returns: the local snapshot folder

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    samples, root = load_eval_data("hf://KuaiMod/KuaiMod")
    assert asked["repo_id"] == "KuaiMod/KuaiMod" and asked["repo_type"] == "dataset"
    assert "*images.tar.gz" in asked["patterns"] and "*.jsonl" in asked["patterns"]
    assert [s.id for s in samples] == ["101", "102", "103"] and root is not None
    load_eval_data("hf://KuaiMod/KuaiMod", frames_root=tmp_path)  # frames given: the archive is not downloaded
    assert not any("images" in p for p in asked["patterns"])


def test_archive_members_cannot_escape_the_cache(tmp_path):
    folder = _dataset(tmp_path / "ds", evil=True)
    samples, root = load_eval_data(str(folder))
    assert sum(len(s.frames) for s in samples) == 3
    assert not (tmp_path / "escaped.jpg").exists() and not Path("/tmp/absolute.jpg").exists()
    assert {p.name for p in root.rglob("*.jpg")} == {"101_0.jpg", "101_1.jpg", "102_0.jpg"}


def test_rows_that_are_not_benchmark_rows_fail_clearly(tmp_path):
    (tmp_path / "bad" / "test").mkdir(parents=True)
    (tmp_path / "bad" / "test" / "rows.jsonl").write_text('{"id": "1", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not KuaiMod benchmark rows"):
        load_eval_data(str(tmp_path / "bad"))


def test_eval_scores_a_dataset_folder(tmp_path, policy):
    from helpers import verdict_json

    from kuaimod_open.cli import cli
    from kuaimod_open.judge.verdict import Provenance, parse_verdict

    folder = _dataset(tmp_path / "KuaiMod")
    samples, _ = load_eval_data(str(folder))
    prov = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")
    answers = ["BENIGN", "PRIVATE_DEAL", "BENIGN"]
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("".join(parse_verdict(verdict_json(a), policy, s, prov).model_dump_json() + "\n"
                                for s, a in zip(samples, answers, strict=True)), encoding="utf-8")  # fmt: skip
    args = ["eval", "--data", str(folder), "--verdicts", str(verdicts), "--report", str(tmp_path / "r"), "--no-plots"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 3 and report["config"]["split"] == "test"
