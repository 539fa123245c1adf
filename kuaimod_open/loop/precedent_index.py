"""The approximate-nearest-neighbour index over precedent vectors: a faiss HNSW graph, persisted beside the store.

Brute force (every stored case against the query) grows with the case law; at 10^6 cases it costs
~100 ms and 1.5 GB per process. This index answers in about a millisecond (``BENCHMARKS.md``
"Scale"). faiss rather than usearch: usearch 2.26's compiled module, imported before onnxruntime
(the OCR), crashes the process with a segmentation fault.

**The store is the truth; the index is a cache of it.** Keys are precedent ids. The index file
records how far into the store it has read (the highest id, the number of rows up to it, and a
fingerprint of that row), so an opener can tell:

* rows added since (``id`` above the mark): read and added, whatever process wrote them;
* rows that appeared below the mark (a writer that committed late) or vanished: the counts differ,
  and the ids are reconciled against the store in full;
* a store that was replaced (the row at the mark is gone or different), another embedder or another
  vector size: the index is rebuilt.

Retired precedents are dropped from the index on a full reconcile or when a query meets them;
**every query result is checked against the store** (``retired_at IS NULL``), so a retired
precedent is never returned, however stale the file.

Where the index lives: for a SQLite file store, next to it (``kuaimod.db`` -> ``kuaimod.db.precedents/``);
for any other store (PostgreSQL) in ``$KUAIMOD_PRECEDENT_INDEX`` when set, else under the cache root
(``$KUAIMOD_CACHE/precedent_index/<digest of the URL>/``); an in-memory SQLite store is not persisted.
The folder holds ``meta.json`` and the index file it names; a new state is written under a new name and
``meta.json`` replaced atomically, so a reader never sees a torn pair.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kuaimod_open._lazy import require
from kuaimod_open.core.cache import cache_root
from kuaimod_open.core.embedding import content_hash

INDEX_ENV = "KUAIMOD_PRECEDENT_INDEX"
META_FILE = "meta.json"
FORMAT = 1


class AnnSettings(BaseModel):
    """HNSW settings, chosen on realistic e5 vectors at 10^4..10^6 cases (bench/precedent_ann.py)."""

    connectivity: int = Field(default=32, ge=4, le=128, description="graph edges per node (HNSW's M)")
    expansion_add: int = Field(default=64, ge=8, description="search depth while inserting (efConstruction)")
    expansion_search: int = Field(default=512, ge=8, description="search depth per query (efSearch)")
    dtype: str = Field(default="f16", pattern="^(f32|f16)$", description="vector storage: float32 or float16")


class IndexMeta(BaseModel):
    """What an index file was built from, and how far into the store it has read."""

    format: int = FORMAT
    library: str
    embedder: str
    dim: int
    settings: AnnSettings
    file: str  # the index file in the same folder
    max_id: int = 0  # highest precedent id read from the store
    seen: int = 0  # store rows with id <= max_id when read (active or retired)
    anchor: str = ""  # fingerprint of the row at max_id: a replaced store has another
    count: int = 0  # live vectors in the index
    removed: list[int] = Field(default_factory=list)  # ids dropped since the graph was built (filtered out)


def index_folder(url: str, override: str | Path | None = None) -> Path | None:
    """Where the index of the store at ``url`` lives (None: not persisted). See the module docstring."""
    if override is not None:
        return Path(override)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            return None
        return Path(path + ".precedents")
    env = os.environ.get(INDEX_ENV)
    if env:
        return Path(env)
    # The URL's digest without the password: a rotated password keeps the index.
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        rest = creds.split(":", 1)[0] + "@" + host
    return cache_root() / "precedent_index" / content_hash(f"{scheme}://{rest}")[:16]


def _faiss() -> Any:
    return require("faiss", extra="caselaw", purpose="the precedent index", package="faiss-cpu")


class VectorIndex:
    """A faiss HNSW graph keyed by precedent id; inner product on L2-normalised vectors (= cosine).

    HNSW graphs cannot delete a node, so a removed id is remembered and filtered out of results;
    :attr:`stale_share` tells the owner when enough are dead that a rebuild pays.
    """

    def __init__(self, dim: int, settings: AnnSettings, index: Any = None, removed: Iterable[int] = ()) -> None:
        self.dim = dim
        self.settings = settings
        faiss = _faiss()
        if index is None:
            if settings.dtype == "f16":
                graph = faiss.IndexHNSWSQ(
                    dim, faiss.ScalarQuantizer.QT_fp16, settings.connectivity, faiss.METRIC_INNER_PRODUCT
                )
            else:
                graph = faiss.IndexHNSWFlat(dim, settings.connectivity, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = settings.expansion_add
            index = faiss.IndexIDMap2(graph)
        faiss.downcast_index(index.index).hnsw.efSearch = settings.expansion_search
        self._index = index
        self.removed: set[int] = set(removed)

    @staticmethod
    def library() -> str:
        """The library and its version, recorded with every index file."""
        return f"faiss {_faiss().__version__}"

    def _ids(self) -> np.ndarray:
        ids: np.ndarray = _faiss().vector_to_array(self._index.id_map)
        return ids

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self.removed)

    @property
    def stale_share(self) -> float:
        """Share of the graph's nodes that are removed ids."""
        return len(self.removed) / max(1, int(self._index.ntotal))

    def keys(self) -> set[int]:
        """Every live id in the index."""
        return {int(i) for i in self._ids()} - self.removed

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> int:
        """Add vectors under ids not yet in the graph (others are skipped: re-reading a row is harmless)."""
        if not len(ids):
            return 0
        keys = np.asarray(ids, dtype=np.int64)
        fresh = ~np.isin(keys, self._ids())
        revived = [int(k) for k in keys[~fresh] if int(k) in self.removed]
        self.removed.difference_update(revived)  # an id back in the store: its (same) vector is still there
        if fresh.any():
            self._index.add_with_ids(np.ascontiguousarray(vectors[fresh], dtype=np.float32), keys[fresh])
        return int(fresh.sum()) + len(revived)

    def remove(self, ids: Iterable[int]) -> int:
        """Drop ids from results; returns how many were live."""
        wanted = {int(i) for i in ids} - self.removed
        if not wanted:
            return 0
        live = wanted & {int(i) for i in self._ids()} if len(wanted) > 64 else wanted & self.keys()
        self.removed |= live
        return len(live)

    def search(self, vector: np.ndarray, count: int) -> list[tuple[int, float]]:
        """The ``count`` nearest live ids with their inner product (cosine), best first."""
        total = int(self._index.ntotal)
        if count <= 0 or len(self) <= 0:
            return []
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        fetch = min(total, count + min(len(self.removed), 4 * count))
        while True:
            scores, ids = self._index.search(query, fetch)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            live = [(i, s) for i, s in hits if i not in self.removed]
            if len(live) >= count or fetch >= total:
                return live[:count]
            fetch = min(total, fetch * 4)

    def save(self, folder: Path, meta: IndexMeta) -> IndexMeta:
        """Write the index under a fresh name, then point ``meta.json`` at it (atomic replace)."""
        folder.mkdir(parents=True, exist_ok=True)
        name = f"precedents-{uuid.uuid4().hex[:12]}.faiss"
        tmp = folder / f".{name}.tmp"
        _faiss().write_index(self._index, str(tmp))
        os.replace(tmp, folder / name)
        meta = meta.model_copy(update={"file": name, "count": len(self), "removed": sorted(self.removed)})
        tmp_meta = folder / f".{META_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        tmp_meta.write_text(meta.model_dump_json(indent=1), encoding="utf-8")
        os.replace(tmp_meta, folder / META_FILE)
        for old in folder.glob("precedents-*.faiss"):  # superseded states (a reader that lost one reloads)
            if old.name != name:
                old.unlink(missing_ok=True)
        return meta

    @classmethod
    def load(cls, folder: Path) -> tuple[VectorIndex, IndexMeta] | None:
        """The saved index and its meta, or None when absent, unreadable or of another format."""
        faiss = _faiss()
        for _attempt in range(2):  # a concurrent writer may replace the file between meta and load
            try:
                meta = IndexMeta.model_validate_json((folder / META_FILE).read_text(encoding="utf-8"))
            except (OSError, ValidationError, ValueError):
                return None
            if meta.format != FORMAT:
                return None
            try:
                index = faiss.read_index(str(folder / meta.file))
            except (OSError, RuntimeError, ValueError):
                continue
            if int(index.d) != meta.dim or not hasattr(index, "id_map"):
                return None
            return cls(meta.dim, meta.settings, index, meta.removed), meta
        return None


def anchor_of(sample_id: str, text: str, created_at: object) -> str:
    """A fingerprint of the row at the index's mark: a replaced store has another row (or none) there."""
    return content_hash(sample_id, text, str(created_at))[:16]


__all__ = ["INDEX_ENV", "AnnSettings", "IndexMeta", "VectorIndex", "anchor_of", "index_folder"]
