"""Unit tests of the review app's plain handler functions (no browser), on a real store with real frames.

The issue numbers (#14 item N) name the defect each test pins.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("sqlalchemy")

from kuaimod_open.app import access, media  # noqa: E402
from kuaimod_open.app import config as cfg  # noqa: E402
from kuaimod_open.app import evaluation as ev  # noqa: E402
from kuaimod_open.app import handlers as h  # noqa: E402
from kuaimod_open.app import policy_editor as pe  # noqa: E402
from kuaimod_open.app.audit import audit_rows  # noqa: E402
from kuaimod_open.app.loading import load_verdict_file, seed_demo  # noqa: E402
from kuaimod_open.app.queue import NO_CATEGORY, review_queue  # noqa: E402
from kuaimod_open.app.queue_source import QueueFilters, queue_page  # noqa: E402
from kuaimod_open.errors import ConfigError, InputError, PolicyError  # noqa: E402
from kuaimod_open.judge.verdict import Verdict  # noqa: E402
from kuaimod_open.loop.feedback import (  # noqa: E402
    FeedbackEvent,
    FeedbackKind,
    add_feedback,
    latest_verdicts,
    record_verdict,
)

REPO = Path(__file__).resolve().parent.parent
# Versions in the editor tests: the shipped policy's, and two edits of it (never pinned to a number).
BASE = yaml.safe_load((REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8"))["version"]
NEXT, STRICT = f"{BASE}-edit", f"{BASE}-strict"
VIDEO = REPO / "tests" / "data" / "promo_zh.mp4"
ADMIN = access.Session("ada", access.Role.ADMIN)
REVIEWER = access.Session("bob", access.Role.REVIEWER)


@pytest.fixture
def ctx(tmp_path: Path) -> h.ReviewContext:
    config = cfg.ReviewConfig(
        db=f"sqlite:///{tmp_path / 'review.db'}",
        policy_default=REPO / "prompts" / "policy.yaml",
        policy_versions_dir=tmp_path / "policies",
        report_roots=(tmp_path / "runs",),
        default_reviewer="alice",
    )
    context = h.ReviewContext(config)
    clip = tmp_path / "clips" / "promo_zh.mp4"
    clip.parent.mkdir()
    shutil.copy(VIDEO, clip)
    seed_demo(context.store, context.policy()[0], tmp_path / "frames", video=clip)
    return context


def rows(ctx: h.ReviewContext, sql: str) -> list[tuple[Any, ...]]:
    path = ctx.config.db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def requeue(ctx: h.ReviewContext, sample_id: str, minutes: int = 5) -> None:
    """Store a copy of the sample's latest verdict, made a few minutes from now."""
    _, verdict = latest_verdicts(ctx.store)[sample_id]
    later = datetime.now(UTC) + timedelta(minutes=minutes)
    record_verdict(ctx.store, verdict.model_copy(update={"provenance": verdict.provenance.model_copy(
        update={"created_at": later})}))  # fmt: skip


def form(view: h.ItemView, **kw: Any) -> h.DecisionForm:
    return h.DecisionForm(token=view.token, **kw)


# --------------------------------------------------------------------------- access (#14 items 6, 8)


def test_accounts_roles_and_hashed_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = access.hash_password("correct horse")
    assert secret.startswith("scrypt$") and "correct horse" not in secret
    assert access.verify_password("correct horse", secret) and not access.verify_password("wrong", secret)
    assert not access.verify_password("x", "scrypt$garbage")
    users = access.parse_users(f"ada:{secret}:admin\nbob:{secret}\ncarol:p:w2\n# comment", "f")
    assert users["ada"].role is access.Role.ADMIN and users["ada"].hashed
    assert users["bob"].role is access.Role.REVIEWER
    assert users["carol"].secret == "p:w2" and not users["carol"].hashed  # ':' inside a plain password
    monkeypatch.setenv(access.USERS_ENV, "alice:pw, bob:pw2:admin")
    loaded = access.load_users()
    assert loaded["alice"].secret == "pw" and loaded["bob"].role is access.Role.ADMIN
    with pytest.raises(ConfigError, match="name:password"):
        access.parse_users("alice", "x")


def test_world_readable_credentials_file_is_refused(tmp_path: Path) -> None:
    # #14 item 8: a world-readable plaintext users file was accepted.
    users_file = tmp_path / "reviewers"
    users_file.write_text("carol:secret\n", encoding="utf-8")
    users_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        access.load_users(users_file)
    users_file.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        access.load_users(users_file)
    users_file.chmod(0o600)
    assert access.load_users(users_file)["carol"].secret == "secret"
    inside = REPO / "tests" / "reviewers.txt"  # inside the git working tree: refused whatever its mode
    with pytest.raises(ConfigError, match="git working tree"):
        access.check_secret_file(inside)


def test_login_is_rate_limited() -> None:
    # #14 item 8: 30 wrong logins in a row met no rate limit.
    now = [1000.0]
    limiter = access.LoginLimiter(per_name=5, overall=30, window_s=300, clock=lambda: now[0])
    refused: list[tuple[str, str]] = []
    users = {"alice": access.Account("alice", access.hash_password("right")),
             "bob": access.Account("bob", access.hash_password("b"))}  # fmt: skip
    check = access.authenticator(users, limiter, lambda name, why: refused.append((name, why)))
    assert check("alice", "right")
    results = [check("alice", f"guess{i}") for i in range(30)]
    assert not any(results)
    assert [why for _, why in refused].count("rate limited") == 25  # locked after the 5th failure
    assert not check("alice", "right")  # while locked, even the right password is refused
    assert check("bob", "b")  # other accounts are not locked by one name's failures
    now[0] += 301
    assert check("alice", "right")  # the window passed
    # a spray over many names locks every login
    for i in range(30):
        check(f"user{i}", "x")
    assert not check("bob", "b")


def test_sessions_and_the_fixed_local_operator(ctx: h.ReviewContext) -> None:
    # #14 item 8: on loopback the reviewer name was free text; now it is the operator's, not typed.
    assert ctx.session(None) == access.Session("alice", access.Role.ADMIN)
    assert ctx.session("mallory") == access.Session("alice", access.Role.ADMIN)  # no accounts: one operator
    os_name = access.local_operator("")
    assert os_name and os_name == access.local_operator("  ")
    ctx.config.users = {"bob": access.Account("bob", "x"), "ada": access.Account("ada", "y", access.Role.ADMIN)}
    assert ctx.session("bob") == REVIEWER and ctx.session("ada").is_admin
    for name in (None, "", "mallory"):
        with pytest.raises(access.AccessError, match="not signed in"):
            ctx.session(name)


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

    monkeypatch.delenv(access.USERS_ENV, raising=False)
    monkeypatch.delenv(access.USERS_FILE_ENV, raising=False)
    result = CliRunner().invoke(cli, ["review", "--host", "0.0.0.0", "--db", "sqlite:///:memory:"])
    assert isinstance(result.exception, ConfigError)
    assert "without credentials" in str(result.exception)
    hashed = CliRunner().invoke(cli, ["review", "--hash-password"], input="s3cret\ns3cret\n")
    assert hashed.exit_code == 0
    assert access.verify_password("s3cret", hashed.output.strip().splitlines()[-1])


# --------------------------------------------------------------------------- queue (#14 item 3, #17)


def test_queue_holds_what_needs_a_human(ctx: h.ReviewContext) -> None:
    policy, _ = ctx.policy()
    items = review_queue(ctx.store, policy)
    ids = [i.sample_id for i in items]
    # demo-06 is a confident benign verdict nobody reported: not queued.
    assert set(ids) == {f"demo-0{n}" for n in (1, 2, 3, 4, 5, 7, 8, 9)}
    assert ids[:2] == ["demo-02", "demo-05"]  # unparsed and failed answers are the most uncertain
    assert review_queue(ctx.store, policy, sort="severity")[0].sample_id in ("demo-03", "demo-09")  # high
    by_id = {i.sample_id: i for i in items}
    assert by_id["demo-04"].reasons == ("reported x2",)
    assert "unparsed" in by_id["demo-02"].reasons
    assert [i.sample_id for i in review_queue(ctx.store, policy, category="ILLEGAL")] == ["demo-03"]
    assert {i.sample_id for i in review_queue(ctx.store, policy, category=NO_CATEGORY)} == {"demo-02", "demo-05"}
    assert review_queue(ctx.store, policy, policy_version="9.9") == []


def test_queue_pages_have_a_total_and_search_by_id(ctx: h.ReviewContext) -> None:
    # #14 item 3: no "n of N", no search by sample id; #17: keyset pages with a total.
    policy, _ = ctx.policy()
    first = queue_page(ctx.store, QueueFilters(), limit=3)
    assert first.total == 8 and first.offset == 0 and len(first.rows) == 3 and first.prev_cursor is None
    second = queue_page(ctx.store, QueueFilters(), cursor=first.next_cursor, offset=3, limit=3)
    last = queue_page(ctx.store, QueueFilters(), cursor=second.next_cursor, offset=6, limit=3)
    assert second.offset == 3 and last.offset == 6 and last.next_cursor is None and len(last.rows) == 2
    assert first.ids + second.ids + last.ids == [i.sample_id for i in review_queue(ctx.store, policy)]
    back = queue_page(ctx.store, QueueFilters(), cursor=last.prev_cursor, offset=3, limit=3)
    assert back.ids == second.ids
    found = queue_page(ctx.store, QueueFilters.of("severity", "all", "", "demo-0"), limit=50)
    assert found.total == 8 and found.ids == sorted(found.ids)  # search: matching ids, by id
    assert queue_page(ctx.store, QueueFilters(search="demo-08"), limit=50).ids == ["demo-08"]
    assert queue_page(ctx.store, QueueFilters(search="demo-06"), limit=50).total == 0  # not queued
    row = {r.sample_id: r for r in first.rows + second.rows + last.rows}["demo-08"]
    assert row.why == "escalated, low confidence" and "first stage was not sure" in row.why_long
    html = h.render.queue_html(first, "demo-05")
    assert html.count("<col ") == len(h.render.QUEUE_COLUMNS)
    assert 'class="km-row km-current" data-id="demo-05"' in html


def test_claims_are_shown_and_held(ctx: h.ReviewContext) -> None:
    # #17: an item opened by one reviewer is leased to them; others see it marked and cannot decide it.
    from kuaimod_open.app import queue_source as qs

    assert qs.claim(ctx.store, "demo-03", "ada", 600)
    assert not qs.claim(ctx.store, "demo-03", "bob", 600)
    page = queue_page(ctx.store, QueueFilters(search="demo-03"))
    assert page.rows[0].claimed_by == "ada"
    html = h.render.queue_html(page, "", "bob")
    assert "km-claimed" in html and "[ada] demo-03" in html and "claimed by ada until" in html
    assert "km-claimed" not in h.render.queue_html(page, "", "ada")  # one's own lease is not marked
    view = h.item_view(ctx, "demo-03", viewer=REVIEWER)
    with pytest.raises(h.ReviewError, match="claimed by ada until .* the decision is theirs"):
        h.decide(ctx, REVIEWER, "agree", form(view), showing=view.token)
    assert h.decide(ctx, ADMIN, "agree", form(view), showing=view.token).startswith("agree on demo-03")
    assert qs.holder(ctx.store, "demo-03") == (None, None)  # a decision ends the lease
    assert qs.claim(ctx.store, "demo-01", "ada", -1)  # a lease that already ran out...
    assert qs.holder(ctx.store, "demo-01") == (None, None)  # ...is nobody's
    assert queue_page(ctx.store, QueueFilters(search="demo-01")).rows[0].claimed_by is None


def test_queue_title_is_cut_with_the_whole_title_as_tooltip(ctx: h.ReviewContext) -> None:
    page = queue_page(ctx.store, QueueFilters(search="demo-08"))
    html = h.render.queue_html(page, "")
    title = "这些人都该滚出去 评论区见"
    assert f'<td title="{title}">{title}</td>' in html  # the cell ellipsis is CSS; the tooltip has it all


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


# --------------------------------------------------------------------------- decisions (#14 item 1)


def test_agree_and_override_write_feedback_precedent_and_audit(ctx: h.ReviewContext) -> None:
    message = h.agree(ctx, "demo-01", "alice", note="clear V-chat lure")
    assert "PRIVATE_DEAL" in message
    sql = "SELECT kind, category, decision, reason, author, source FROM feedback WHERE sample_id='demo-01'"
    assert rows(ctx, sql) == [
        ("reviewer_decision", "PRIVATE_DEAL", "block", "agree: clear V-chat lure", "alice", "review-ui")
    ]
    view = h.item_view(ctx, "demo-02", viewer=REVIEWER)
    message = h.decide(ctx, REVIEWER, "override", form(view, category="BENIGN", decision="allow",
                       reason_code="not_violating", note="a cooking video", make_precedent=True),
                       showing=view.token)  # fmt: skip
    assert "precedent #" in message
    fb = rows(ctx, "SELECT id, category, decision, reason, author FROM feedback WHERE sample_id='demo-02'")
    assert [r[1:] for r in fb] == [("BENIGN", "allow", "not_violating: a cooking video", "bob")]
    assert rows(ctx, "SELECT sample_id, category, decision, author, feedback_id FROM precedents") == [
        ("demo-02", "BENIGN", "allow", "bob", fb[0][0])
    ]
    actions = [(r["actor"], r["action"], r["sample_id"]) for r in audit_rows(ctx.store)]
    assert actions == [("bob", "override", "demo-02"), ("alice", "agree", "demo-01")]


def test_a_violating_category_is_not_allowed_without_an_exception_reason(ctx: h.ReviewContext) -> None:
    # #14 item 1: choosing only a reason code recorded HATE / allow.
    view = h.item_view(ctx, "demo-08", viewer=REVIEWER)  # HATE, sent to review by the router
    assert view.category == "HATE"
    for reason in ("wrong_category", "too_strict", "other"):
        with pytest.raises(InputError, match="exception reason"):
            h.decide(ctx, REVIEWER, "override", form(view, category="HATE", decision="allow", reason_code=reason),
                     showing=view.token)  # fmt: skip
    with pytest.raises(InputError, match="benign class"):
        h.decide(ctx, REVIEWER, "override", form(view, category="BENIGN", decision="block",
                                                 reason_code="missed_violation"), showing=view.token)  # fmt: skip
    assert rows(ctx, "SELECT COUNT(*) FROM feedback WHERE kind='reviewer_decision'") == [(0,)]
    allowed = form(view, category="HATE", decision="allow", reason_code="counter_speech", note="condemns the slur")
    message = h.decide(ctx, REVIEWER, "override", allowed, showing=view.token)
    assert "HATE / allow" in message


def test_a_form_filled_for_another_item_is_refused(ctx: h.ReviewContext) -> None:
    # #14 item 1: the Decision value of the previous item was submitted for the next one.
    first = h.item_view(ctx, "demo-01", viewer=REVIEWER)
    second = h.item_view(ctx, "demo-03", viewer=REVIEWER)
    stale = form(first, category="BENIGN", decision="allow", reason_code="not_violating")
    with pytest.raises(h.ReviewError, match="filled for another item"):
        h.decide(ctx, REVIEWER, "override", stale, showing=second.token)
    with pytest.raises(h.ReviewError, match="filled for another item"):
        h.decide(ctx, REVIEWER, "agree", h.DecisionForm(token=""), showing=second.token)
    requeue(ctx, "demo-03")  # a newer verdict arrived while the form was open
    with pytest.raises(h.ReviewError, match="newer verdict"):
        h.decide(ctx, REVIEWER, "agree", form(second), showing=second.token)
    assert rows(ctx, "SELECT COUNT(*) FROM feedback WHERE kind='reviewer_decision'") == [(0,)]


def test_one_decision_per_reviewer_and_verdict_unless_amended(ctx: h.ReviewContext) -> None:
    view = h.item_view(ctx, "demo-07", viewer=REVIEWER)
    h.decide(ctx, REVIEWER, "agree", form(view), showing=view.token)
    again = h.item_view(ctx, "demo-07", viewer=REVIEWER)
    assert "You recorded EXAGGERATED_CLAIMS / restrict" in again.notice and "'amend'" in again.notice
    with pytest.raises(InputError, match="already recorded"):
        h.decide(ctx, REVIEWER, "override", form(again, category="BENIGN", decision="allow",
                                                 reason_code="not_violating"), showing=again.token)  # fmt: skip
    message = h.decide(ctx, REVIEWER, "override", form(again, category="BENIGN", decision="allow",
                       reason_code="not_violating", amend=True), showing=again.token)  # fmt: skip
    assert message.startswith("amend on demo-07: BENIGN / allow")
    assert [r[0] for r in rows(ctx, "SELECT category FROM feedback WHERE kind='reviewer_decision' ORDER BY id")] == [
        "EXAGGERATED_CLAIMS", "BENIGN"]  # fmt: skip
    assert h.item_view(ctx, "demo-07", viewer=ADMIN).notice == ""  # another reviewer has not decided yet


def test_decision_errors_are_clear(ctx: h.ReviewContext) -> None:
    view = h.item_view(ctx, "demo-02", viewer=REVIEWER)
    with pytest.raises(h.ReviewError, match="names no category"):
        h.decide(ctx, REVIEWER, "agree", form(view), showing=view.token)  # unparsed: nothing to agree with
    with pytest.raises(h.ReviewError, match="reason code"):
        h.decide(ctx, REVIEWER, "override", form(view, category="BENIGN"), showing=view.token)
    with pytest.raises(h.ReviewError, match="pick the category"):
        h.decide(ctx, REVIEWER, "override", form(view, reason_code="other"), showing=view.token)
    assert rows(ctx, "SELECT COUNT(*) FROM feedback WHERE kind='reviewer_decision'") == [(0,)]


# --------------------------------------------------------------------------- item view (#14 items 2, 4, 5, 8)


def test_blur_covers_the_player_and_every_frame_until_revealed(ctx: h.ReviewContext) -> None:
    # #14 item 2: the frames were blurred but the player above showed the first frame in colour.
    view = h.item_view(ctx, "demo-03", viewer=REVIEWER)  # ILLEGAL: severity high
    assert view.blurred
    assert view.media.count("<video") == 1 and view.media.count("<img") == 4  # real frames of the real video
    assert view.media.count(h.render.BLUR_STYLE) == 5  # the player (poster and playback) and every frame
    assert rows(ctx, "SELECT COUNT(*) FROM review_audit WHERE action='reveal'") == [(0,)]
    revealed = h.reveal_media(ctx, REVIEWER, view.token)
    assert not revealed.blurred and "blur(" not in revealed.media
    audit = audit_rows(ctx.store, sample_id="demo-03")[0]
    assert (audit["actor"], audit["action"], audit["detail"]["verdict_id"]) == ("bob", "reveal", view.verdict_id)
    # the reveal is for that item only: opening it again, or another item, is blurred again
    assert h.item_view(ctx, "demo-03", viewer=REVIEWER).blurred
    assert h.item_view(ctx, "demo-09", viewer=REVIEWER).blurred
    medium = h.item_view(ctx, "demo-01", viewer=REVIEWER)
    assert not medium.blurred and "blur(" not in medium.media


def test_why_it_is_here_reports_and_empty_fields(ctx: h.ReviewContext) -> None:
    # #14 item 4: reports were not shown; #14 item 8: the benchmark's "null" was shown as text.
    low = h.item_view(ctx, "demo-03", viewer=REVIEWER)
    assert "low confidence below the policy&#x27;s minimum" in low.why and low.reports == ""
    matched = h.item_view(ctx, "demo-09", viewer=REVIEWER)
    assert "matches known content (1 bank entry)" in matched.why
    assert "reported by users 2x since the last human decision" in matched.why
    assert "2 user reports" in matched.reports
    assert "sexual content ×1" in matched.reports and "this is my own video ×1" in matched.reports
    failed = h.item_view(ctx, "demo-05", viewer=REVIEWER)
    assert "error: the video or the model call failed" in failed.why and "could not be decoded" in failed.rationale
    router = h.item_view(ctx, "demo-08", viewer=REVIEWER)
    assert 'data-field="ocr"' in router.text and ">null<" not in router.text.lower()
    assert router.text.count("(empty)") == 2  # OCR 'null' and the 'null' comment
    searched = h.item_view(ctx, "demo-06", viewer=REVIEWER, queued=False)
    assert "not in the review queue" in searched.why


def test_router_and_match_evidence_is_shown_like_the_models(ctx: h.ReviewContext) -> None:
    # #14 item 4: router items showed only "router: p(violation)=0.50" and "(no reasoning recorded)".
    router = h.item_view(ctx, "demo-08", viewer=REVIEWER)
    assert "<mark" in router.text and "滚出去</mark>" in router.text  # spans highlighted like the VLM's quotes
    assert "Nearest labelled cases" in router.evidence
    assert "train-20417" in router.evidence and "HATE · " in router.evidence and "0.83" in router.evidence
    assert "first-stage text router" in router.rationale and "no reasoning recorded" not in router.rationale
    assert "No video file was recorded" in router.media and "Reveal" not in router.media  # nothing to reveal
    match = h.item_view(ctx, "demo-09", viewer=REVIEWER)
    assert "bank entry bank-0042" in match.evidence and "75% of frames matched" in match.evidence
    assert "0.00s ↔ 10.00s (distance 12)" in match.evidence
    assert match.media.count("km-matched") == 3  # the matched frames are marked in the strip


def test_frames_are_larger_and_zoomable(ctx: h.ReviewContext) -> None:
    # #14 item 8: frames were 160 px and clicking one did nothing.
    view = h.item_view(ctx, "demo-01", viewer=REVIEWER)
    assert view.media.count('class="km-zoomable"') == 4 and "width:240px" in view.media
    assert "frame 2 @ 1.25s <strong>cited</strong>" in view.media
    import base64
    import io

    from PIL import Image

    url = view.media.split('src="', 2)[1].split('"', 1)[0]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size[0] >= 320  # the inline image is the zoom's source: full size of the drawn frame


def test_untrusted_text_is_escaped_and_media_roots_enforced(ctx: h.ReviewContext, tmp_path: Path) -> None:
    from kuaimod_open.ingest.sample import Frame, Sample
    from kuaimod_open.loop.feedback import record_sample

    _, verdict = latest_verdicts(ctx.store)["demo-01"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "clip.txt").write_bytes(b"\x00")
    evil = Sample(id="evil", title="<script>alert(1)</script>", video=elsewhere / "clip.txt",
                  frames=(Frame(path=tmp_path / "frames" / "demo-01_0.jpg"),))  # fmt: skip
    record_sample(ctx.store, evil)
    record_verdict(ctx.store, verdict.model_copy(update={"sample_id": "evil"}))
    view = h.item_view(ctx, "evil", viewer=REVIEWER)
    assert "<script>" not in view.text + view.media and "&lt;script&gt;" in view.text
    assert "<video" not in view.media and "media root" in view.media
    assert elsewhere.resolve() not in ctx.roots()  # a non-video path does not open its folder
    ctx.config.store_frame_roots = False
    assert "not under a media root" in h.item_view(ctx, "evil", viewer=REVIEWER).media


def test_recorded_video_folders_play_without_media_root(ctx: h.ReviewContext, tmp_path: Path) -> None:
    # #14 item 8: videos recorded in the store did not play without --media-root.
    assert ctx.config.media_roots == ()
    clip_dir = (tmp_path / "clips").resolve()
    assert clip_dir in ctx.roots()
    allowed: list[Path] = []
    ctx.allow_media_root = allowed.append
    view = h.item_view(ctx, "demo-03", viewer=REVIEWER)
    assert f'src="gradio_api/file={clip_dir}/promo_zh.mp4"' in view.media and allowed == [clip_dir]
    ctx.config.store_frame_roots = False  # --no-store-media: only configured roots
    assert "not under a configured media root" in h.item_view(ctx, "demo-03", viewer=REVIEWER).media


@pytest.mark.hf
def test_moderate_db_records_a_video_the_app_plays(tiny_model: Path, tmp_path: Path) -> None:
    """The real path: `kuaimod moderate --db` on a real video, then the app shows it (no --media-root)."""
    from click.testing import CliRunner

    from kuaimod_open.cli import cli

    clip = tmp_path / "in" / "promo_zh.mp4"
    clip.parent.mkdir()
    shutil.copy(VIDEO, clip)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["moderate", str(clip), "--model", str(tiny_model), "--device", "cpu", "--max-new-tokens", "4",
            "--frames", "2", "--no-ocr", "--no-asr", "--out", str(tmp_path / "v.jsonl"), "--db", db,
            "--no-progress", "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    app = h.ReviewContext(cfg.ReviewConfig(db=db, policy_default=REPO / "prompts" / "policy.yaml",
                                           policy_versions_dir=tmp_path / "p"))  # fmt: skip
    (sample_id,) = latest_verdicts(app.store)
    view = h.item_view(app, sample_id, viewer=REVIEWER)
    assert f"gradio_api/file={clip.resolve()}" in view.media
    assert view.media.count('class="km-zoomable"') == 3  # the frames moderate kept are shown too


def test_precedents_recorded_in_a_verdict_are_shown(ctx: h.ReviewContext) -> None:
    view = h.item_view(ctx, "demo-02", viewer=REVIEWER)
    h.decide(ctx, REVIEWER, "override", form(view, category="BENIGN", reason_code="other", make_precedent=True),
             showing=view.token)  # fmt: skip
    raw = json.loads(Verdict.model_validate(latest_verdicts(ctx.store)["demo-03"][1]).model_dump_json())
    raw.pop("precedents", None)  # a verdict stored before verdicts recorded their precedents
    assert h.shown_precedents(ctx.store, raw) == ([], False)
    raw["precedents"] = []
    assert h.shown_precedents(ctx.store, raw) == ([], True)
    raw["precedents"] = ["1"]
    shown, recorded = h.shown_precedents(ctx.store, raw)
    assert recorded and [p["sample_id"] for p in shown] == ["demo-02"]
    assert "#1" in h.render.precedents_html(shown, recorded)


# --------------------------------------------------------------------------- policy editor (#14 item 6)


def test_policy_editor_validate_save_history(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    bad = text.replace("action: block", "action: ban", 1)
    policy, error = pe.validate(bad)
    assert policy is None and "action" in error and "<edited policy>:" in error and "'ban'" in error
    message, lines = pe.check_message(bad)
    assert [bad.splitlines()[int(n) - 1].strip() for n in lines.split(",")] == ["action: ban"]  # the line to mark
    worse = bad.replace("severity: low", "severity: lowish")
    assert len(pe.check_message(worse)[1].split(",")) == 1 + worse.count("lowish")  # every error line
    assert pe.check_message(text)[1] == "" and pe.check_message(text)[0].startswith("✔ valid")
    with pytest.raises(PolicyError):
        pe.save(ctx, bad, REVIEWER)
    new_text = text.replace(f'version: "{BASE}"', f'version: "{NEXT}"', 1)
    art = pe.save(ctx, new_text, REVIEWER, note="tighten wording")
    assert art.name == NEXT and str(art.status) == "candidate" and Path(art.path).is_file()
    with pytest.raises(ConfigError, match="already exists"):
        pe.save(ctx, new_text, REVIEWER)
    history = pe.history_rows(ctx)
    assert [r[1] for r in history] == [NEXT, BASE] and history[0][4] == "bob"


def test_diff_is_coloured_and_names_no_server_path(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    art = pe.save(ctx, text.replace(f'version: "{BASE}"', f'version: "{NEXT}"', 1), REVIEWER)
    diff = pe.version_diff(ctx, art.id)
    assert f'-version: "{BASE}"' in diff and f'+version: "{NEXT}"' in diff
    assert f"--- version {BASE} (id 1)" in diff and f"+++ version {NEXT} (id 2)" in diff
    html = pe.diff_html(diff)
    for path in (str(ctx.config.policy_versions_dir), f"policy.v{NEXT}.yaml", str(REPO / "prompts")):
        assert path not in html
    assert 'class="km-diff-add" style="background:#dafbe1' in html
    assert 'class="km-diff-del" style="background:#ffebe9' in html and 'class="km-diff-hunk"' in html


def test_only_admins_activate_and_roll_back_after_confirming(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    art = pe.save(ctx, text.replace(f'version: "{BASE}"', f'version: "{NEXT}"', 1), REVIEWER)
    with pytest.raises(access.AccessError, match="only a policy admin"):
        pe.ask_activate(ctx, REVIEWER, art.id)
    asked = pe.ask_activate(ctx, ADMIN, art.id)
    assert f"Activate policy version {NEXT} (id 2) (replacing {BASE}, id 1)?" in asked.question
    assert ctx.policy()[0].version == BASE  # asking changes nothing
    with pytest.raises(access.AccessError):
        pe.confirm(ctx, REVIEWER, asked)  # a reviewer cannot confirm an admin's question either
    pe.confirm(ctx, ADMIN, asked)
    assert ctx.policy()[0].version == NEXT
    with pytest.raises(ConfigError, match="changed since you were asked"):
        pe.confirm(ctx, ADMIN, asked)  # a stale confirmation does nothing
    with pytest.raises(access.AccessError):
        pe.ask_rollback(ctx, REVIEWER)
    back = pe.ask_rollback(ctx, ADMIN)
    assert f"from {NEXT} (id 2) to {BASE} (id 1)" in back.question
    assert pe.confirm(ctx, ADMIN, back).name == BASE and ctx.policy()[0].version == BASE
    assert pe.active_text(ctx) == text  # what the editor reloads after a rollback
    actions = [(r["actor"], r["action"]) for r in audit_rows(ctx.store)]
    assert actions == [("ada", "policy_rollback"), ("ada", "policy_activate"), ("bob", "policy_save")]


def test_dry_run_comes_as_tables(ctx: h.ReviewContext) -> None:
    text = pe.active_text(ctx)
    assert "no predictor configured" in pe.dry_run(ctx, text, REVIEWER).summary
    stricter = text.replace(f'version: "{BASE}"', f'version: "{STRICT}"', 1)

    def predict(samples, policy):  # keyword rule: the edited policy is "stricter" on titles with 特价
        out = []
        for s in samples:
            _, v = latest_verdicts(ctx.store)[s.id]
            if policy.version == STRICT and "特价" in s.title:
                v = v.model_copy(update={"decision": "block", "category": "HYPE_SELLING"})
            out.append(v.model_copy(update={"sample_id": s.id}))
        return out

    ctx.config.predictor = predict
    result = pe.dry_run(ctx, stricter, REVIEWER)
    assert "1 of 9 samples flip" in result.summary and "no human-labelled samples" in result.summary
    assert result.flips == [["demo-01", "", "block / PRIVATE_DEAL", "block / HYPE_SELLING"]]
    assert result.changes == [f"~ *.version: {BASE} → {STRICT}"] and result.metrics == []
    view = h.item_view(ctx, "demo-02", viewer=REVIEWER)
    h.decide(ctx, REVIEWER, "override", form(view, category="BENIGN", reason_code="other"), showing=view.token)
    labelled = pe.dry_run(ctx, stricter, REVIEWER)
    assert "of 1 samples flip" in labelled.summary
    assert [m[0] for m in labelled.metrics][:2] == ["binary_accuracy", "violative_recall"]
    assert all(len(m) == 4 and m[3][0] in "+-" for m in labelled.metrics)


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
    view = h.item_view(ctx, "clip 1", viewer=REVIEWER)
    assert "frame 2 @ 2.50s" in view.media and "data:image/jpeg" in view.media


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


# --------------------------------------------------------------------------- the app's events (#14 item 8)


def _app(ctx: h.ReviewContext) -> Any:
    pytest.importorskip("gradio")
    from kuaimod_open.app.review import build_app

    return build_app(ctx)


def test_no_handler_is_a_public_api_endpoint(ctx: h.ReviewContext) -> None:
    # #14 item 8: every handler (agree, save, activate, roll back) was listed as a public API in /config.
    demo = _app(ctx)
    config = demo.get_config_file()
    deps = config["dependencies"]
    assert len(deps) >= 25
    public = [d.get("api_name") for d in deps if d.get("api_visibility", "public") != "private"]
    assert public == []
    assert demo.get_api_info()["named_endpoints"] == {}


def test_every_event_checks_the_session(ctx: h.ReviewContext) -> None:
    """With accounts configured, every callback refuses a request without a known signed-in account."""
    import inspect

    import gradio as gr

    ctx.config.users = {"bob": access.Account("bob", access.hash_password("pw"))}
    demo = _app(ctx)
    checked = 0
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is None:  # a browser-only step (marking the editor's error line)
            continue
        params = inspect.signature(fn).parameters.values()
        args = []
        for p in params:
            if p.annotation in (gr.Request, "gr.Request"):
                args.append(gr.Request(username="mallory"))
            elif p.annotation in (gr.EventData, "gr.EventData"):
                args.append(gr.EventData(None, {"id": "demo-01"}))
            else:
                args.append(None)
        with pytest.raises(gr.Error, match="not signed in"):
            fn(*args)
        checked += 1
    assert checked == len([f for f in demo.fns.values() if f.fn is not None]) >= 25
    assert rows(ctx, "SELECT COUNT(*) FROM review_audit") == [(0,)]
    assert rows(ctx, "SELECT COUNT(*) FROM feedback WHERE kind='reviewer_decision'") == [(0,)]
    # an admin-only action by a reviewer is refused by the handler itself, whatever the UI shows
    with pytest.raises(access.AccessError):
        pe.ask_rollback(ctx, ctx.session("bob"))
