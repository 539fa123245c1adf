"""Fill a feedback store with N realistic samples through the project's own store API (bulk paths).

    python bench/synthetic_store.py --db sqlite:///big.db --samples 100000
    python bench/synthetic_store.py --db postgresql+psycopg://u:p@localhost/db --samples 1000000

Per sample: the sample's text (title/OCR/ASR/comments, taken from the dev benchmark's rows when
/work/shared/data/kuaimod_dev.jsonl or $KUAIMOD_DEV_DATA exists, else generated) and one verdict of a
realistic shape: stage (vlm, router, match, pipeline), status (ok, repaired, unparsed, error),
decision and category consistent with the default policy, flags from kuaimod_open.judge.flags.Flag,
evidence (cited frames with timestamps, quoted text spans, router cases, hash-bank matches), a
reasoning text and raw output of the sizes the VLM writes, and full provenance. About 8% of samples
get a second, newer verdict. Feedback: reviewer decisions (~12%, policy-consistent, some allowed
violations with an exception reason), appeals, user reports, dislikes; ~1% of decisions become
precedents. Writes go through record_samples / record_verdicts / add_feedback_many (one batch per
transaction) and add_precedent, so the review queue is maintained exactly as in production.
Prints the samples per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kuaimod_open.ingest.sample import Frame, Sample  # noqa: E402
from kuaimod_open.judge.flags import Flag  # noqa: E402
from kuaimod_open.judge.policy import Decision, Policy, default_policy_path, load_policy  # noqa: E402
from kuaimod_open.judge.verdict import (  # noqa: E402
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
from kuaimod_open.loop.feedback import FeedbackEvent, add_feedback_many, record_samples, record_verdicts  # noqa: E402
from kuaimod_open.loop.precedents import add_precedent  # noqa: E402
from kuaimod_open.loop.store import Store  # noqa: E402

DEV = Path(os.environ.get("KUAIMOD_DEV_DATA", "/work/shared/data/kuaimod_dev.jsonl"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXCEPTIONS = ("news_or_education", "satire_or_art", "counter_speech")
WORDS = "直播 红包 加微信 教程 美食 搞笑 旅行 测评 优惠 私信 点赞 关注 健身 萌宠 游戏 音乐 舞蹈 科普 新闻 汽车".split()


def _texts(rng: random.Random) -> list[dict[str, str]]:
    if DEV.is_file():
        rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [{"title": r.get("title", ""), "ocr": r.get("OCR", ""), "asr": r.get("ASR", "")} for r in rows]
    return [
        {
            "title": " ".join(rng.choices(WORDS, k=8)),
            "ocr": "。".join(rng.choices(WORDS, k=12)),
            "asr": "，".join(rng.choices(WORDS, k=20)),
        }
        for _ in range(500)
    ]


class Generator:
    """Deterministic (seeded) realistic samples, verdicts and feedback."""

    def __init__(self, policy: Policy, seed: int) -> None:
        self.policy, self.rng = policy, random.Random(seed)
        self.texts = _texts(self.rng)
        self.codes = [c.code for c in policy.categories]
        self.violations = [c for c in self.codes if c != policy.benign]

    def sample(self, i: int) -> Sample:
        t = self.texts[i % len(self.texts)]
        folder = f"frames/{i:08d}/"
        frames = tuple(
            Frame(path=Path(folder + f"{k}.jpg"), index=k * 30, timestamp=round(k * 1.2, 2)) for k in range(8)
        )
        return Sample(
            id=f"vid-{i:08d}",
            title=t["title"][:120],
            ocr=t["ocr"][:400],
            asr=t["asr"][:600],
            comments=tuple(self.rng.choices(WORDS, k=3)),
            video=Path(f"/data/videos/{i:08d}.mp4"),
            frames=frames,
        )

    def verdict(self, sample: Sample, when: datetime) -> Verdict:
        """A verdict for ``sample``: a copy of one of 2,000 fully built (validated) verdicts of every shape,
        with this sample's id, title and time (building each one from scratch would dominate the fill)."""
        if not hasattr(self, "pool"):
            self.pool = [self.build_verdict(self.sample(k), T0) for k in range(2000)]
        template = self.rng.choice(self.pool)
        provenance = template.provenance.model_copy(update={"created_at": when})
        return template.model_copy(
            update={"sample_id": sample.id, "summary": sample.title[:40], "provenance": provenance}
        )

    def build_verdict(self, sample: Sample, when: datetime) -> Verdict:
        """A verdict built and validated from scratch (see :meth:`verdict`)."""
        rng = self.rng
        stage = rng.choices([Stage.VLM, Stage.ROUTER, Stage.MATCH, Stage.PIPELINE], weights=[55, 38, 5, 2])[0]
        status = ParseStatus.OK
        if stage is Stage.PIPELINE:
            status = ParseStatus.ERROR
        elif stage is Stage.VLM:
            status = rng.choices([ParseStatus.OK, ParseStatus.REPAIRED, ParseStatus.UNPARSED], weights=[90, 5, 5])[0]
        category = None
        if status in (ParseStatus.OK, ParseStatus.REPAIRED):
            category = self.policy.benign if rng.random() < 0.6 else rng.choice(self.violations)
        confidence = None if category is None else round(rng.betavariate(5, 1.5), 3)
        flags: list[Flag] = []
        decision = self.policy.category(category).action if category else Decision.REVIEW
        if status is ParseStatus.ERROR:
            flags = [Flag.ERROR]
        elif status is ParseStatus.UNPARSED:
            flags = [Flag.UNPARSED]
        elif status is ParseStatus.REPAIRED:
            flags = [Flag.REPAIRED_JSON]
            decision = Decision.REVIEW if decision is Decision.ALLOW else decision
        if stage is Stage.ROUTER:
            flags.append(Flag.AUTO_ALLOW if decision is Decision.ALLOW else Flag.AUTO_FLAG)
        if confidence is not None and confidence < self.policy.min_confidence:
            flags.append(Flag.LOW_CONFIDENCE)
            decision = Decision.REVIEW
        if stage is Stage.VLM and rng.random() < 0.01:
            flags.append(Flag.INJECTION_SUSPECTED)
            decision = Decision.REVIEW
        evidence = Evidence(
            frames=[FrameRef(position=k, timestamp=round((k - 1) * 1.2, 2)) for k in rng.sample(range(1, 9), 2)],
            text=[TextSpan(field="title", quote=sample.title[:12], start=0, end=min(12, len(sample.title)))],
        )
        if stage is Stage.ROUTER:
            evidence.cases = [
                CaseRef(id=f"train-{rng.randrange(10**5)}", category=category, similarity=0.8, source="router-train")
            ]
        if stage is Stage.MATCH:
            evidence.matches = [
                MatchRef(
                    entry_id=f"bank-{rng.randrange(10**4)}",
                    category=category,
                    decision=decision,
                    similarity=0.9,
                    pairs=[FramePair(query_timestamp=1.2 * k, bank_timestamp=1.2 * k, distance=12) for k in range(4)],
                )
            ]
        rationale = ""
        raw = ""
        if stage is Stage.VLM:
            rationale = "### 1. 内容提取\n" + "。".join(rng.choices(WORDS, k=60)) + "\n### 5. 结论\n" + str(category)
            answer = {"category": category, "confidence": confidence, "evidence": {"frames": [1, 3]}}
            raw = rationale + "\n```json\n" + json.dumps(answer, ensure_ascii=False) + "\n```"
        return Verdict(
            sample_id=sample.id,
            decision=decision,
            category=category,
            tag=self.policy.category(category).tag if category else None,
            confidence=confidence,
            token_confidence=round(rng.random(), 3) if category and stage is Stage.VLM and rng.random() < 0.5 else None,
            evidence=evidence,
            summary=sample.title[:40],
            rationale=rationale,
            raw_output=raw,
            status=status,
            stage=stage,
            flags=[str(f) for f in flags],
            latency_s=round(rng.uniform(0.05, 4.0), 3),
            input_tokens=rng.randrange(800, 3000) if stage is Stage.VLM else None,
            output_tokens=rng.randrange(80, 600) if stage is Stage.VLM else None,
            provenance=Provenance(
                model="Qwen/Qwen2.5-VL-7B-Instruct" if stage is Stage.VLM else f"{stage}-v3",
                policy_version=rng.choice(["1.0.0", "1.0.0", "1.0.1"]),
                policy_digest="9f2c1ab0d4e5f6a7",
                prompt_digest="3e4d5c6b7a8f9e0d",
                frame_timestamps=[round(k * 1.2, 2) for k in range(8)],
                package_version="0.1.0",
                created_at=when,
            ),
        )

    def feedback(self, verdict: Verdict, when: datetime) -> list[FeedbackEvent]:
        rng, out = self.rng, []
        sid = verdict.sample_id
        r = rng.random()
        if r < 0.12:  # a reviewer decided
            category = verdict.category if verdict.category and rng.random() < 0.7 else rng.choice(self.codes)
            decision, reason = None, "agree"
            if category != self.policy.benign and rng.random() < 0.05:
                decision, reason = Decision.ALLOW, f"{rng.choice(EXCEPTIONS)}: context"
            out.append(
                FeedbackEvent(
                    sample_id=sid,
                    kind="reviewer_decision",
                    category=category,
                    decision=decision,
                    reason=reason,
                    author=f"rev{rng.randrange(40)}",
                    created_at=when + timedelta(hours=2),
                )  # fmt: skip
            )
            if rng.random() < 0.08:
                out.append(
                    FeedbackEvent(
                        sample_id=sid,
                        kind="appeal_outcome",
                        category=self.policy.benign,
                        author="appeals",
                        created_at=when + timedelta(days=3),
                    )  # fmt: skip
                )
        if rng.random() < 0.05:
            out.append(
                FeedbackEvent(
                    sample_id=sid,
                    kind="user_report",
                    author=f"user{rng.randrange(10**6)}",
                    reason="report",
                    created_at=when + timedelta(hours=rng.choice([1, 30])),
                )  # fmt: skip
            )
        if rng.random() < 0.05:
            out.append(FeedbackEvent(sample_id=sid, kind="dislike", author=f"user{rng.randrange(10**6)}",
                                     created_at=when + timedelta(minutes=5)))  # fmt: skip
        return out


def fill(
    url: str, n: int, *, seed: int = 0, batch: int = 5000, precedent_rate: float = 0.01, quiet: bool = False
) -> dict[str, float]:
    """Fill the store at ``url`` with ``n`` samples; returns counts and the rate."""
    store = Store(url)
    policy = load_policy(default_policy_path())
    gen = Generator(policy, seed)
    start = time.perf_counter()
    counts = {"samples": 0, "verdicts": 0, "feedback": 0, "precedents": 0}
    for first in range(0, n, batch):
        samples = [gen.sample(i) for i in range(first, min(n, first + batch))]
        verdicts, events, precedents = [], [], []
        for k, sample in enumerate(samples):
            when = T0 + timedelta(seconds=(first + k) * 30)
            verdict = gen.verdict(sample, when)
            verdicts.append(verdict)
            if gen.rng.random() < 0.08:
                verdicts.append(gen.verdict(sample, when + timedelta(days=1)))  # re-judged under a new policy
            fb = gen.feedback(verdict, when)
            events.extend(fb)
            if fb and fb[0].kind == "reviewer_decision" and gen.rng.random() < precedent_rate * 8:
                precedents.append((sample, fb[0]))
        counts["samples"] += record_samples(store, samples)
        counts["verdicts"] += len(record_verdicts(store, verdicts, policy=policy))
        counts["feedback"] += add_feedback_many(store, events, policy)
        for sample, event in precedents:
            resolved = event.resolved(policy)
            add_precedent(store, sample, str(resolved.category), str(resolved.decision), reason=event.reason,
                          author=event.author)  # fmt: skip
            counts["precedents"] += 1
        if not quiet:
            done = first + len(samples)
            rate = done / (time.perf_counter() - start) * 60
            print(f"\r{done}/{n} samples, {rate:,.0f}/min", end="", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    if not quiet:
        print(file=sys.stderr)
    store.engine.dispose()
    return {**counts, "seconds": round(elapsed, 1), "samples_per_min": round(n / elapsed * 60)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="store URL (sqlite:///... or postgresql+psycopg://...)")
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--precedent-rate", type=float, default=0.01, help="share of samples that become precedents")
    args = parser.parse_args()
    print(json.dumps(fill(args.db, args.samples, seed=args.seed, batch=args.batch, precedent_rate=args.precedent_rate)))


if __name__ == "__main__":
    main()
