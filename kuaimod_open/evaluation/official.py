"""The KuaiMod benchmark's two official evaluation scripts, reimplemented number for number.

Both scripts read a JSONL file with one ``{"tag": <gold tag>, "judgement": <response>}`` per line.

``binary_eval.py``: gold is benign iff ``tag == "正向"``; a judgement counts as benign only when it
is exactly ``"是"``, anything else counts as violative. Accuracy and the precision/recall of both
classes come from scikit-learn (0 where undefined). Recall per primary group is taken over
violative rows: caught when the judgement *contains* ``"否"``, missed when it is exactly ``"是"``,
and not counted at all otherwise. A group is reported only once one of its rows was counted.

``multi_cls_eval.py``: the predicted tag is the first tag, in the fixed order below, that occurs as
a substring of the response; rows with no tag are skipped. The prediction is then collapsed to
benign / violative and scored with denominators floored at 1, plus recall per primary group.

We keep these quirks on purpose (results must be interchangeable with other groups' runs) and
report coverage and a strict variant beside them in :mod:`kuaimod_open.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from kuaimod_open.errors import InputError
from kuaimod_open.ingest.sample import read_jsonl

BENIGN_TAG = "正向"
BENIGN_JUDGEMENT = "是"
VIOLATIVE_JUDGEMENT = "否"

# The official tag order: the multi-class script takes the FIRST of these found in a response.
OFFICIAL_TAGS: tuple[str, ...] = (
    "正向",
    "违法犯罪",
    "涉政不当言行",
    "辱骂、引战、宣扬仇恨",
    "出售违禁品",
    "历史虚无主义",
    "色情低俗",
    "不实信息",
    "危害未成年人身心健康",
    "未成年不适当行为",
    "夸大商品功效",
    "引导私下交易",
    "虚假承诺福利",
    "炒作卖货",
    "未添加AI标识",
    "盗用抄袭作品",
)

OFFICIAL_GROUPS: dict[str, tuple[str, ...]] = {
    "法律与社会安全": ("违法犯罪", "涉政不当言行", "辱骂、引战、宣扬仇恨", "出售违禁品", "历史虚无主义"),
    "内容质量与伦理": ("色情低俗", "不实信息", "危害未成年人身心健康", "未成年不适当行为"),
    "商业行为与商品宣传": ("夸大商品功效", "引导私下交易", "虚假承诺福利", "炒作卖货"),
    "知识产权与标识合规": ("未添加AI标识", "盗用抄袭作品"),
}
TAG_TO_GROUP = {tag: group for group, tags in OFFICIAL_GROUPS.items() for tag in tags}


class OfficialBinary(BaseModel):
    """What ``binary_eval.py`` prints."""

    n: int
    accuracy: float
    benign_precision: float
    benign_recall: float
    violative_precision: float
    violative_recall: float
    group_recall: dict[str, float]
    group_uncounted: int = 0  # violative rows whose judgement is neither "是" nor contains "否"

    def text(self) -> str:
        """The script's output lines, same wording and 4-decimal format."""
        lines = [
            f"Overall Accuracy: {self.accuracy:.4f}",
            f"Precision for '是': {self.benign_precision:.4f}",
            f"Recall for '是': {self.benign_recall:.4f}",
            f"Precision for '否': {self.violative_precision:.4f}",
            f"Recall for '否': {self.violative_recall:.4f}",
            "",
            "Recall for each First-Level Category:",
        ]
        lines += [f"{group}: Recall = {recall:.4f}" for group, recall in self.group_recall.items()]
        return "\n".join(lines)


class OfficialMulti(BaseModel):
    """What ``multi_cls_eval.py`` prints, plus how many rows it silently skipped."""

    n_total: int
    n_matched: int
    accuracy: float | None  # None when no row matched (the script would print nan)
    benign_precision: float
    benign_recall: float
    violative_precision: float
    violative_recall: float
    group_recall: dict[str, float]
    group_counts: dict[str, dict[str, int]]

    @property
    def coverage(self) -> float:
        """Share of rows whose response contained a known tag (the rest are skipped)."""
        return self.n_matched / self.n_total if self.n_total else 0.0

    def text(self) -> str:
        """The script's output lines, same wording and 4-decimal format."""
        acc = f"{self.accuracy:.4f}" if self.accuracy is not None else "nan"
        lines = [
            f"二分类 Accuracy: {acc}",
            f"正向 Precision: {self.benign_precision:.4f}",
            f"正向 Recall: {self.benign_recall:.4f}",
            f"非正向 Precision: {self.violative_precision:.4f}",
            f"非正向 Recall: {self.violative_recall:.4f}",
            "各一级类别的 Recall:",
        ]
        for group, recall in self.group_recall.items():
            counts = self.group_counts[group]
            lines += [f"{{'tp': {counts['tp']}, 'fn': {counts['fn']}}}", f"{group}: {recall:.4f}"]
        return "\n".join(lines)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def official_binary(rows: Iterable[tuple[str, str]]) -> OfficialBinary:
    """Score ``(gold tag, judgement)`` pairs exactly as ``binary_eval.py`` does."""
    tp_b = fp_b = fn_b = tp_v = n = correct = 0
    stats: dict[str, dict[str, int]] = {}
    uncounted = 0
    for tag, judgement in rows:
        n += 1
        gold_benign = tag == BENIGN_TAG
        pred_benign = judgement == BENIGN_JUDGEMENT
        correct += gold_benign == pred_benign
        tp_b += gold_benign and pred_benign
        fp_b += pred_benign and not gold_benign
        fn_b += gold_benign and not pred_benign
        tp_v += not gold_benign and not pred_benign
        group = TAG_TO_GROUP.get(tag)
        if group is None or gold_benign:
            continue
        if VIOLATIVE_JUDGEMENT in judgement:
            stats.setdefault(group, {"tp": 0, "fn": 0})["tp"] += 1
        elif pred_benign:
            stats.setdefault(group, {"tp": 0, "fn": 0})["fn"] += 1
        else:
            uncounted += 1
    fp_v = fn_b  # predicted violative, gold benign
    fn_v = fp_b  # predicted benign, gold violative
    return OfficialBinary(
        n=n,
        accuracy=_ratio(correct, n),
        benign_precision=_ratio(tp_b, tp_b + fp_b),
        benign_recall=_ratio(tp_b, tp_b + fn_b),
        violative_precision=_ratio(tp_v, tp_v + fp_v),
        violative_recall=_ratio(tp_v, tp_v + fn_v),
        group_recall={g: _ratio(s["tp"], s["tp"] + s["fn"]) for g, s in stats.items()},
        group_uncounted=uncounted,
    )


def first_official_tag(response: str) -> str | None:
    """The first official tag (in the fixed order) that occurs in ``response``, as the script does."""
    return next((tag for tag in OFFICIAL_TAGS if tag in response), None)


def official_multi(rows: Iterable[tuple[str, str]]) -> OfficialMulti:
    """Score ``(gold tag, response)`` pairs exactly as ``multi_cls_eval.py`` does."""
    total = matched = correct = 0
    tp_b = fp_b = tn_v = fn_b = 0
    counts: dict[str, dict[str, int]] = {}
    for tag, response in rows:
        total += 1
        if tag != BENIGN_TAG and tag not in TAG_TO_GROUP:
            raise InputError(f"gold tag '{tag}' is not a KuaiMod tag (the official script would crash on it)")
        predicted = first_official_tag(response)
        if predicted is None:
            continue
        matched += 1
        gold_violative = tag != BENIGN_TAG
        pred_violative = predicted != BENIGN_TAG
        correct += gold_violative == pred_violative
        tp_b += not pred_violative and not gold_violative
        fp_b += not pred_violative and gold_violative
        tn_v += pred_violative and gold_violative
        fn_b += pred_violative and not gold_violative
        if gold_violative:
            group = counts.setdefault(TAG_TO_GROUP[tag], {"tp": 0, "fn": 0})
            group["tp" if pred_violative else "fn"] += 1
    return OfficialMulti(
        n_total=total,
        n_matched=matched,
        accuracy=correct / matched if matched else None,
        benign_precision=tp_b / max(1, tp_b + fp_b),
        benign_recall=tp_b / max(1, tp_b + fn_b),
        violative_precision=tn_v / max(1, tn_v + fn_b),
        violative_recall=tn_v / max(1, tn_v + fp_b),
        group_recall={g: c["tp"] / max(1, c["tp"] + c["fn"]) for g, c in counts.items()},
        group_counts=counts,
    )


def read_predictions(path: str | Path) -> list[tuple[str, str]]:
    """Read an official-format predictions file: one ``{"tag": ..., "judgement": ...}`` per line."""
    rows = []
    for number, obj in read_jsonl(path):
        tag, judgement = obj.get("tag"), obj.get("judgement")
        if not isinstance(tag, str) or not isinstance(judgement, str):
            raise InputError(f"{path}:{number}: each line needs text fields 'tag' and 'judgement'")
        rows.append((tag, judgement))
    if not rows:
        raise InputError(f"{path}: no predictions found")
    return rows


__all__ = [
    "OFFICIAL_GROUPS",
    "OFFICIAL_TAGS",
    "OfficialBinary",
    "OfficialMulti",
    "first_official_tag",
    "official_binary",
    "official_multi",
    "read_predictions",
]
