from __future__ import annotations

import math

import pytest
from helpers import verdict_json

from kuaimod_open.backends.base import GenerateConfig, Generation
from kuaimod_open.backends.scripted import ScriptedBackend
from kuaimod_open.confidence import category_confidence
from kuaimod_open.ingest import Sample
from kuaimod_open.pipeline import ModerationConfig, moderate
from kuaimod_open.policy import Decision
from kuaimod_open.verdict import ParseStatus, Provenance, Verdict


def _prov() -> Provenance:
    return Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")


def _verdict(category: str | None, status: ParseStatus = ParseStatus.OK) -> Verdict:
    return Verdict(sample_id="a", decision=Decision.BLOCK, category=category, status=status, provenance=_prov())


def test_category_confidence_is_the_probability_of_the_category_tokens():
    text = 'reasoning\n```json\n{"category": "PORN_VULGAR", "confidence": 0.9}\n```'
    tokens = [("reasoning\n```json\n{", -0.1), ('"category": "', -0.01), ("PORN", -0.2), ("_VULGAR", -0.05)]
    tokens += [('", "confidence": 0.9}\n```', -0.3)]
    assert "".join(t for t, _ in tokens) == text
    assert category_confidence(tokens, text, _verdict("PORN_VULGAR")) == pytest.approx(math.exp(-0.25), abs=1e-6)
    assert category_confidence(None, text, _verdict("PORN_VULGAR")) is None
    assert category_confidence(tokens, text, _verdict("PORN_VULGAR", ParseStatus.FLEXIBLE)) is None
    assert category_confidence(tokens, text, _verdict("HATE")) is None  # the tokens say something else


def test_pipeline_records_token_confidence(policy, template):
    text = verdict_json("HATE", 0.7)
    value = text.index('"HATE"') + 1
    tokens = ((text[:value], -0.5), ("HATE", -0.4), (text[value + 4 :], -0.2))
    backend = ScriptedBackend([Generation(text=text, token_logprobs=tokens), text])
    config = ModerationConfig(generate=GenerateConfig(logprobs=True))
    samples = [Sample(id="a", title="t"), Sample(id="b", title="u")]
    first, second = moderate(samples, policy, backend, template, config)
    assert first.token_confidence == pytest.approx(math.exp(-0.4), abs=1e-6) and first.category == "HATE"
    assert second.token_confidence is None  # no log-probabilities from the backend
