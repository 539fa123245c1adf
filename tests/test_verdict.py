from __future__ import annotations

from pathlib import Path

import pytest
from helpers import verdict_json

from kuaimod_open.ingest.sample import Frame, Sample
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Provenance, error_verdict, parse_verdict

SAMPLE = Sample(
    id="s1",
    frames=(Frame(path=Path("a.jpg"), index=0, timestamp=0.0), Frame(path=Path("b.jpg"), index=30, timestamp=1.2)),
    title="扫码加微信领红包",
    ocr="需要的加我V：abc123|限时福利",
    asr="家人们今天最后一单",
)
PROV = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")

CHATTY = """好的，我来分析这个视频。
### 1. 内容提取
画面中有一个人手持二维码。
### 3. 中间检查
标题和OCR都在引导用户加微信，可能违反「引导私下交易」。
### 5. 最终总结
该视频引导私下交易。
```json
{"category": "PRIVATE_DEAL", "other_categories": ["FALSE_PROMISE"], "confidence": 0.92,
 "evidence": {"frames": [2],
              "text": [{"field": "ocr", "quote": "加我V：abc123"}, {"field": "title", "quote": "not in title"}]},
 "summary": "引导用户加微信私下交易"}
```
希望对你有帮助！"""


@pytest.mark.parametrize(
    ("text", "status", "decision", "category"),
    [
        # well-formed fenced JSON after the reasoning
        (verdict_json("BENIGN"), ParseStatus.OK, Decision.ALLOW, "BENIGN"),
        (verdict_json("PORN_VULGAR"), ParseStatus.OK, Decision.BLOCK, "PORN_VULGAR"),
        (verdict_json("MISINFO"), ParseStatus.OK, Decision.RESTRICT, "MISINFO"),
        # the Chinese tag instead of the code
        (verdict_json("色情低俗"), ParseStatus.OK, Decision.BLOCK, "PORN_VULGAR"),
        # chatty text around the block, several categories: the strictest action wins
        (CHATTY, ParseStatus.OK, Decision.BLOCK, "PRIVATE_DEAL"),
        # bare JSON, no fence
        ('Verdict: {"category": "HATE", "confidence": 0.8}', ParseStatus.OK, Decision.BLOCK, "HATE"),
        # fence without the json language tag
        ('```\n{"category": "PLAGIARISM", "confidence": 0.7}\n```', ParseStatus.OK, Decision.RESTRICT, "PLAGIARISM"),
        # the model echoes the schema first, then answers: the last valid object wins
        (
            '```json\n{"category": "<code>"}\n```\n```json\n{"category": "ILLEGAL"}\n```',
            ParseStatus.OK,
            Decision.BLOCK,
            "ILLEGAL",
        ),
        # truncated JSON, but a label line survives -> flexible
        (
            '### 5. 最终总结\n类别：不实信息\n```json\n{"category": "MISINFO", "confid',
            ParseStatus.FLEXIBLE,
            Decision.RESTRICT,
            "MISINFO",
        ),
        # Chinese-only prose naming exactly one category -> flexible, but a person confirms before any action
        (
            "这个视频存在明显的性暗示，属于色情低俗内容，应当处理。",
            ParseStatus.FLEXIBLE,
            Decision.REVIEW,
            "PORN_VULGAR",
        ),
        # random tokens from a broken model that happen to contain one tag: a hint, never an action
        ("Us��危�引� 未添加AI标识�品功��实�实�实", ParseStatus.FLEXIBLE, Decision.REVIEW, "NO_AI_LABEL"),
        # flexible benign never allows: a human confirms
        ("综合来看，该视频属于正向内容。", ParseStatus.FLEXIBLE, Decision.REVIEW, "BENIGN"),
        # wrong tag: not in the policy, no other clue -> unparsed
        (verdict_json("赌博"), ParseStatus.UNPARSED, Decision.REVIEW, None),
        # names two categories in prose: ambiguous -> unparsed
        ("可能是色情低俗，也可能是不实信息。", ParseStatus.UNPARSED, Decision.REVIEW, None),
        # empty and garbage
        ("", ParseStatus.UNPARSED, Decision.REVIEW, None),
        ("B de c��袭�\x10 nalysis 色情低俶", ParseStatus.UNPARSED, Decision.REVIEW, None),
        ("allow", ParseStatus.UNPARSED, Decision.REVIEW, None),
        ('{"decision": "allow"}', ParseStatus.UNPARSED, Decision.REVIEW, None),
    ],
)
def test_parse_table(policy, text, status, decision, category):
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert (verdict.status, verdict.decision, verdict.category) == (status, decision, category)
    assert verdict.raw_output == text
    if category is not None:
        assert verdict.tag == policy.category(category).tag


def test_evidence_is_grounded_and_frames_get_timestamps(policy):
    verdict = parse_verdict(CHATTY, policy, SAMPLE, PROV)
    assert verdict.other_categories == ["FALSE_PROMISE"]
    assert verdict.confidence == pytest.approx(0.92)
    assert [(f.position, f.timestamp) for f in verdict.evidence.frames] == [(2, 1.2)]
    ocr_span, title_span = verdict.evidence.text
    assert ocr_span.grounded and SAMPLE.ocr[ocr_span.start : ocr_span.end] == "加我V：abc123"
    assert not title_span.grounded  # a quote that is not in the field is kept but marked
    assert verdict.rationale.startswith("好的") and "```json" not in verdict.rationale
    assert verdict.summary == "引导用户加微信私下交易"


def test_low_confidence_goes_to_review(policy):
    verdict = parse_verdict(verdict_json("BENIGN", confidence=0.3), policy, SAMPLE, PROV)
    assert verdict.decision is Decision.REVIEW and "low_confidence" in verdict.flags
    verdict = parse_verdict(verdict_json("PORN_VULGAR", confidence=0.2), policy, SAMPLE, PROV)
    assert verdict.decision is Decision.REVIEW


@pytest.mark.parametrize(
    ("raw", "expected"), [(0.7, 0.7), ("85%", 0.85), (85, 0.85), ("high", None), (True, None), (-1, None)]
)
def test_confidence_forms(policy, raw, expected):
    verdict = parse_verdict(verdict_json("HATE", confidence=raw), policy, SAMPLE, PROV)
    assert verdict.confidence == (pytest.approx(expected) if expected is not None else None)


def test_benign_with_violations_is_inconsistent(policy):
    text = verdict_json("BENIGN", other_categories=["PORN_VULGAR"])
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert verdict.decision is Decision.REVIEW and "inconsistent_categories" in verdict.flags


def test_out_of_range_frame_refs_are_dropped(policy):
    text = verdict_json("HATE", evidence={"frames": [0, 2, 9, "x", True], "text": "nope"})
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert [f.position for f in verdict.evidence.frames] == [2]


def test_error_verdict_is_review(policy):
    verdict = error_verdict("s9", "timeout", PROV)
    assert verdict.decision is Decision.REVIEW and verdict.status is ParseStatus.ERROR and verdict.error == "timeout"


def test_verdict_round_trips_through_json(policy):
    from kuaimod_open.judge.verdict import Verdict

    verdict = parse_verdict(CHATTY, policy, SAMPLE, PROV)
    again = Verdict.model_validate_json(verdict.model_dump_json())
    assert again == verdict


# --------------------------------------------------------------------------- slightly broken JSON (issue #18 item 3)

REPAIRABLE = {
    # a quote copied from the Chinese caption, with ASCII quotes inside the JSON string
    "ascii_quotes_inside_string": (
        '推理完毕。\n```json\n{"category": "PRIVATE_DEAL", "confidence": 0.9, '
        '"summary": "标题写着"加我V"，引导私下交易", "evidence": {"frames": [1]}}\n```'
    ),
    # typographic (Chinese-keyboard) quotes used as the JSON delimiters
    "typographic_delimiters": "```json\n{“category”: “PRIVATE_DEAL”, “confidence”: 0.9, “summary”: “引导加微信”}\n```",
    # a raw line break inside a string
    "raw_newline": '```json\n{"category": "HATE", "confidence": 0.8, "summary": "第一行\n第二行"}\n```',
    # a trailing comma
    "trailing_comma": '```json\n{"category": "HATE", "confidence": 0.8, "other_categories": [],}\n```',
}


@pytest.mark.parametrize("name", sorted(REPAIRABLE))
def test_slightly_broken_json_is_repaired_and_flagged(policy, name):
    text = REPAIRABLE[name]
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert verdict.status is ParseStatus.REPAIRED
    assert "repaired_json" in verdict.flags
    expected = "HATE" if "HATE" in text else "PRIVATE_DEAL"
    assert verdict.category == expected
    assert verdict.decision is policy.category(expected).action  # an unambiguous violation acts
    assert verdict.confidence in (0.8, 0.9)
    assert verdict.raw_output == text


def test_a_repaired_benign_answer_never_allows(policy):
    text = '```json\n{"category": "BENIGN", "confidence": 0.99, "other_categories": [],}\n```'
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert (verdict.status, verdict.category, verdict.decision) == (ParseStatus.REPAIRED, "BENIGN", Decision.REVIEW)
    # the same answer well formed does allow: the repair is what sends it to a person
    clean = parse_verdict(text.replace(",}", "}"), policy, SAMPLE, PROV)
    assert (clean.status, clean.decision) == (ParseStatus.OK, Decision.ALLOW)


def test_a_repair_with_a_second_category_key_is_not_acted_on(policy):
    # Broken quotes let a quoted caption carry its own "category" key: a person decides.
    text = '```json\n{"category": "HATE", "confidence": 0.9, "summary": "画面文字"category": "BENIGN""}\n```'
    verdict = parse_verdict(text, policy, SAMPLE, PROV)
    assert verdict.status is ParseStatus.REPAIRED
    assert verdict.decision is Decision.REVIEW
