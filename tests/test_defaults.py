"""Defaults that work on the install the user has: optional extractors, an offline default model.

An install without the OCR/ASR extras is simulated by an import hook that makes their packages missing;
the offline checks run the real `kuaimod` command in a fresh interpreter (the hub client reads its
settings at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _kuaimod(args: list[str], cwd: Path, *, env: dict, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "kuaimod_open", *args], cwd=cwd, env=environ, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


class _NotInstalled:
    """The packages of the ocr/asr extras are missing, exactly as on an install without those extras."""

    names = frozenset({"rapidocr_onnxruntime", "faster_whisper"})

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


@pytest.fixture
def without_extractors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in _NotInstalled.names]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(), *sys.meta_path])


@pytest.mark.hf
@pytest.mark.video
def test_moderate_on_an_install_without_ocr_and_asr_skips_them_with_one_line_each(
    tiny_model, video_dir, tmp_path, without_extractors
):
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    out = tmp_path / "v.jsonl"
    args = ["moderate", str(video_dir / "bikes.mp4"), "--model", str(tiny_model), "--out", str(out), "--no-progress"]
    args += ["--frames", "2", "--max-new-tokens", "8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "skipped" in line]
    assert len(notes) == 2, result.output
    assert notes[0].startswith("note: OCR skipped: rapidocr-onnxruntime is not installed")
    assert "kuaimod_open[ocr]" in notes[0] and "--no-ocr" in notes[0]
    assert notes[1].startswith("note: ASR skipped: faster-whisper is not installed") and "kuaimod_open[asr]" in notes[1]
    (verdict,) = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    # The video was decoded and went to the model (8 random tokens end in a truncated-answer verdict: review).
    assert verdict["sample_id"] == "bikes" and verdict["stage"] == "vlm" and verdict["decision"] == "review"
    assert len(verdict["provenance"]["frame_timestamps"]) == 3

    # Asked for explicitly, a missing extractor is an error before any model loads, with the fix.
    explicit = CliRunner().invoke(cli, [*args, "--ocr"])
    assert explicit.exit_code != 0 and "pip install 'kuaimod_open[ocr]'" in str(explicit.exception)
    # Benchmark rows carry their text: no OCR/ASR, so no notice either.
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"pid": "r1", "title": "标题", "OCR": "", "ASR": ""}) + "\n", encoding="utf-8")
    text_args = ["moderate", str(rows), "--model", str(tiny_model), "--out", str(tmp_path / "r.jsonl")]
    text_only = CliRunner().invoke(cli, [*text_args, "--no-progress", "--max-new-tokens", "8"])
    assert text_only.exit_code == 0 and "skipped" not in text_only.output, text_only.output


@pytest.mark.parametrize("offline", ["unreachable hub", "HF_HUB_OFFLINE=1"])
def test_offline_the_default_model_fails_in_seconds_with_the_tiny_model_hint(video_dir, tmp_path, offline):
    """Before: 166 s of hub retries. A hub that cannot be reached is found out with one short request."""
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HOME": str(tmp_path / "hf-home")}
    if offline == "HF_HUB_OFFLINE=1":
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    else:  # no name resolves under .invalid: the same as a machine without a network
        env |= {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "https://hub.kuaimod-test.invalid"}
    started = time.monotonic()
    result = _kuaimod(["moderate", str(video_dir / "bikes.mp4"), "--no-ocr", "--no-asr", "--out",
                       str(tmp_path / "v.jsonl")], tmp_path, env=env, timeout=120)  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in result.stderr and "kuaimod tiny-model" in result.stderr
    assert "Retrying" not in result.stderr
    assert seconds < 30, f"took {seconds:.1f}s"
