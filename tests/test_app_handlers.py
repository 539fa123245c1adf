"""Unit tests of the review app's plain handler functions (no browser, no Gradio server)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from kuaimod_open.app import config as cfg  # noqa: E402
from kuaimod_open.app import evaluation as ev  # noqa: E402
from kuaimod_open.app import handlers as h  # noqa: E402
from kuaimod_open.app import media  # noqa: E402
from kuaimod_open.app import policy_editor as pe  # noqa: E402
from kuaimod_open.app.audit import audit_rows  # noqa: E402
from kuaimod_open.app.loading import load_verdict_file, seed_demo  # noqa: E402
from kuaimod_open.app.queue import NO_CATEGORY, review_queue  # noqa: E402
from kuaimod_open.errors import ConfigError, PolicyError  # noqa: E402
from kuaimod_open.judge.verdict import Verdict  # noqa: E402
from kuaimod_open.loop.feedback import FeedbackEvent, FeedbackKind, add_feedback, latest_verdicts, record_verdict  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ctx(tmp_path: Path) -> h.ReviewContext:
    config = cfg.ReviewConfig(
        db=f"sqlite:///{tmp_path / 'review.db'}",
        policy_default=REPO / "prompts" / "policy.yaml",
        policy_versions_dir=tmp_path / "policies",
        report_roots=(tmp_path / "runs",),
    )
    context = h.ReviewContext(config)
    seed_demo(context.store, context.policy()[0], tmp_path / "frames")
    return context


def rows(ctx: h.ReviewContext, sql: str) -> list[tuple]:
    path = ctx.config.db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def requeue(ctx: h.ReviewContext, sample_id: str, minutes: int = 5) -> None:
    """Store a copy of the sample's latest verdict, made a few minutes from now."""
    _, verdict = latest_verdicts(ctx.store)[sample_id]
    later = datetime.now(UTC) + timedelta(minutes=minutes)
    record_verdict(ctx.store, verdict.model_copy(update={"provenance": verdict.provenance.model_copy(
        update={"created_at": later})}))  # fmt: skip


# --------------------------------------------------------------------------- access and media


def test_loopback_and_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cfg.is_loopback("127.0.0.1") and cfg.is_loopback("::1") and cfg.is_loopback("localhost")
    assert not cfg.is_loopback("0.0.0.0") and not cfg.is_loopback("review.example")
    cfg.check_access("127.0.0.1", {})
    with pytest.raises(ConfigError, match="refusing to bind to 0.0.0.0 without credentials"):
        cfg.check_access("0.0.0.0", {})
    cfg.check_access("0.0.0.0", {"alice": "pw"})
    monkeypatch.setenv(cfg.USERS_ENV, "alice:pw, bob:p:w2")
    assert cfg.load_users() == {"alice": "pw", "bob": "p:w2"}
    users_file = tmp_path / "users.txt"
    users_file.write_text("# reviewers\ncarol:secret\n", encoding="utf-8")
    assert cfg.load_users(users_file) == {"carol": "secret"}
    with pytest.raises(ConfigError, match="name:password"):
        cfg.parse_users("alice", "x")


def test_media_paths_stay_inside_roots(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "a.jpg"
    inside.write_bytes(b"not really a jpeg")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (root / "link.jpg").symlink_to(outside)
    (root / "notes.txt").write_text("x")
    roots = media.resolve_roots([root])
    assert media.safe_frame(inside, roots) == inside.resolve()
    assert media.safe_frame(root / "sub" / ".." / ".." / "secret.jpg", roots) is None  # traversal
    assert media.safe_frame(root / "link.jpg", roots) is None  # a symlink pointing out
    assert media.safe_frame(root / "notes.txt", roots) is None  # not an image
    assert media.safe_frame("/etc/passwd", roots) is None
    assert media.safe_video(inside, roots) is None
    assert media.frame_data_url(inside) is None  # served only if it decodes as an image


def test_kuaimod_cli_does_not_import_gradio_or_app() -> None:
    code = "import sys, kuaimod_open.cli; sys.exit(int('gradio' in sys.modules or 'app' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd="/", check=False).returncode == 0


def test_review_command_refuses_exposed_host_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    monkeypatch.delenv(cfg.USERS_ENV, raising=False)
    monkeypatch.delenv(cfg.USERS_FILE_ENV, raising=False)
    result = CliRunner().invoke(cli, ["review", "--host", "0.0.0.0", "--db", "sqlite:///:memory:"])
    assert isinstance(result.exception, ConfigError)
    assert "without credentials" in str(result.exception)


# --------------------------------------------------------------------------- queue


def test_queue_holds_what_needs_a_human(ctx: h.ReviewContext) -> None:
    items = h.queue_items(ctx)
    ids = [i.sample_id for i in items]
    # demo-06 is a confident benign verdict nobody reported: not queued.
    assert set(ids) == {"demo-01", "demo-02", "demo-03", "demo-04", "demo-05", "demo-07"}
    assert ids[:2] == ["demo-02", "demo-05"]  # unparsed and failed answers are the most uncertain
    assert [i.sample_id for i in h.queue_items(ctx, "severity")][0] == "demo-03"  # ILLEGAL: high
    assert [i.sample_id for i in h.queue_items(ctx, "reports")][0] == "demo-04"  # two user reports
    by_id = {i.sample_id: i for i in items}
    assert by_id["demo-04"].reasons == ("reported x2",)
    assert "unparsed" in by_id["demo-02"].reasons
    assert [i.sample_id for i in h.queue_items(ctx, category="ILLEGAL")] == ["demo-03"]
    assert {i.sample_id for i in h.queue_items(ctx, category=NO_CATEGORY)} == {"demo-02", "demo-05"}
    assert h.queue_items(ctx, version="9.9") == []
    assert len(h.queue_items(ctx, version="1.1.0")) == 6


def test_decisions_leave_the_queue_until_a_new_verdict_or_report(ctx: h.ReviewContext) -> None:
    policy, _ = ctx.policy()
    h.agree(ctx, "demo-01", "alice")
    assert "demo-01" not in [i.sample_id for i in review_queue(ctx.store, policy)]
    requeue(ctx, "demo-01")  # e.g. re-moderated under a new policy
    assert "demo-01" in [i.sample_id for i in review_queue(ctx.store, policy)]
    h.agree(ctx, "demo-04", "alice")
    assert "demo-04" not in [i.sample_id for i in review_queue(ctx.store, policy)]
    later = datetime.now(UTC) + timedelta(minutes=1)
    add_feedback(ctx.store, FeedbackEvent(sample_id="demo-04", kind=FeedbackKind.USER_REPORT, author="user:9",
                                          created_at=later), policy)  # fmt: skip
    item = next(i for i in review_queue(ctx.store, policy) if i.sample_id == "demo-04")
    assert item.reasons == ("reported x1",) and item.reports == 3


# --------------------------------------------------------------------------- decisions


def test_agree_and_override_write_feedback_precedent_and_audit(ctx: h.ReviewContext) -> None:
    message = h.agree(ctx, "demo-01", "alice", note="clear V-chat lure")
    assert "PRIVATE_DEAL" in message
    sql = "SELECT kind, category, decision, reason, author, source FROM feedback WHERE sample_id='demo-01'"
    assert rows(ctx, sql) == [
        ("reviewer_decision", "PRIVATE_DEAL", "block", "agree: clear V-chat lure", "alice", "review-ui")
    ]
    vid = h.item_view(ctx, "demo-02").verdict_id
    message = h.override(ctx, "demo-02", "bob", category="BENIGN", decision="allow", reason_code="not_violating",
                         note="a cooking video", verdict_id=vid, make_precedent=True)  # fmt: skip
    assert "precedent #" in message
    fb = rows(ctx, "SELECT id, category, decision, reason, author FROM feedback WHERE sample_id='demo-02'")
    assert [r[1:] for r in fb] == [("BENIGN", "allow", "not_violating: a cooking video", "bob")]
    assert rows(ctx, "SELECT sample_id, category, decision, author, feedback_id FROM precedents") == [
        ("demo-02", "BENIGN", "allow", "bob", fb[0][0])
    ]
    actions = [(r["actor"], r["action"], r["sample_id"]) for r in audit_rows(ctx.store)]
    assert actions == [("bob", "override", "demo-02"), ("alice", "agree", "demo-01")]


def test_decision_errors_are_clear(ctx: h.ReviewContext) -> None:
    with pytest.raises(h.ReviewError, match="names no category"):
        h.agree(ctx, "demo-02", "alice")  # unparsed: nothing to agree with
    with pytest.raises(h.ReviewError, match="reason code"):
        h.override(ctx, "demo-02", "alice", category="BENIGN", decision=None, reason_code="")
    with pytest.raises(h.ReviewError, match="newer verdict"):
        h.agree(ctx, "demo-01", "alice", verdict_id=-1)
    with pytest.raises(h.ReviewError, match="Reviewer"):
        h.resolve_reviewer(None, "  ")
    assert h.resolve_reviewer("alice", "mallory") == "alice"  # the signed-in name wins
    assert rows(ctx, "SELECT COUNT(*) FROM feedback WHERE kind='reviewer_decision'") == [(0,)]


# --------------------------------------------------------------------------- item view


def test_item_view_highlights_blurs_and_escapes(ctx: h.ReviewContext) -> None:
    view = h.item_view(ctx, "demo-01")
    assert not view.blurred
    assert "<mark" in view.text and "加我V</mark>" in view.text
    assert view.frames.count("data:image/jpeg;base64,") == 4 and "frame 2 @ 1.25s <strong>cited</strong>" in view.frames
    assert "PRIVATE_DEAL" in view.verdict and "demo/scripted" in view.provenance
    high = h.item_view(ctx, "demo-03")  # ILLEGAL has severity high: wellness blur by default
    assert high.blurred and "blur(" in high.frames
    revealed = h.reveal_frames(ctx, "demo-03", "alice")
    assert not revealed.blurred and "blur(" not in revealed.frames
    assert audit_rows(ctx.store, sample_id="demo-03")[0]["action"] == "reveal"


def test_untrusted_text_is_escaped_and_media_roots_enforced(ctx: h.ReviewContext, tmp_path: Path) -> None:
    from kuaimod_open.ingest.sample import Frame, Sample
    from kuaimod_open.loop.feedback import record_sample

    _, verdict = latest_verdicts(ctx.store)["demo-01"]
    evil = Sample(id="evil", title="<script>alert(1)</script>", video=tmp_path / "clip.mp4",
                  frames=(Frame(path=tmp_path / "frames" / "demo-01_0.jpg"),))  # fmt: skip
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    record_sample(ctx.store, evil)
    record_verdict(ctx.store, verdict.model_copy(update={"sample_id": "evil"}))
    view = h.item_view(ctx, "evil")
    assert "<script>" not in view.text + view.header and "&lt;script&gt;" in view.text
    assert view.video is None and "media root" in view.video_note
    ctx.config.media_roots = (tmp_path,)
    assert h.item_view(ctx, "evil").video == str((tmp_path / "clip.mp4").resolve())
    ctx.config.media_roots, ctx.config.store_frame_roots = (), False
    assert "not under a media root" in h.item_view(ctx, "evil").frames


def test_precedents_recorded_in_a_verdict_are_shown(ctx: h.ReviewContext) -> None:
    h.override(ctx, "demo-02", "bob", category="BENIGN", decision=None, reason_code="other", make_precedent=True)
    raw = json.loads(Verdict.model_validate(latest_verdicts(ctx.store)["demo-03"][1]).model_dump_json())
    raw.pop("precedents", None)  # a verdict stored before verdicts recorded their precedents
    assert h.shown_precedents(ctx.store, raw) == ([], False)
    raw["precedents"] = []
    assert h.shown_precedents(ctx.store, raw) == ([], True)
    raw["precedents"] = ["1"]
    shown, recorded = h.shown_precedents(ctx.store, raw)
    assert recorded and [p["sample_id"] for p in shown] == ["demo-02"]
    assert "#1" in h.render.precedents_html(shown, recorded)


# --------------------------------------------------------------------------- policy editor


def test_policy_editor_validate_save_history_rollback(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    bad = text.replace("action: block", "action: ban", 1)
    policy, error = pe.validate(bad)
    assert policy is None and "action" in error and "<edited policy>:" in error and "'ban'" in error
    with pytest.raises(PolicyError):
        pe.save(ctx, bad, "alice")
    new_text = text.replace('version: "1.1.0"', 'version: "1.1.1"', 1)
    assert new_text != text
    art = pe.save(ctx, new_text, "alice", note="tighten wording")
    assert art.name == "1.1.1" and str(art.status) == "candidate" and Path(art.path).is_file()
    with pytest.raises(ConfigError, match="already exists"):
        pe.save(ctx, new_text, "alice")
    history = pe.history_rows(ctx)
    assert [r[1] for r in history] == ["1.1.1", "1.1.0"] and history[0][4] == "alice"
    diff = pe.version_diff(ctx, art.id)
    assert '-version: "1.1.0"' in diff and '+version: "1.1.1"' in diff
    pe.activate(ctx, "alice", art.id)
    assert ctx.policy()[0].version == "1.1.1"
    assert pe.rollback(ctx, "bob").name == "1.1.0" and ctx.policy()[0].version == "1.1.0"
    actions = [r["action"] for r in audit_rows(ctx.store)]
    assert actions == ["policy_rollback", "policy_activate", "policy_save"]


def test_prompt_preview_and_dry_run(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    preview = pe.prompt_preview(ctx, text, "demo-01")
    assert "===== system =====" in preview and "清仓特价" in preview and "PRIVATE_DEAL" in preview
    assert "invalid" in pe.prompt_preview(ctx, "version: [", None)
    assert "no predictor configured" in pe.dry_run(ctx, text, "alice")
    stricter = text.replace('version: "1.1.0"', 'version: "1.2.0"', 1)

    def predict(samples, policy):  # keyword rule: the edited policy is "stricter" on titles with 特价
        out = []
        for s in samples:
            _, v = latest_verdicts(ctx.store)[s.id]
            if policy.version == "1.2.0" and "特价" in s.title:
                v = v.model_copy(update={"decision": "block", "category": "HYPE_SELLING"})
            out.append(v.model_copy(update={"sample_id": s.id}))
        return out

    ctx.config.predictor = predict
    report = pe.dry_run(ctx, stricter, "alice")
    assert "1 of 7 samples flip" in report and "demo-01" in report and "no human-labelled samples" in report
    h.override(ctx, "demo-02", "bob", category="BENIGN", decision=None, reason_code="other")
    labelled = pe.dry_run(ctx, stricter, "alice")
    assert "of 1 samples flip" in labelled and "binary_accuracy" in labelled


# --------------------------------------------------------------------------- evaluation and loading


def test_reports_and_learning_curve(ctx: h.ReviewContext, tmp_path: Path) -> None:
    from kuaimod_open.evaluation.metrics import evaluate
    from kuaimod_open.evaluation.report import write_report
    from kuaimod_open.loop.feedback import stored_samples

    policy, _ = ctx.policy()
    verdicts = [v for _, v in latest_verdicts(ctx.store).values()]
    samples = [s.model_copy(update={"label": "正向"}) for s in stored_samples(ctx.store).values()]
    report = evaluate(samples, verdicts, policy)
    write_report(report, tmp_path / "runs" / "a", plots=False)
    later = report.model_copy(update={"created_at": report.created_at + timedelta(days=1)})
    write_report(later, tmp_path / "runs" / "group" / "b", plots=False)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "report.json").write_text("{", encoding="utf-8")
    found = ev.find_reports(ctx.config.report_roots)
    assert [r.folder.name for r in found] == ["b", "a"]
    assert "![" not in ev.report_markdown(found[0]) and "# KuaiMod benchmark evaluation" in ev.report_markdown(found[0])
    assert "no plots" in ev.plots_html(found[0])
    if pytest.importorskip("matplotlib"):
        assert 'id="km-learning-curve"' in ev.learning_curve_html(found)
    assert "No evaluation reports" in ev.learning_curve_html([])


def test_load_verdict_file_is_idempotent(ctx: h.ReviewContext, tmp_path: Path) -> None:
    from PIL import Image

    _, verdict = latest_verdicts(ctx.store)["demo-01"]
    from kuaimod_open.ingest.frames import FRAME_SET, FrameSet, frames_folder
    from kuaimod_open.ingest.keys import key_for
    from kuaimod_open.ingest.sample import Frame

    out = tmp_path / "out" / "verdicts.jsonl"
    # The layout kuaimod moderate writes: <out>.frames/<sample key name>/<sampling>/ with frames.json.
    key = key_for("clip 1", "c" * 64)
    frames = frames_folder(out.with_name("verdicts.jsonl.frames"), key, 1, 640, "uniform")
    frames.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), "red").save(frames / f"frame_{i:07d}.jpg")
    listed = tuple(Frame(path=Path(f"frame_{i:07d}.jpg"), index=i, timestamp=t) for i, t in enumerate([0.0, 2.5]))
    record = FrameSet(key=key.digest, sample_id=key.id, mode="uniform", k=1, max_side=640, frames=listed)
    (frames / FRAME_SET).write_text(record.model_dump_json(), encoding="utf-8")
    new = verdict.model_copy(update={"sample_id": "clip 1", "provenance": verdict.provenance.model_copy(
        update={"frame_timestamps": [0.0, 2.5], "sample_key": key.digest})})  # fmt: skip
    out.write_text(new.model_dump_json() + "\n", encoding="utf-8")
    assert load_verdict_file(ctx.store, out) == (1, 1)
    assert load_verdict_file(ctx.store, out) == (0, 1)
    view = h.item_view(ctx, "clip 1")
    assert "frame 2 @ 2.50s" in view.frames and "data:image/jpeg" in view.frames


def test_demo_seed_is_idempotent(ctx: h.ReviewContext, tmp_path: Path) -> None:
    before = rows(ctx, "SELECT COUNT(*) FROM verdicts")
    seed_demo(ctx.store, ctx.policy()[0], tmp_path / "frames")
    assert rows(ctx, "SELECT COUNT(*) FROM verdicts") == before
    assert os.path.isfile(tmp_path / "frames" / "demo-01_0.jpg")


def test_queue_says_why_and_ranks_by_the_best_confidence() -> None:
    from kuaimod_open.judge.policy import Decision
    from kuaimod_open.judge.verdict import ParseStatus, Provenance
    from kuaimod_open.loop.queue import shown_confidence, uncertainty
    from kuaimod_open.loop.queue import verdict_reasons as _reasons

    prov = Provenance(model="m", policy_version="1", policy_digest="d", prompt_digest="p", package_version="0")

    def verdict(flags: list[str], **kw: object) -> Verdict:
        fields = {"decision": Decision.REVIEW, "category": "HATE", "status": ParseStatus.OK, **kw}
        return Verdict(sample_id="s", flags=flags, provenance=prov, **fields)

    assert _reasons(verdict(["injection_suspected", "injection:override@title"]), 0.5, 0) == ["injection suspected"]
    assert _reasons(verdict(["low_calibrated_confidence"]), 0.5, 0) == ["low confidence"]
    assert _reasons(verdict(["flexible_parse", "unconfirmed_mention"]), 0.5, 1) == ["loose answer", "reported x1"]
    assert _reasons(verdict(["escalated", "no_vlm"]), 0.5, 0) == ["escalated"]
    assert _reasons(verdict([]), 0.5, 0) == ["needs review"]
    # a calibrated confidence outranks the number the model wrote about itself
    sure_but_wrong = verdict([], decision=Decision.BLOCK, confidence=0.99, calibrated_confidence=0.3)
    assert shown_confidence(sure_but_wrong) == 0.3 and uncertainty(sure_but_wrong) == 0.7
    assert _reasons(sure_but_wrong, 0.5, 0) == ["low confidence"]
    assert uncertainty(verdict([], confidence=0.99, token_confidence=0.6)) == 0.4
