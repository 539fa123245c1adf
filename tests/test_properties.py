"""Property-based tests: the verdict parser and the policy loader never crash and never allow garbage."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kuaimod_open.errors import PolicyError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Decision, load_policy, parse_policy
from kuaimod_open.judge.prompt import build_messages, load_template
from kuaimod_open.judge.verdict import ParseStatus, Provenance, parse_verdict

REPO = Path(__file__).resolve().parent.parent
POLICY = load_policy(REPO / "prompts" / "policy.yaml")
TEMPLATE = load_template(REPO / "prompts" / "moderation.md")
PROV = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")
SAMPLE = Sample(id="s", title="t", ocr="o", asr="a")
# CI (KUAIMOD_CI=1, set by .ci/run) replays the same examples every run, so a landing is never blocked by a
# chance discovery; local runs draw new ones each time and are where new failures are found (then pinned
# with @example).
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("KUAIMOD_CI")),
)

tags = st.sampled_from([c.tag for c in POLICY.categories] + [c.code for c in POLICY.categories])
fragments = st.one_of(
    st.text(max_size=40),
    tags,
    st.sampled_from(["{", "}", "```json\n", "```", '"category":', "类别：", "allow", "正向", "null", "\n"]),
)


@SETTINGS
@given(st.lists(fragments, max_size=25).map("".join))
def test_parser_never_raises_and_only_allows_well_formed_benign(text):
    verdict = parse_verdict(text, POLICY, SAMPLE, PROV)
    if verdict.decision is Decision.ALLOW:
        assert verdict.status is ParseStatus.OK and verdict.category == POLICY.benign
    if verdict.status is ParseStatus.UNPARSED:
        assert verdict.decision is Decision.REVIEW and verdict.category is None


@SETTINGS
@given(st.text(max_size=400))
def test_random_text_is_never_allowed(text):
    assert parse_verdict(text, POLICY, SAMPLE, PROV).decision is not Decision.ALLOW or "{" in text or "```" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20) | tags,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10) | tags, children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["category", "confidence", "evidence", "other_categories", "summary", "tag"]),
        json_values,
        max_size=6,
    )
)
def test_any_json_shape_parses_without_error(obj):
    text = "reasoning\n```json\n" + json.dumps(obj, ensure_ascii=False, default=str) + "\n```"
    verdict = parse_verdict(text, POLICY, SAMPLE, PROV)
    if verdict.confidence is not None:
        assert 0.0 <= verdict.confidence <= 1.0
    if verdict.decision is Decision.ALLOW:
        assert verdict.category == POLICY.benign


SHIPPED = yaml.safe_load((REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8"))


@SETTINGS
@given(st.data())
def test_policy_loader_either_loads_or_raises_policy_error(data):
    doc = json.loads(json.dumps(SHIPPED))
    for _ in range(data.draw(st.integers(1, 3))):
        cats = doc.get("categories")
        usable = isinstance(cats, list) and cats and all(isinstance(c, dict) and c for c in cats)
        target = data.draw(st.sampled_from(cats)) if usable and data.draw(st.booleans()) else doc
        key = data.draw(st.sampled_from(sorted(target) + ["extra_key"]))
        target[key] = data.draw(json_values)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        policy = parse_policy(text, source="fuzz.yaml")
    except PolicyError as exc:
        assert "fuzz.yaml" in str(exc)
        return
    assert policy.benign_category.action is Decision.ALLOW


@SETTINGS
@given(st.text(max_size=2000))
@example("=")  # once slipped past the syntax check and raised a bare yaml ConstructorError
def test_policy_loader_survives_arbitrary_text(text):
    try:
        parse_policy(text, source="junk.yaml")
    except PolicyError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_untrusted_text_never_escapes_its_fence(title, ocr):
    _, user = build_messages(Sample(id="x", title=title, ocr=ocr), POLICY, TEMPLATE)
    text = user.text
    assert text.count("</untrusted>") == 4  # only our own closing fences
    assert re.search(r"<\|[^|<>]{0,40}\|>", text) is None  # no chat-template special token survives
