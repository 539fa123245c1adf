from __future__ import annotations

import math

import pytest
from helpers import verdict_json

from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import GenerateConfig, Generation
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.confidence import category_confidence
from kuaimod_open.judge.pipeline import ModerationConfig, moderate
from kuaimod_open.judge.policy import Decision
from kuaimod_open.judge.verdict import ParseStatus, Provenance, Verdict


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


# --------------------------------------------------------------------------- calibration of token confidence


def _labelled_run(policy, n: int = 200, seed: int = 0):
    """An over-confident model: it is right with probability ``0.5 + 0.4 * p`` whatever it says (p in 0.5-1)."""
    import random

    from kuaimod_open.judge.verdict import parse_verdict

    rng = random.Random(seed)
    samples, verdicts = [], []
    for i in range(n):
        p = rng.uniform(0.5, 1.0)
        right = rng.random() < 0.5 + 0.4 * (p - 0.5) * 2 - 0.2
        sample = Sample(id=f"s{i}", label="色情低俗" if right else "正向")
        verdict = parse_verdict(verdict_json("PORN_VULGAR"), policy, sample, _prov())
        samples.append(sample)
        verdicts.append(verdict.model_copy(update={"token_confidence": p}))
    return samples, verdicts


def test_fit_confidence_calibration_improves_calibration_and_round_trips(policy, tmp_path):
    from kuaimod_open.judge.confidence import (
        expected_calibration_error,
        fit_confidence_calibration,
        load_confidence_calibration,
    )

    samples, verdicts = _labelled_run(policy)
    unparsed = Verdict(sample_id="s0", decision=Decision.REVIEW, status=ParseStatus.UNPARSED, provenance=_prov())
    fitted = fit_confidence_calibration([*verdicts, unparsed], samples, policy)
    assert fitted.n == 200 and fitted.skipped == 1 and fitted.calibrator.method == "sigmoid"
    assert fitted.auc is not None and fitted.auc > 0.6  # higher token confidence really is right more often
    assert fitted.ece_after < 0.1 < fitted.ece_before  # the raw probabilities are over-confident
    assert fitted.ece_before == pytest.approx(
        expected_calibration_error([v.token_confidence for v in verdicts], [s.label == "色情低俗" for s in samples])
    )
    low, high = fitted.apply(0.55), fitted.apply(0.95)
    assert low is not None and high is not None and low < high < 0.95  # monotone, and pulled down
    assert fitted.apply(None) is None
    assert fitted.models == ["m"] and fitted.policy_versions == ["1"]
    path = fitted.save(tmp_path / "cal.json")
    again = load_confidence_calibration(path)
    assert again.apply(0.8) == fitted.apply(0.8) and again.digest == fitted.digest


def test_calibration_refuses_too_little_or_unmatched_data(policy, tmp_path):
    from kuaimod_open.errors import ConfigError, InputError
    from kuaimod_open.judge.confidence import fit_confidence_calibration, load_confidence_calibration

    samples, verdicts = _labelled_run(policy, n=10)
    with pytest.raises(InputError, match="only 10 verdicts carry a token confidence.*--logprobs"):
        fit_confidence_calibration(verdicts, samples, policy)
    with pytest.raises(InputError, match="no labelled sample"):
        fit_confidence_calibration(verdicts, samples[1:], policy)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a confidence calibration.*kuaimod calibrate-confidence"):
        load_confidence_calibration(bad)


def test_pipeline_applies_the_calibration_and_records_it(policy, template):
    from kuaimod_open.judge.confidence import fit_confidence_calibration

    samples, verdicts = _labelled_run(policy)
    calibration = fit_confidence_calibration(verdicts, samples, policy)
    text = verdict_json("HATE", 0.99)
    value = text.index('"HATE"') + 1
    tokens = ((text[:value], -0.5), ("HATE", -0.05), (text[value + 4 :], -0.2))
    unsure = ((text[:value], -0.5), ("HATE", -0.6), (text[value + 4 :], -0.2))
    backend = ScriptedBackend(
        [Generation(text=text, token_logprobs=tokens), Generation(text=text, token_logprobs=unsure)]
    )
    config = ModerationConfig(generate=GenerateConfig(logprobs=True), confidence_calibration=calibration)
    verdict, doubtful = moderate(
        [Sample(id="a", title="t"), Sample(id="b", title="u")], policy, backend, template, config
    )
    assert verdict.token_confidence == pytest.approx(math.exp(-0.05), abs=1e-6)
    assert verdict.calibrated_confidence == calibration.apply(verdict.token_confidence)
    assert policy.min_confidence < verdict.calibrated_confidence < verdict.token_confidence
    assert verdict.decision is Decision.BLOCK and verdict.provenance.calibration_digest == calibration.digest
    # the model wrote confidence 0.99 both times, but the calibrated probability of the second is below
    # the policy's min_confidence: a person decides
    assert doubtful.calibrated_confidence < policy.min_confidence
    assert doubtful.decision is Decision.REVIEW and "low_calibrated_confidence" in doubtful.flags


def test_calibrate_confidence_cli_and_moderate_with_it(policy, tiny_model, videos, tmp_path):
    import json

    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    samples, verdicts = _labelled_run(policy)
    data = tmp_path / "golden.jsonl"
    data.write_text(
        "".join(json.dumps({"pid": s.id, "tag": s.label, "title": "t"}, ensure_ascii=False) + "\n" for s in samples),
        encoding="utf-8",
    )
    run = tmp_path / "verdicts.jsonl"
    run.write_text("".join(v.model_dump_json() + "\n" for v in verdicts), encoding="utf-8")
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(cli, ["calibrate-confidence", str(run), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fit on 200 verdicts" in result.output and out.is_file()
    # the real transformers path with logprobs on: the tiny model's answers are unparsed, so there is no
    # token confidence to calibrate, but the run records which calibration it used
    pytest.importorskip("decord")
    moderated = tmp_path / "m.jsonl"
    args = ["moderate", str(videos[0]), "--model", str(tiny_model), "--device", "cpu", "--frames", "2"]
    args += ["--max-new-tokens", "8", "--out", str(moderated), "--no-progress", "--confidence-calibration", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = json.loads(moderated.read_text(encoding="utf-8").splitlines()[0])
    assert line["provenance"]["calibration_digest"] and line["calibrated_confidence"] is None
    bad = CliRunner().invoke(cli, ["calibrate-confidence", str(run), "--data", str(data), "--out", str(out)[:-5]])
    assert bad.exit_code == 0  # any path is fine for the output; a missing input is not:
    missing = CliRunner().invoke(cli, ["calibrate-confidence", str(tmp_path / "nope.jsonl"), "--data", str(data)])
    assert missing.exit_code != 0 and "does not exist" in missing.output
