from __future__ import annotations

from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.errors import InputError, PolicyError
from kuaimod_open.evaluation.metrics import NO_ANSWER, evaluate
from kuaimod_open.evaluation.official import official_binary, official_multi, read_predictions
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.verdict import Provenance, parse_verdict

OFFICIAL = Path(__file__).parent / "data" / "official"
PROV = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")


# ---------------------------------------------------------------- golden outputs of the official scripts
# binary_expected.txt / multi_expected.txt were produced by running the benchmark's own
# binary_eval.py and multi_cls_eval.py on the two synthetic prediction files beside them.


def test_binary_matches_the_official_script_output():
    report = official_binary(read_predictions(OFFICIAL / "binary_preds.jsonl"))
    assert report.text() + "\n" == (OFFICIAL / "binary_expected.txt").read_text(encoding="utf-8")


def test_multi_matches_the_official_script_output():
    report = official_multi(read_predictions(OFFICIAL / "multi_preds.jsonl"))
    assert report.text() + "\n" == (OFFICIAL / "multi_expected.txt").read_text(encoding="utf-8")
    assert report.n_total == 150 and report.n_matched < 150


# ---------------------------------------------------------------- hand-computed edge cases


def test_binary_quirks_by_hand():
    rows = [
        ("正向", "是"),  # benign, correct
        ("正向", "否"),  # benign flagged
        ("色情低俗", "否"),  # caught
        ("色情低俗", "否，违规"),  # overall: not exactly 是 -> violative; group: contains 否 -> caught
        ("违法犯罪", "是"),  # missed
        ("违法犯罪", "不确定"),  # overall violative (caught!), group: not counted at all
    ]
    r = official_binary(rows)
    assert r.accuracy == pytest.approx(4 / 6)
    assert (r.benign_precision, r.benign_recall) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    assert (r.violative_precision, r.violative_recall) == (pytest.approx(3 / 4), pytest.approx(3 / 4))
    assert r.group_recall == {"内容质量与伦理": 1.0, "法律与社会安全": 0.0}
    assert r.group_uncounted == 1


def test_binary_with_no_benign_predictions_reports_zero_not_nan():
    r = official_binary([("色情低俗", "否"), ("正向", "否")])
    assert r.benign_precision == 0.0 and r.benign_recall == 0.0 and r.accuracy == 0.5
    assert "知识产权与标识合规" not in r.group_recall  # groups without rows are not reported


def test_multi_quirks_by_hand():
    rows = [
        ("正向", "正向"),
        ("色情低俗", "该视频不属于正向，而是色情低俗"),  # 正向 comes first in the official order -> benign!
        ("色情低俗", "色情低俗"),
        ("引导私下交易", "无法判断"),  # no tag -> skipped entirely
        ("正向", "不实信息"),
    ]
    r = official_multi(rows)
    assert (r.n_total, r.n_matched) == (5, 4)
    assert r.coverage == pytest.approx(0.8)
    assert r.accuracy == pytest.approx(2 / 4)
    assert r.benign_precision == pytest.approx(1 / 2) and r.benign_recall == pytest.approx(1 / 2)
    assert r.violative_precision == pytest.approx(1 / 2) and r.violative_recall == pytest.approx(1 / 2)
    assert r.group_recall == {"内容质量与伦理": 0.5}


def test_multi_with_nothing_matched():
    r = official_multi([("正向", "???")])
    assert r.accuracy is None and r.coverage == 0.0 and "nan" in r.text()


def test_multi_unknown_gold_tag_is_an_error():
    with pytest.raises(InputError, match="not a KuaiMod tag"):
        official_multi([("赌博", "正向")])


def test_bad_prediction_files(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"tag": "正向"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="'tag' and 'judgement'"):
        read_predictions(bad)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no predictions"):
        read_predictions(empty)


# ---------------------------------------------------------------- our metrics on verdicts

TOY = [  # (gold tag, model answer)
    ("正向", verdict_json("BENIGN")),
    ("正向", verdict_json("PORN_VULGAR")),
    ("色情低俗", verdict_json("PORN_VULGAR")),
    ("色情低俗", "garbage"),  # unparsed
    ("引导私下交易", verdict_json("PRIVATE_DEAL")),
    ("引导私下交易", verdict_json("BENIGN")),
]


def _toy(policy):
    samples = [Sample(id=str(i), label=tag) for i, (tag, _) in enumerate(TOY)]
    verdicts = [parse_verdict(text, policy, s, PROV) for s, (_, text) in zip(samples, TOY, strict=True)]
    return samples, verdicts


def test_per_category_scores_by_hand(policy):
    samples, verdicts = _toy(policy)
    report = evaluate(samples, verdicts, policy)
    cats = {c.code: c for c in report.categories}
    # BENIGN: gold 2, predicted 2 (s0, s5), tp 1 -> P 1/2, R 1/2
    assert (cats["BENIGN"].precision, cats["BENIGN"].recall, cats["BENIGN"].f1) == (0.5, 0.5, 0.5)
    # PORN_VULGAR: gold 2, predicted 2 (s1, s2), tp 1
    assert (cats["PORN_VULGAR"].support, cats["PORN_VULGAR"].predicted, cats["PORN_VULGAR"].recall) == (2, 2, 0.5)
    # PRIVATE_DEAL: gold 2, predicted 1, tp 1 -> P 1, R 1/2, F1 2/3
    assert cats["PRIVATE_DEAL"].f1 == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert report.category_accuracy == pytest.approx(3 / 6)
    labels = report.confusion_labels
    assert labels[-1] == NO_ANSWER
    porn = report.confusion[labels.index("PORN_VULGAR")]
    assert porn[labels.index("PORN_VULGAR")] == 1 and porn[labels.index(NO_ANSWER)] == 1
    assert sum(map(sum, report.confusion)) == 6


def test_strict_and_official_binary_on_verdicts(policy):
    samples, verdicts = _toy(policy)
    report = evaluate(samples, verdicts, policy)
    # official binary: the unparsed answer is "not 是" -> counted as violative overall
    assert report.official_binary.violative_recall == pytest.approx(3 / 4)
    # strict: the unparsed answer is a miss
    assert report.strict_binary.violative_recall == pytest.approx(2 / 4)
    assert report.strict_binary.accuracy == pytest.approx(3 / 6)
    assert report.strict_binary.answered == 5
    # multi-class: the unparsed raw text contains no tag -> skipped by the official script
    assert report.official_multi.n_matched == 5
    assert report.unparsed_share == pytest.approx(1 / 6) and report.review_share == pytest.approx(1 / 6)


def test_unknown_gold_tag_and_missing_verdicts_are_errors(policy):
    samples, verdicts = _toy(policy)
    with pytest.raises(PolicyError, match="'赌博' is not a tag"):
        evaluate([Sample(id="0", label="赌博")], verdicts, policy)
    with pytest.raises(InputError, match="no verdict for sample 9"):
        evaluate([*samples, Sample(id="9", label="正向")], verdicts, policy)
    with pytest.raises(InputError, match="no gold label"):
        evaluate([Sample(id="0")], verdicts, policy)


def test_report_files(policy, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from kuaimod_open.evaluation.report import write_predictions, write_report

    samples, verdicts = _toy(policy)
    report = evaluate(samples, verdicts, policy, config={"data": "toy"})
    paths = write_report(report, tmp_path / "r")
    names = {p.name for p in paths}
    assert names == {"report.json", "report.md", "confusion_matrix.png", "category_recall.png"}
    for png in ("confusion_matrix.png", "category_recall.png"):
        with Image.open(tmp_path / "r" / png) as image:
            assert image.size[0] > 500
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "KuaiMod-7B" in md and "| 0.924 |" in md and "Text-only run" in md
    write_predictions(tmp_path / "r", samples, verdicts, policy)
    rows = read_predictions(tmp_path / "r" / "predictions_binary.jsonl")
    assert official_binary(rows) == report.official_binary
    assert official_multi(read_predictions(tmp_path / "r" / "predictions_multi.jsonl")) == report.official_multi


def test_policy_diff_lists_flips_and_deltas(policy):
    import yaml

    from kuaimod_open.evaluation.policy_diff import diff_policies, render_diff
    from kuaimod_open.judge.policy import parse_policy

    data = yaml.safe_load((Path(__file__).parent.parent / "prompts" / "policy.yaml").read_text(encoding="utf-8"))
    for cat in data["categories"]:
        if cat["code"] == "PRIVATE_DEAL":
            cat["action"] = "review"
    data["version"] = "99.0.0"  # any version other than the shipped one
    new = parse_policy(yaml.safe_dump(data, allow_unicode=True))
    samples, _ = _toy(policy)

    def predict(batch, pol):
        return [parse_verdict(text, pol, s, PROV) for s, (_, text) in zip(batch, TOY, strict=True)]

    diff = diff_policies(samples, policy, new, predict)
    assert [(c.code, c.field) for c in diff.changes] == [("*", "version"), ("PRIVATE_DEAL", "action")]
    assert [(f.sample_id, f.old_decision, f.new_decision) for f in diff.flips] == [("4", "block", "review")]
    assert diff.deltas["review_share"] == pytest.approx(1 / 6)
    assert diff.deltas["binary_accuracy"] == 0.0
    assert "PRIVATE_DEAL.action: block -> review" in render_diff(diff)
