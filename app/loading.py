"""Getting verdicts into the store for review: a verdict file from ``kuaimod moderate``, or demo data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kuaimod_open import __version__
from kuaimod_open.ingest.benchmark import load_benchmark
from kuaimod_open.ingest.frames import find_frames
from kuaimod_open.ingest.sample import Frame, Sample, read_jsonl
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.policy import Decision, Policy
from kuaimod_open.judge.verdict import (
    CaseRef,
    Evidence,
    FramePair,
    FrameRef,
    MatchRef,
    ParseStatus,
    Provenance,
    Stage,
    TextSpan,
    Verdict,
)
from kuaimod_open.loop.feedback import FeedbackEvent, FeedbackKind, add_feedback, record_sample, record_verdict
from kuaimod_open.loop.store import Store


def _stored_payloads(store: Store, sample_id: str) -> set[str]:
    t = store.table("verdicts")
    with store.engine.connect() as conn:
        return {r[0] for r in conn.execute(store.sa.select(t.c.payload).where(t.c.sample_id == sample_id))}


def load_verdict_file(
    store: Store, path: str | Path, *, data: str | Path | None = None, frames_root: str | Path | None = None
) -> tuple[int, int]:
    """Record the verdicts of a JSONL file (and their samples) for review; returns (new verdicts, samples).

    Sample text and frames come from ``data`` (KuaiMod-format rows) when given; otherwise the frames
    ``kuaimod moderate`` kept in ``<verdicts>.frames/`` under the verdict's sample key are used
    (:func:`kuaimod_open.ingest.frames.find_frames`). Loading a file twice adds nothing.
    """
    path = Path(path)
    verdicts = [Verdict.model_validate(obj) for _, obj in read_jsonl(path)]
    rows = {s.id: s for s in load_benchmark(data, frames_root)} if data is not None else {}
    frames_dir = path.with_name(path.name + ".frames")
    added = 0
    for verdict in verdicts:
        key, stamps = verdict.provenance.sample_key, verdict.provenance.frame_timestamps
        frames = find_frames(frames_dir, verdict.sample_id, key, stamps) if key else ()
        sample = rows.get(verdict.sample_id) or Sample(id=verdict.sample_id, frames=frames)
        record_sample(store, sample)
        if verdict.model_dump_json() not in _stored_payloads(store, verdict.sample_id):
            record_verdict(store, verdict)
            added += 1
    return added, len({v.sample_id for v in verdicts})


# --------------------------------------------------------------------------- demo data

_DEMO = [
    # id, title, ocr, asr, category, confidence, status, quotes
    ("demo-01", "清仓特价 最后三天", "加我V 私聊 便宜出货", "想要的直接加我微信", "PRIVATE_DEAL", 0.55, "ok",
     [("ocr", "加我V"), ("asr", "加我微信")]),
    ("demo-02", "今天的晚饭", "", "嗯 这个 那个", None, None, "unparsed", []),
    ("demo-03", "深夜街头实拍", "现场画面 请勿模仿", "快跑 有人拿刀", "ILLEGAL", 0.45, "ok", [("asr", "有人拿刀")]),
    ("demo-04", "周末去爬山", "风景真好", "大家好 今天我们去爬山", "BENIGN", 0.93, "ok", []),
    ("demo-05", "无法打开的视频", "", "", None, None, "error", []),
    ("demo-06", "手工编织教程", "第一步 起针", "先把线绕两圈", "BENIGN", 0.97, "ok", []),
    ("demo-07", "喝了它 三天瘦十斤", "无效退款 100%有效", "我们的产品效果立竿见影", "EXAGGERATED_CLAIMS", 0.72, "ok",
     [("ocr", "100%有效"), ("title", "三天瘦十斤")]),
]  # fmt: skip
# A router verdict (text spans and nearest labelled cases, a benchmark 'null' placeholder in OCR) and a
# hash-bank match (frame pairs): the evidence the first stages record, shown like the VLM's.
_ROUTER = ("demo-08", "这些人都该滚出去 评论区见", "null", "他们就是一群 垃圾 滚出我们的城市", "HATE", 0.52)
_MATCH = ("demo-09", "高清无码 完整版看主页", "", "", "PORN_VULGAR", 0.96)
_REPORTS = (
    ("demo-04", "user:1001", "spam"), ("demo-04", "user:1002", "misleading"), ("demo-07", "user:1003", "scam"),
    ("demo-09", "user:1004", "this is my own video"), ("demo-09", "user:1005", "sexual content"),
)  # fmt: skip
_COLOURS = [(196, 77, 86), (74, 144, 226), (80, 160, 110), (230, 160, 60), (130, 100, 190)]


def _demo_frames(folder: Path, sample_id: str, n: int = 4) -> tuple[Frame, ...]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n):
        path = folder / f"{sample_id}_{i}.jpg"
        if not path.exists():
            image = Image.new("RGB", (320, 180), _COLOURS[(i + len(sample_id)) % len(_COLOURS)])
            draw = ImageDraw.Draw(image)
            draw.rectangle((20 + 30 * i, 40, 120 + 30 * i, 140), fill=(250, 250, 250))
            draw.text((12, 10), f"{sample_id} frame {i + 1}", fill=(255, 255, 255))
            image.save(path, format="JPEG", quality=85)
        frames.append(Frame(path=path, index=i * 30, timestamp=round(i * 1.25, 2)))
    return tuple(frames)


def _spans(sample: Sample, quotes: list[tuple[str, str]]) -> list[TextSpan]:
    spans = []
    for field, quote in quotes:
        at = str(getattr(sample, field)).find(quote)
        spans.append(TextSpan(field=field, quote=quote, start=at if at >= 0 else None,
                              end=at + len(quote) if at >= 0 else None))  # fmt: skip
    return spans


def seed_demo(store: Store, policy: Policy, folder: str | Path, *, video: str | Path | None = None) -> list[str]:
    """Put a small synthetic queue into the store (frames drawn under ``folder``); returns the sample ids.

    For trying the UI on a fresh install (``kuaimod review --demo``) and for the tests. With ``video``,
    the high-severity item (demo-03) gets that video and frames sampled from it. Seeding twice adds nothing.
    """
    folder = Path(folder)
    start = datetime.now(UTC) - timedelta(hours=1)
    ids = []

    def provenance(n: int, sample: Sample, model: str = "demo/scripted") -> Provenance:
        return Provenance(
            model=model, policy_version=policy.version, policy_digest=policy.digest, prompt_digest="demo",
            frame_timestamps=sample.timestamps, package_version=__version__, created_at=start + timedelta(minutes=n),
        )  # fmt: skip

    for n, (sid, title, ocr, asr, code, confidence, status, quotes) in enumerate(_DEMO):
        frames = _demo_frames(folder, sid)
        clip = None
        if sid == "demo-03" and video is not None:
            from kuaimod_open.ingest.frames import sample_frames

            clip = Path(video)
            frames = sample_frames(clip, folder / sid, k=3)
        sample = Sample(id=sid, title=title, ocr=ocr, asr=asr, comments=("好看", "求链接"), frames=frames, video=clip)
        record_sample(store, sample)
        ids.append(sid)
        if not _stored_payloads(store, sid):
            record_verdict(store, _demo_verdict(sample, policy, provenance(n, sample), code, confidence, status,
                                                quotes))  # fmt: skip
    ids += _seed_first_stages(store, policy, folder, provenance)
    for sid, reporter, reason in _REPORTS:
        add_feedback(
            store,
            FeedbackEvent(sample_id=sid, kind=FeedbackKind.USER_REPORT, author=reporter, reason=reason,
                          created_at=start + timedelta(minutes=30), source="demo"),
            policy,
        )  # fmt: skip
    return ids


def _seed_first_stages(store: Store, policy: Policy, folder: Path, provenance: Any) -> list[str]:
    sid, title, ocr, asr, code, p = _ROUTER
    sample = Sample(id=sid, title=title, ocr=ocr, asr=asr, comments=("null",), frames=_demo_frames(folder, sid))
    record_sample(store, sample)
    if not _stored_payloads(store, sid):
        cat = policy.category(code)
        record_verdict(store, Verdict(
            sample_id=sid, decision=Decision.REVIEW, category=code, tag=cat.tag, confidence=p,
            status=ParseStatus.OK, stage=Stage.ROUTER, flags=[Flag.ESCALATED], summary=f"router: p(violation)={p:.3f}",
            evidence=Evidence(
                text=_spans(sample, [("title", "滚出去"), ("asr", "垃圾 滚出我们的城市")]),
                cases=[CaseRef(id="train-20417", category="HATE", similarity=0.83, source="router-train"),
                       CaseRef(id="train-11802", category="HATE", similarity=0.79, source="router-train"),
                       CaseRef(id="train-30999", category="BENIGN", similarity=0.71, source="router-train")],
            ),
            provenance=provenance(len(_DEMO), sample, model="router/tfidf-e5"),
        ))  # fmt: skip
    mid, title, ocr, asr, code, similarity = _MATCH
    match = Sample(id=mid, title=title, ocr=ocr, asr=asr, frames=_demo_frames(folder, mid))
    record_sample(store, match)
    if not _stored_payloads(store, mid):
        cat = policy.category(code)
        pairs = [FramePair(query_timestamp=f.timestamp, bank_timestamp=round(10.0 + 2 * i, 2), distance=12 + 3 * i)
                 for i, f in enumerate(match.frames[:3])]  # fmt: skip
        record_verdict(store, Verdict(
            sample_id=mid, decision=cat.action, category=code, tag=cat.tag, confidence=similarity,
            status=ParseStatus.OK, stage=Stage.MATCH, summary="known-content match",
            evidence=Evidence(matches=[MatchRef(entry_id="bank-0042", category=code, decision=cat.action,
                                                similarity=0.75, pairs=pairs)]),
            provenance=provenance(len(_DEMO) + 1, match, model="hash-bank/pdq"),
        ))  # fmt: skip
    return [sid, mid]


def _demo_verdict(
    sample: Sample, policy: Policy, prov: Provenance, code: str | None, confidence: float | None, status: str,
    quotes: list[tuple[str, str]],
) -> Verdict:  # fmt: skip
    if code is None:
        failed = status == "error"
        return Verdict(
            sample_id=sample.id, decision=Decision.REVIEW, status=ParseStatus(status), provenance=prov,
            raw_output="" if failed else "嗯……这个视频我看不太清楚", flags=[Flag.ERROR if failed else Flag.UNPARSED],
            error="demo: the video could not be decoded" if failed else None,
        )  # fmt: skip
    cat = policy.category(code)
    decision = cat.action
    flags: list[str] = []
    if confidence is not None and confidence < policy.min_confidence:
        decision, flags = Decision.REVIEW, [Flag.LOW_CONFIDENCE]
    return Verdict(
        sample_id=sample.id, decision=decision, category=code, tag=cat.tag, confidence=confidence,
        evidence=Evidence(frames=[FrameRef(position=2, timestamp=sample.frames[1].timestamp)],
                          text=_spans(sample, quotes)),
        summary=f"demo verdict: {cat.name}",
        rationale=f"### 1. Content extraction\n{sample.title}\n### 5. Final summary\nLooks like {cat.name}.",
        status=ParseStatus(status), flags=flags, provenance=prov,
    )  # fmt: skip
