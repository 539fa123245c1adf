"""The match stage: a re-upload of a banked video is decided from its PDQ hashes, before any model.

The bank (entries with their frame hashes, kept in the feedback store by
:mod:`kuaimod_open.loop.bank`) is loaded into a :class:`BankIndex`: all usable bank frames in one
binary index (faiss when installed, else numpy brute force). A prepared sample's frame hashes
(:mod:`kuaimod_open.ingest.pdq`, computed once in preparation) are looked up as vPDQ matches them:

1. only frames of quality >= 50 count, on both sides;
2. a query frame matches an entry when some frame of the entry is within ``max_distance`` bits;
   the query is tried as it is and mirrored (PDQ's dihedral hash), and the better orientation counts;
3. ``query_fraction`` is the share of the query's frames that match the entry, ``bank_fraction``
   the share of the entry's frames matched by some query frame;
4. the entry matches when both reach the policy's minimums and at least ``min_frames`` frames match.

A match becomes a verdict with ``stage: match`` whose evidence is the entry, the similarity and the
matched frame pairs with their timestamps (``Evidence.matches``). In a category the policy lets act
alone (``match.act_alone``) the verdict takes the entry's decision; otherwise it goes to review. In
both cases no model is called. :func:`matching_judge` puts this stage in front of any batch judge
(the plain VLM, or the cascade), so the local runner, Ray and the HTTP service all get it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from kuaimod_open import __version__
from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.pdq import HASH_BYTES, VideoHashes, distances, hexes_to_array
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.backends.base import Backend
from kuaimod_open.judge.flags import Flag
from kuaimod_open.judge.pipeline import ModerationConfig, PrecedentLookup, moderate
from kuaimod_open.judge.policy import Decision, MatchPolicy, Policy
from kuaimod_open.judge.prompt import Template
from kuaimod_open.judge.verdict import Evidence, FramePair, MatchRef, ParseStatus, Provenance, Stage, Verdict

MATCHER_ID = "hash-bank:pdq"
# Frame pairs kept as evidence per match: enough to see where in both videos the match lies.
MAX_PAIRS = 20


class BankEntry(BaseModel):
    """One banked video: its frame hashes and the decision recorded with it."""

    model_config = ConfigDict(frozen=True)

    id: str
    category: str
    decision: Decision
    source: str = ""
    author: str = ""
    created_at: datetime | None = None
    sample_id: str | None = None
    note: str = ""
    hashes: VideoHashes


@dataclass(frozen=True)
class BankMatch:
    """A bank entry a video matched, how well, and which frames matched."""

    entry: BankEntry
    query_fraction: float
    bank_fraction: float
    mirrored: bool
    pairs: list[FramePair]

    @property
    def similarity(self) -> float:
        """The share of the query's frames that matched (what ``MatchRef.similarity`` reports)."""
        return self.query_fraction

    def ref(self) -> MatchRef:
        """The evidence record of this match."""
        return MatchRef(
            entry_id=self.entry.id,
            category=self.entry.category,
            decision=self.entry.decision,
            similarity=round(self.query_fraction, 4),
            pairs=self.pairs[:MAX_PAIRS],
        )


# --------------------------------------------------------------------------- frame index


class FrameIndex:
    """Exact range search over 256-bit codes: faiss binary indexes, or numpy brute force.

    ``kind``: ``flat`` (faiss IndexBinaryFlat), ``mih`` (faiss IndexBinaryMultiHash, 16 maps of
    16 bits, exact up to 31 bits with one flip), ``numpy`` (no faiss needed), ``auto`` (flat when
    faiss is installed, else numpy). All give the same results; they differ in speed and memory
    (BENCHMARKS.md §7).
    """

    def __init__(self, codes: np.ndarray, kind: str = "auto", max_distance: int = 31) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, HASH_BYTES)
        self.size = len(codes)
        if kind == "auto":
            try:
                import faiss  # noqa: F401

                kind = "flat"
            except ImportError:
                kind = "numpy"
        self.kind, self.codes, self.max_distance = kind, codes, max_distance
        self._index: Any = None
        self._build()

    def _build(self) -> None:
        kind, codes, max_distance = self.kind, self.codes, self.max_distance
        if kind in ("flat", "mih"):
            from kuaimod_open._lazy import require

            faiss = require("faiss", extra="match", purpose="a binary index of the hash bank", package="faiss-cpu")
            if kind == "flat":
                self._index = faiss.IndexBinaryFlat(HASH_BYTES * 8)
            else:
                # nflip >= max_distance // 16 makes multi-index hashing exact up to max_distance.
                self._index = faiss.IndexBinaryMultiHash(HASH_BYTES * 8, 16, 16)
                self._index.nflip = max(1, max_distance // 16)
            if self.size:
                self._index.add(codes)
        elif kind != "numpy":
            raise ConfigError(f"unknown frame index kind '{kind}' (use auto, flat, mih or numpy)")

    def __getstate__(self) -> dict[str, Any]:
        # faiss indexes do not pickle: ship the codes (to a Ray actor) and rebuild there.
        return {"kind": self.kind, "codes": self.codes, "max_distance": self.max_distance, "size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = None
        self._build()

    def search(self, queries: np.ndarray, max_distance: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query code: the ids of the codes within ``max_distance`` bits, and their distances."""
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, HASH_BYTES)
        if self.size == 0 or len(queries) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return [(empty, empty.astype(np.int32)) for _ in range(len(queries))]
        if self._index is None:
            out = []
            for start in range(0, len(queries), 8):  # bounded memory: 8 x bank x 32 bytes at a time
                block = distances(queries[start : start + 8], self.codes)
                for row in block:
                    ids = np.nonzero(row <= max_distance)[0]
                    out.append((ids.astype(np.int64), row[ids]))
            return out
        # faiss range search is strict (distance < radius).
        lims, dist, ids = self._index.range_search(queries, max_distance + 1)
        return [(ids[lims[i] : lims[i + 1]], dist[lims[i] : lims[i + 1]]) for i in range(len(queries))]


# --------------------------------------------------------------------------- the bank in memory


class BankIndex:
    """All active bank entries with their usable frames in one :class:`FrameIndex`."""

    def __init__(self, entries: Sequence[BankEntry], kind: str = "auto", max_distance: int = 31) -> None:
        self.entries = list(entries)
        codes: list[str] = []
        owner: list[int] = []
        stamps: list[float] = []
        self.usable: list[int] = []
        for e, entry in enumerate(self.entries):
            frames = entry.hashes.usable()
            self.usable.append(len(frames))
            for frame in frames:
                codes.append(frame.pdq)
                owner.append(e)
                stamps.append(frame.timestamp)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.stamps = np.asarray(stamps, dtype=np.float64)
        self.frames = FrameIndex(hexes_to_array(codes), kind=kind, max_distance=max_distance)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, hashes: VideoHashes | None, settings: MatchPolicy) -> list[BankMatch]:
        """Every entry ``hashes`` matches under ``settings``, best first."""
        if hashes is None or not self.entries:
            return []
        query = hashes.usable()
        if not query:
            return []
        found: dict[int, BankMatch] = {}
        for mirrored in (False, True):
            values = [(f.mirror if mirrored else f.pdq) for f in query]
            if mirrored and any(v is None for v in values):
                continue
            hits = self.frames.search(hexes_to_array([v for v in values if v is not None]), settings.max_distance)
            per_entry: dict[int, dict[int, tuple[int, int]]] = {}  # entry -> query frame -> (bank frame, distance)
            bank_hit: dict[int, set[int]] = {}
            for qi, (ids, dist) in enumerate(hits):
                for bank_id, d in zip(ids.tolist(), dist.tolist(), strict=True):
                    e = int(self.owner[bank_id])
                    best = per_entry.setdefault(e, {}).get(qi)
                    if best is None or d < best[1]:
                        per_entry[e][qi] = (bank_id, int(d))
                    bank_hit.setdefault(e, set()).add(bank_id)
            for e, pairs in per_entry.items():
                qf = len(pairs) / len(query)
                bf = len(bank_hit[e]) / max(1, self.usable[e])
                if len(pairs) < settings.min_frames or qf < settings.min_query_fraction:
                    continue
                if bf < settings.min_bank_fraction:
                    continue
                previous = found.get(e)
                if previous is not None and previous.query_fraction >= qf:
                    continue
                frame_pairs = [
                    FramePair(
                        query_timestamp=query[qi].timestamp, bank_timestamp=float(self.stamps[bank_id]), distance=d
                    )
                    for qi, (bank_id, d) in sorted(pairs.items())
                ]
                found[e] = BankMatch(self.entries[e], qf, bf, mirrored, frame_pairs)
        return sorted(
            found.values(),
            key=lambda m: (-m.query_fraction, -m.bank_fraction, np.mean([p.distance or 0 for p in m.pairs])),
        )


# --------------------------------------------------------------------------- verdicts


def match_verdict(sample: Sample, matches: Sequence[BankMatch], policy: Policy) -> Verdict:
    """The verdict for a sample that matched bank entries (``matches`` non-empty, best first).

    The strongest decision among the entries whose category may act alone wins; when none may,
    the verdict goes to review with every match as evidence. No model is involved.
    """
    if not matches:
        raise ValueError("match_verdict needs at least one match")
    settings = policy.matching
    provenance = Provenance(
        model=MATCHER_ID,
        policy_version=policy.version,
        policy_digest=policy.digest,
        prompt_digest="-",
        frame_timestamps=[f.timestamp for f in (sample.hashes.frames if sample.hashes else ())],
        package_version=__version__,
    )
    acting = [
        m
        for m in matches
        if m.entry.category in settings.act_alone
        and policy.find(m.entry.category) is not None
        and m.entry.decision in (Decision.BLOCK, Decision.RESTRICT)
    ]
    lead = max(acting, key=lambda m: (m.entry.decision.rank, m.query_fraction)) if acting else matches[0]
    category = policy.find(lead.entry.category)
    decision = lead.entry.decision if acting else Decision.REVIEW
    flag = Flag.KNOWN_CONTENT if acting else Flag.KNOWN_CONTENT_REVIEW
    flags: list[str] = [flag]
    if category is None:
        flags.append(Flag.UNKNOWN_CATEGORY)
    mirrored = " (mirrored)" if lead.mirrored else ""
    summary = (
        f"re-upload of bank entry {lead.entry.id}{mirrored}: {lead.query_fraction:.0%} of this video's frames and "
        f"{lead.bank_fraction:.0%} of the banked video's frames match (banked as {lead.entry.category}/"
        f"{lead.entry.decision} by {lead.entry.author or 'unknown'}, source {lead.entry.source or '-'})"
    )
    ordered = [lead, *(m for m in matches if m is not lead)]
    return Verdict(
        sample_id=sample.id,
        decision=decision,
        category=category.code if category else None,
        tag=category.tag if category else None,
        confidence=round(lead.query_fraction, 4),
        evidence=Evidence(matches=[m.ref() for m in ordered[:5]]),
        summary=summary,
        rationale=summary,
        status=ParseStatus.OK,
        stage=Stage.MATCH,
        flags=flags,
        provenance=provenance,
    )


Judge = Callable[[list[Sample]], list[Verdict]]


@dataclass
class MatchStage:
    """The bank in memory and the policy that says what a match may do.

    With ``reload`` (e.g. reading the store again) and ``refresh_s``, a long-running service sees
    entries banked after it started within ``refresh_s`` seconds.
    """

    bank: BankIndex
    policy: Policy
    reload: Callable[[], BankIndex] | None = None
    refresh_s: float = 300.0
    matched: int = 0
    loaded_at: float = field(default_factory=time.monotonic)

    def __getstate__(self) -> dict[str, Any]:
        # A store-reading reload cannot travel to another process (Ray actors get a snapshot).
        return {**self.__dict__, "reload": None}

    def verdicts(self, samples: Sequence[Sample]) -> list[Verdict | None]:
        """A match verdict per sample that matched the bank, None for the others."""
        if self.reload is not None and time.monotonic() - self.loaded_at > self.refresh_s:
            self.bank, self.loaded_at = self.reload(), time.monotonic()
        out: list[Verdict | None] = []
        for sample in samples:
            found = self.bank.match(sample.hashes, self.policy.matching)
            out.append(match_verdict(sample, found, self.policy) if found else None)
        self.matched += sum(v is not None for v in out)
        return out


def vlm_judge(
    policy: Policy,
    backend: Backend,
    template: Template,
    moderation: ModerationConfig,
    precedents: PrecedentLookup | None = None,
) -> Judge:
    """The plain batch judge (every prepared sample to the VLM), for composing with :func:`matching_judge`."""
    infer = dataclasses.replace(moderation, extract=None, hashing=None)  # samples arrive prepared

    def judge(batch: list[Sample]) -> list[Verdict]:
        return list(moderate(batch, policy, backend, template, infer, precedents=precedents))

    return judge


def matching_judge(stage: MatchStage, judge: Judge) -> Judge:
    """A batch judge that decides bank matches itself and passes only the other samples to ``judge``."""

    def run(batch: list[Sample]) -> list[Verdict]:
        found = stage.verdicts(batch)
        rest = [s for s, v in zip(batch, found, strict=True) if v is None]
        judged = iter(judge(rest) if rest else [])
        return [v if v is not None else next(judged) for v in found]

    return run


__all__ = [
    "MATCHER_ID",
    "BankEntry",
    "BankIndex",
    "BankMatch",
    "FrameIndex",
    "MatchStage",
    "match_verdict",
    "matching_judge",
    "vlm_judge",
]
