"""End-to-end: the review app in a real headless Chromium (Debian's chromium + Playwright's Python client).

``scripts/setup.sh`` installs chromium with apt-get when it is missing. In CI (``CI=true``) a missing
browser or client is a failure with a clear message; elsewhere the test is skipped. Screenshots of
the main screens go to ``docs/screenshots/`` when ``KUAIMOD_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("KUAIMOD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
WAIT = 20_000  # ms; a 2-core CI machine is slow to render the first page

pytestmark = pytest.mark.slow


def _need(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run: {why}. Run `bash scripts/setup.sh` (installs chromium with apt-get).")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for module in ("playwright", "gradio", "sqlalchemy"):
        try:
            __import__(module)
        except ImportError:
            _need(False, f"the Python package {module} is not installed (pip install -e '.[all,dev]')")
    _need(Path(CHROMIUM).is_file(), f"no chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    from kuaimod_open.app.config import ReviewConfig
    from kuaimod_open.app.handlers import ReviewContext
    from kuaimod_open.app.loading import seed_demo
    from kuaimod_open.app.server import serve

    tmp = tmp_path_factory.mktemp("review")
    config = ReviewConfig(
        db=f"sqlite:///{tmp / 'review.db'}",
        policy_default=REPO / "prompts" / "policy.yaml",
        policy_versions_dir=tmp / "policies",
        report_roots=(tmp / "runs",),
    )
    ctx = ReviewContext(config)
    seed_demo(ctx.store, ctx.policy()[0], tmp / "frames")
    _write_reports(ctx, tmp / "runs")
    port = _free_port()
    demo = serve(config, "127.0.0.1", port, block=False)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT)
            expect.set_options(timeout=WAIT)
            page.goto(f"http://127.0.0.1:{port}/")
            yield {"page": page, "db": tmp / "review.db", "tmp": tmp}
            browser.close()
    finally:
        demo.close()


def _write_reports(ctx: Any, root: Path) -> None:
    """Two evaluation runs a day apart, so the evaluation tab has plots and a learning curve."""
    from datetime import timedelta

    from kuaimod_open.evaluation.metrics import evaluate
    from kuaimod_open.evaluation.report import write_report
    from kuaimod_open.loop.feedback import latest_verdicts, stored_samples

    policy, _ = ctx.policy()
    verdicts = [v for _, v in latest_verdicts(ctx.store).values()]
    gold = {"demo-01": "引导私下交易", "demo-03": "违法犯罪", "demo-07": "夸大商品功效"}
    samples = [s.model_copy(update={"label": gold.get(s.id, "正向")}) for s in stored_samples(ctx.store).values()]
    report = evaluate(samples, verdicts, policy)
    earlier = report.model_copy(update={"created_at": report.created_at - timedelta(days=1), "macro_f1": 0.05})
    write_report(earlier, root / "run-1", plots=False)
    write_report(report, root / "run-2", plots=True)


def _shot(page: Any, name: str) -> None:
    if os.environ.get("KUAIMOD_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=True)


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _pick(page: Any, elem_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown by its visible text."""
    field = page.locator(f"#{elem_id} input")
    field.click()
    field.fill(option)
    page.get_by_role("option", name=option).first.click()


def _set_editor(page: Any, text: str) -> None:
    """Replace the CodeMirror editor's content, as a paste would."""
    page.locator("#km-policy-editor .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_review_queue_agree_and_override(served: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, db = served["page"], served["db"]
    queue = page.locator("#km-queue")
    expect(page.locator("#km-status")).to_contain_text("6 item(s) awaiting review")
    expect(queue).to_contain_text("demo-03")
    _shot(page, "review_queue.png")

    # A high-severity item: frames are blurred until the reviewer reveals them.
    page.locator("#km-reviewer input, #km-reviewer textarea").first.fill("alice")
    queue.get_by_text("demo-03", exact=True).last.click()
    expect(page.locator("#km-item-header")).to_contain_text("demo-03")
    expect(page.locator("#km-frames img").first).to_have_attribute("style", "width:160px;height:auto;display:block;"
                                                                   "filter: blur(14px) grayscale(100%);")  # fmt: skip
    page.locator("#km-reveal").click()
    expect(page.locator("#km-status")).to_contain_text("revealed")
    expect(page.locator("#km-frames img").first).not_to_have_attribute("style", "filter")

    # Select demo-01: cited frame outlined, cited quotes highlighted. Agree with the keyboard shortcut.
    queue.get_by_text("demo-01", exact=True).last.click()
    expect(page.locator("#km-item-header")).to_contain_text("demo-01")
    expect(page.locator("#km-text mark").first).to_have_text("加我V")
    expect(page.locator("#km-frames .km-cited")).to_have_count(1)
    _shot(page, "review_item.png")
    page.locator("#km-item-header").click()  # focus out of the text box, so the key is a shortcut
    page.keyboard.press("a")
    expect(page.locator("#km-status")).to_contain_text("agree on demo-01: PRIVATE_DEAL / block, by alice")
    expect(queue).not_to_contain_text("demo-01")
    assert _query(db, "SELECT kind, category, decision, author, source FROM feedback WHERE sample_id='demo-01'") == [
        ("reviewer_decision", "PRIVATE_DEAL", "block", "alice", "review-ui")
    ]  # fmt: skip

    # Override the unparsed demo-02: benign, allowed, with a reason code, a note, as a precedent.
    queue.get_by_text("demo-02", exact=True).last.click()
    expect(page.locator("#km-item-header")).to_contain_text("demo-02")
    _pick(page, "km-ov-category", "BENIGN · 正向 · Benign")
    _pick(page, "km-ov-decision", "allow")
    _pick(page, "km-ov-reason", "not_violating")
    page.locator("#km-note textarea, #km-note input").first.fill("a cooking video")
    page.locator("#km-precedent input").check()
    page.locator("#km-override").click()
    expect(page.locator("#km-status")).to_contain_text("override on demo-02: BENIGN / allow, by alice")
    expect(page.locator("#km-status")).to_contain_text("precedent #")
    expect(queue).not_to_contain_text("demo-02")
    assert _query(db, "SELECT category, decision, reason, author FROM feedback WHERE sample_id='demo-02'") == [
        ("BENIGN", "allow", "not_violating: a cooking video", "alice")
    ]
    assert _query(db, "SELECT sample_id, category, author FROM precedents") == [("demo-02", "BENIGN", "alice")]
    assert _query(db, "SELECT actor, action, sample_id FROM review_audit ORDER BY id") == [
        ("alice", "reveal", "demo-03"), ("alice", "agree", "demo-01"), ("alice", "override", "demo-02")
    ]  # fmt: skip
    page.get_by_role("tab", name="Audit log").click()
    page.locator("#km-audit-refresh").click()
    expect(page.locator("#km-audit")).to_contain_text("override")


def test_policy_editor_shows_errors_and_saves_versions(served: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page, db = served["page"], served["db"]
    page.get_by_role("tab", name="Policy editor").click()
    errors = page.locator("#km-policy-errors textarea")
    expect(errors).to_have_value(re.compile("valid: .* v1.1.0"))
    text = (REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8")
    bad = text.replace('version: "1.1.0"', 'version: "1.1.1"', 1).replace("action: block", "action: ban", 1)
    _set_editor(page, bad)
    page.locator("#km-policy-save").click()
    expect(page.locator("#km-policy-status")).to_contain_text("Not saved: the policy is invalid")
    expect(errors).to_have_value(re.compile(r"<edited policy>:\d+: categories\.\d+\.action: .*'ban'"))
    assert _query(db, "SELECT name FROM models WHERE kind='policy'") == [("1.1.0",)]
    page.locator("#km-policy-preview-btn").click()
    expect(page.locator("#km-prompt-preview textarea")).to_have_value(re.compile("invalid"))
    _shot(page, "policy_editor.png")

    _set_editor(page, bad.replace("action: ban", "action: block", 1))
    page.locator("#km-policy-note textarea, #km-policy-note input").first.fill("wording only")
    page.locator("#km-policy-save").click()
    expect(page.locator("#km-policy-status")).to_contain_text("Saved policy version 1.1.1")
    expect(page.locator("#km-policy-history")).to_contain_text("1.1.1")
    assert _query(db, "SELECT name, status FROM models WHERE kind='policy' ORDER BY id") == [
        ("1.1.0", "active"), ("1.1.1", "candidate")
    ]  # fmt: skip
    assert (served["tmp"] / "policies" / "policy.v1.1.1.yaml").is_file()


def test_evaluation_tab_shows_reports_and_learning_curve(served: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page = served["page"]
    page.get_by_role("tab", name="Evaluation").click()
    expect(page.locator("#km-reports")).to_contain_text("run-2")
    expect(page.locator("#km-learning-curve")).to_be_visible()
    expect(page.locator("#km-report-plots img").first).to_be_visible()
    expect(page.locator("#km-report-md")).to_contain_text("KuaiMod benchmark evaluation")
    _shot(page, "evaluation.png")
