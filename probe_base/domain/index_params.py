"""The parameters of an element's reference index and its sizing: which kind (exact,
IVF-SQ, IVF-PQ) an element of n atoms gets, its cells, bytes and training sample, the
constants the index and its search are built with, and the recall against exact k-NN that
tunes its nprobe (``reference_index.ElementIndex.tune``).

Why IVF-SQ over IVF-PQ (``benchmarks/reference_scale/``, ``results/reference_scale*``;
features of the benchmark, 10^6 reference atoms, one shared core): the query of one MD step
is the scan of the probed cells' codes. IVF-PQ's table look-ups cost ~35 ns per code and its
recall stops at ~0.90 whatever nprobe (the codes' error); 8-bit residual scalar codes cost
~25 ns per code and keep the distances within ~1 % (recall@5 0.95-1.0), so fewer cells reach
the same recall. FAISS's SIMD fast-scan (``IVF...,PQ32x4fs(r)``, 4-bit codes, 2-7 ns per code)
found recall@5 0.43-0.53 on these features (a dense cloud of near neighbours that 16 levels
per sub-vector cannot order), 0.79 with a re-ranking of 16x the candidates by scalar codes of
the atoms (``Refine(SQ8)``: 90 bytes per atom, no faster: FAISS re-ranks by reconstructing
each candidate). The distances of either kind are approximate, which the conformal threshold
absorbs because calibration uses the same index.

Measured (``results/reference_scale.md``, one core, one fresh 140-atom query): 10^6 atoms,
IVF-SQ (tuned nprobe 6) 8.1 ms against IVF-PQ's 17 ms, recall@5 0.95 against 0.90; 10^7
atoms, the validation atoms (the benchmark's noisy replicas, harder than its held-out
queries) needed 64 cells to come within 0.01 of their best recall, 0.90: 22 ms against
IVF-PQ's 28 ms (held-out recall@5 0.96 against 0.90): the scan of the probed cells is ~all of
the time. An MD step does not search afresh: ``step_neighbours.StepNeighbours`` keeps each
atom's candidates across steps (4.0 ms a later step at 10^7, IVF-SQ).
"""

from __future__ import annotations

import math

import numpy as np

from probe_base.errors import ProbeError

EXACT_MAX_ATOMS = 50_000  # per element: exact at or below, IVF-SQ above
APPROXIMATE = "ivfsq"  # the approximate kind a new index gets (IVF-PQ: still built on request, and loaded)
APPROXIMATE_KINDS = ("ivfsq", "ivfpq")
RECALL_TARGET = 0.9  # auto nprobe: the fewest cells whose recall@RECALL_K on validation atoms reaches this
RECALL_K = 5
RECALL_PLATEAU = 0.01  # ... or, where no nprobe reaches it, within this of the best recall any nprobe reaches
VALIDATION_ATOMS = 256  # reference atoms per element the nprobe is tuned on (each with itself excluded)
NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
EF_SEARCH_MIN = 16
HNSW_QUANTIZER_CELLS = 1024  # from this many cells the centroids are searched by HNSW
TRAIN_PER_CELL = 32  # k-means training atoms per IVF cell (FAISS warns below 39: 32 is enough here)
TRAIN_MAX = 1 << 17  # at most this many training atoms per element
SCALE_SAMPLE = 50_000  # the element's scale from at most this many of its atoms (all of an exact one)
CHUNK_ATOMS = 1 << 18  # atoms read from a store at a time
SEARCH_ROWS = 4096  # queries per FAISS search call (bounds the result arrays)
SETTLE_NPROBE = 1  # cells of the first, bounding search of ``mean_distance(settle_below=...)``
UNSEEN = 1e6  # raw novelty of an atom no reference atom was found for


class ReferenceError(ProbeError, ValueError):
    """A reference index that cannot be built or loaded as asked."""


def _faiss():
    try:
        import faiss
    except ImportError:  # a core dependency; only a broken environment lacks it
        raise ReferenceError("the domain's reference index needs faiss-cpu: pip install 'faiss-cpu==1.15.1'") from None
    return faiss


# ---- parameters --------------------------------------------------------------------------
def index_params(n: int, n_features: int, exact_max_atoms=EXACT_MAX_ATOMS, nprobe=None, kind=APPROXIMATE) -> dict:
    """The index an element of ``n`` reference atoms gets: exact at or below
    ``exact_max_atoms``, else ``kind``: ``"ivfsq"`` (default: residual 8-bit scalar codes)
    or ``"ivfpq"`` (m = the largest divisor of the width up to min(64, width / 2) 8-bit
    sub-vectors), both with nlist ~ 2 sqrt(n) cells (a power of two, 64 to 16384) and
    ``nprobe`` cells scanned per query: given, or (``None``) for IVF-SQ the fewest that
    reach ``RECALL_TARGET`` on validation atoms of the reference (``ElementIndex.tune``),
    for IVF-PQ 16."""
    if n <= exact_max_atoms:
        return {"kind": "flat"}
    if kind not in APPROXIMATE_KINDS:
        raise ReferenceError(f"unknown approximate index kind {kind!r}; choose from {APPROXIMATE_KINDS}")
    nlist = int(min(16384, max(64, 2 ** round(math.log2(2 * math.sqrt(n))))))
    nlist = min(nlist, max(1, n // TRAIN_PER_CELL))
    if kind == "ivfsq":
        return {
            "kind": "ivfsq",
            "nlist": nlist,
            "nbits": 8,
            "nprobe": None if nprobe is None else int(nprobe),
            "hnsw_quantizer": nlist >= HNSW_QUANTIZER_CELLS,
        }
    m = max(d for d in range(1, max(1, min(64, n_features // 2)) + 1) if n_features % d == 0)
    return {
        "kind": "ivfpq",
        "nlist": nlist,
        "m": m,
        "nbits": 8,
        "nprobe": int(nprobe or 16),
        "hnsw_quantizer": nlist >= HNSW_QUANTIZER_CELLS,
    }


def bytes_per_atom(params: dict, n_features: int) -> int:
    """The index's bytes per atom: its code and its 8-byte id (exact: the features)."""
    if params["kind"] == "flat":
        return 4 * n_features
    return (n_features if params["kind"] == "ivfsq" else params["m"]) + 8


def training_size(params: dict, n: int) -> int:
    """Atoms an element's index is trained on (0: exact, nothing to train)."""
    if params["kind"] == "flat":
        return 0
    return int(min(n, TRAIN_MAX, TRAIN_PER_CELL * params["nlist"]))


def ef_search(params: dict) -> int:
    """HNSW candidate list over the cell centroids: at least 2 nprobe cells; IVF-SQ from 16
    (the tuned nprobe's recall is measured with it), IVF-PQ from 64 (as it was built)."""
    return max(EF_SEARCH_MIN if params["kind"] == "ivfsq" else 64, 2 * int(params["nprobe"] or 1))


def recall_excluding_self(found, truth, self_ids, k) -> float:
    """Mean recall@k of ``found`` (an index's labels, k + 1 per row) against ``truth`` (the
    exact k + 1 nearest), each row's own atom ``self_ids`` dropped first (else the last)."""
    total = 0
    for f, t, me in zip(np.asarray(found), np.asarray(truth), np.asarray(self_ids)):
        t = [i for i in t if i != me and i >= 0][:k]
        f = [i for i in f if i != me and i >= 0][:k]
        total += len(set(t) & set(f)) / max(len(t), 1)
    return total / max(len(self_ids), 1)


class ExactTruth:
    """The exact k + 1 nearest (labels, squared distances) of validation atoms among an
    element's reference atoms, merged chunk by chunk as the atoms stream into its index."""

    def __init__(self, queries, self_ids, k):
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.self_ids, self.take = np.asarray(self_ids, dtype=np.int64), int(k) + 1
        self.labels = np.full((len(self.queries), self.take), -1, dtype=np.int64)
        self.squared = np.full((len(self.queries), self.take), np.inf, dtype=np.float32)
        self.seen = 0

    def offer(self, points):
        """The next ``points`` of the element, in the order they enter its index."""
        points = np.ascontiguousarray(points, dtype=np.float32)
        if len(points) and len(self.queries):
            squared, labels = _faiss().knn(self.queries, points, min(self.take, len(points)))
            labels = np.where(labels >= 0, labels + self.seen, -1)
            d = np.concatenate([self.squared, squared], 1)
            i = np.concatenate([self.labels, labels], 1)
            order = np.argsort(d, axis=1, kind="stable")[:, : self.take]
            self.squared, self.labels = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
        self.seen += len(points)
