"""``kuaimod eval`` and ``kuaimod policy diff`` end to end, with the tiny Qwen2-VL and real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kuaimod_open.cli import cli

OFFICIAL = Path(__file__).parent / "data" / "official"
REPO = Path(__file__).resolve().parent.parent

ROWS = [
    {
        "pid": "a1",
        "tag": "正向",
        "title": "今天教大家做红烧肉",
        "OCR": "红烧肉|冰糖",
        "ASR": "先把肉切块",
        "images": ["a1_0.jpg", "a1_1.jpg"],
    },
    {
        "pid": "a2",
        "tag": "引导私下交易",
        "title": "需要的私信",
        "OCR": "加我V：abc123",
        "ASR": "",
        "images": ["a2_0.jpg"],
    },
    {"pid": "a3", "tag": "色情低俗", "title": "深夜福利", "OCR": "懂的都懂", "ASR": "", "images": []},
    {"pid": "a4", "tag": "不实信息", "title": "喝这个降血糖", "OCR": "医院不会告诉你", "ASR": "", "images": []},
]


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    from PIL import Image

    (tmp_path / "images").mkdir()
    for row in ROWS:
        for i, name in enumerate(row["images"]):
            Image.new("RGB", (96, 64), (40 * i, 120, 200)).save(tmp_path / "images" / name)
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_predictions_path_prints_the_official_numbers(tmp_path):
    result = CliRunner().invoke(
        cli, ["eval", "--predictions", str(OFFICIAL / "binary_preds.jsonl"), "--mode", "binary"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == (OFFICIAL / "binary_expected.txt").read_text(encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--predictions",
            str(OFFICIAL / "multi_preds.jsonl"),
            "--mode",
            "multi",
            "--report",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith((OFFICIAL / "multi_expected.txt").read_text(encoding="utf-8"))
    assert "coverage" in result.output
    saved = json.loads((tmp_path / "r" / "official.json").read_text(encoding="utf-8"))
    assert saved["multi"]["n_total"] == 150


@pytest.mark.hf
def test_eval_runs_the_tiny_model_and_writes_the_report(tiny_model, bench, tmp_path):
    pytest.importorskip("matplotlib")
    report_dir = tmp_path / "report"
    args = [
        "eval",
        "--data",
        str(bench),
        "--model",
        str(tiny_model),
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--report",
        str(report_dir),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in (
        "report.json",
        "report.md",
        "confusion_matrix.png",
        "category_recall.png",
        "verdicts.jsonl",
        "predictions_binary.jsonl",
        "predictions_multi.jsonl",
    ):
        assert (report_dir / name).is_file(), name
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 4 and report["text_only"] is False
    assert report["config"]["model"] == str(tiny_model)
    assert report["provenance"]["model"] == [str(tiny_model)]
    unanswered = report["statuses"].get("unparsed", 0) + report["statuses"].get("error", 0)
    assert report["strict_binary"]["answered"] + unanswered == 4
    verdicts = [json.loads(x) for x in (report_dir / "verdicts.jsonl").read_text(encoding="utf-8").splitlines()]
    with_frames = {v["sample_id"]: len(v["provenance"]["frame_timestamps"]) for v in verdicts}
    assert with_frames == {"a1": 2, "a2": 1, "a3": 0, "a4": 0}
    assert "Overall Accuracy" in result.output and "text-only" not in result.output
    # running again without --resume refuses to mix runs; with --resume there is nothing left to do
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "--resume" in str(again.exception)
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.hf
def test_text_only_mode_is_announced(tiny_model, bench, tmp_path):
    (bench.parent / "images").rename(bench.parent / "elsewhere")
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--data",
            str(bench),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--report",
            str(tmp_path / "r"),
            "--no-progress",
            "--no-plots",
            "--limit",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("text-only mode") == 2  # once when it starts, once under the results
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["text_only"] is True and report["n"] == 2
    assert "Text-only run" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")


def test_unknown_tag_in_data_fails_before_the_model_loads(bench, tmp_path):
    rows = bench.read_text(encoding="utf-8").replace("不实信息", "赌博")
    bench.write_text(rows, encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["eval", "--data", str(bench), "--model", "/not/loaded", "--report", str(tmp_path)]
    )
    assert result.exit_code != 0 and "'赌博' is not a tag" in str(result.exception)


def test_eval_of_an_existing_verdict_file(policy, bench, tmp_path):
    from helpers import verdict_json

    from kuaimod_open.ingest.benchmark import load_benchmark
    from kuaimod_open.judge.verdict import Provenance, parse_verdict

    prov = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")
    answers = ["BENIGN", "PRIVATE_DEAL", "BENIGN", "MISINFO"]
    lines = [
        parse_verdict(verdict_json(a), policy, s, prov).model_dump_json()
        for s, a in zip(load_benchmark(bench), answers, strict=True)
    ]
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["eval", "--data", str(bench), "--verdicts", str(verdicts), "--report", str(tmp_path / "r"), "--no-plots"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["official_binary"]["accuracy"] == 0.75 and report["category_accuracy"] == 0.75


@pytest.mark.hf
def test_policy_diff_cli_with_the_tiny_model(tiny_model, bench, tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text(
        (REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8").replace('version: "1.1.0"', 'version: "1.1.1"'),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        cli,
        [
            "policy",
            "diff",
            str(REPO / "prompts" / "policy.yaml"),
            str(new),
            "--data",
            str(bench),
            "--model",
            str(tiny_model),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "diff.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "policy 1.1.0" in result.output and "~ *.version: 1.1.0 -> 1.1.1" in result.output
    diff = json.loads((tmp_path / "diff.json").read_text(encoding="utf-8"))
    assert diff["n"] == 4 and diff["flips"] == []  # greedy decoding: same answers, nothing flips
