"""The domain's reference atoms per element as a FAISS index, and the streaming build of a
reference from one or many feature stores.

Per element, the reference is exact below ``EXACT_MAX_ATOMS`` atoms and approximate
above: an inverted file (a k-means coarse quantiser of ``nlist`` cells, an HNSW graph over
the cell centroids above ``HNSW_QUANTIZER_CELLS`` cells) scanning ``nprobe`` cells per
query, of one of two kinds:

* ``ivfsq`` (new indexes): each atom's residual to its cell's centroid in 8 bits per
  feature (FAISS ``IndexIVFScalarQuantizer``, by residual): ``n_features + 8`` bytes per
  atom (72 at 64 features, exact: 256). ``nprobe`` is tuned per element at build time:
  the fewest cells of ``NPROBE_LADDER`` whose recall@5 against exact k-NN reaches
  ``RECALL_TARGET`` on ``VALIDATION_ATOMS`` sampled reference atoms (each queried with
  itself excluded; their exact neighbours are found as the atoms stream into the index),
  or, where the codes cap the recall below it, comes within ``RECALL_PLATEAU`` of the best.
* ``ivfpq`` (the earlier kind, still loaded and built on request): 8-bit codes of ``m``
  sub-vectors (FAISS ``IndexIVFPQ``), ``m + 8`` bytes per atom, ``nprobe`` 16.

Why FAISS: the maintained library (Meta; PyPI and conda-forge wheels; serialisation to
bytes without pickle) with exact and compressed indexes behind one interface. An HNSW graph
over the atoms (FAISS ``IndexHNSWFlat`` M=32, 10^5 atoms of 64 features) answered 2x faster
than IVF-PQ with recall@5 0.99 against 0.84, but kept 528 bytes per atom (5 GB at 10^7) and
is built atom by atom; an IVF index trains on a sample and adds atoms in chunks.

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

The exact kind is stored as a FAISS ``IndexFlatL2`` (one file format for both kinds) and
searched with ``ExactNeighbors``: the same vectors, the same numbers as before this index
(one core, 64 features: 100 queries against 3-50 k atoms or 1000 against 21 k, 2-3x faster
than ``IndexFlatL2.search``; 2000 against 50 k, 1.25x slower; distances equal within 4e-7).

Each index is serialised (``faiss.serialize_index``: FAISS's own binary format, no pickle)
into a uint8 array with its sha256; loading checks the hash, the kind and the sizes first.

The streaming build of a reference from feature stores (resumable): ``reference_build.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from probe_base.domain.neighbours import ExactNeighbors
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
FORMAT = "mlip-probe-reference/1"
METADATA_KEY = "mlip_probe_reference"


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


# ---- one element's index -----------------------------------------------------------------
class ElementIndex:
    """One element's reference atoms: ``mean_distance`` (what novelty needs), ``len``,
    ``points`` (exact only: what one structure's search in an MD step concatenates),
    ``state`` / ``from_state`` (uint8 bytes + JSON, hash-checked)."""

    def __init__(self, params: dict, n_features: int, exact=None, index=None):
        self.params, self.n_features = dict(params), int(n_features)
        self.exact, self.index = exact, index
        self._points = None
        if index is not None:
            self._set_search_parameters()

    @property
    def kind(self) -> str:
        return self.params["kind"]

    @classmethod
    def flat(cls, points) -> ElementIndex:
        points = np.ascontiguousarray(points, dtype=np.float32)
        return cls({"kind": "flat"}, points.shape[1], exact=ExactNeighbors(points))

    @classmethod
    def trained(cls, params: dict, training_points) -> ElementIndex:
        """An empty IVF-SQ / IVF-PQ index trained on ``training_points`` (standardised)."""
        faiss = _faiss()
        training_points = np.ascontiguousarray(training_points, dtype=np.float32)
        d = training_points.shape[1]
        quantizer = "_HNSW32" if params["hnsw_quantizer"] else ""
        # IVF-SQ: each atom's residual to its cell's centroid, 8 bits per feature (FAISS's
        # IndexIVFScalarQuantizer, by_residual); IVF-PQ: the residual's m 8-bit sub-codes
        codes = "SQ8" if params["kind"] == "ivfsq" else f"PQ{params['m']}x{params['nbits']}"
        index = faiss.index_factory(d, f"IVF{params['nlist']}{quantizer},{codes}")
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # owned by index
        ivf.cp.niter = 10  # k-means: 10 iterations move the novelty by < 0.1 % (25 is FAISS's default)
        ivf.cp.seed = int(params.get("seed", 1234))
        ivf.cp.max_points_per_centroid = TRAIN_MAX  # the sample is already drawn: no resampling
        if params["kind"] == "ivfpq":
            # polysemous training (FAISS's default) reorders codes for Hamming pre-filtering,
            # which this search does not use; it is 90 % of the training time
            ivf.do_polysemous_training = False
            ivf.pq.cp.niter = 10
        index.train(training_points)
        return cls(params, d, index=index)

    @classmethod
    def build(cls, points, params: dict, seed=0, chunk=CHUNK_ATOMS) -> ElementIndex:
        """The index of ``points`` (standardised, in memory): exact, or IVF trained on a
        seeded sample, filled in chunks, its nprobe tuned on validation atoms if not given."""
        if params["kind"] == "flat":
            return cls.flat(points)
        points = np.ascontiguousarray(points, dtype=np.float32)
        rng = np.random.default_rng(seed)
        take = training_size(params, len(points))
        sample = points[np.sort(rng.choice(len(points), take, replace=False))] if take < len(points) else points
        out = cls.trained(params, sample)
        for start in range(0, len(points), chunk):
            out.add(points[start : start + chunk])
        if out.params["nprobe"] is None:
            rows = np.sort(
                np.random.default_rng([seed, 3]).choice(len(points), min(VALIDATION_ATOMS, len(points)), replace=False)
            )
            truth = ExactTruth(points[rows], rows, RECALL_K)
            for start in range(0, len(points), chunk):
                truth.offer(points[start : start + chunk])
            out.tune(truth)
        return out

    def tune(self, truth: ExactTruth, target=RECALL_TARGET):
        """Set nprobe to the fewest cells of ``NPROBE_LADDER`` whose recall@k on the
        validation atoms of ``truth`` (reference atoms, each with itself excluded) reaches
        ``target``, or, where the codes cap the recall below it (more cells stop helping),
        comes within ``RECALL_PLATEAU`` of the best any nprobe reaches; recorded in the
        params with the recall measured and the best."""
        k = truth.take - 1
        measured = []
        for nprobe in [p for p in NPROBE_LADDER if p <= self.params["nlist"]]:
            self.params["nprobe"] = nprobe
            self._set_search_parameters()
            found = self.index.search(truth.queries, min(truth.take, len(self)))[1]
            measured.append((nprobe, recall_excluding_self(found, truth.labels, truth.self_ids, k)))
            if measured[-1][1] >= target:
                break
        best = max(r for _, r in measured)
        reach = target if best >= target else best - RECALL_PLATEAU
        nprobe, recall = next((p, r) for p, r in measured if r >= reach)
        self.params.update(
            nprobe=int(nprobe),
            validation_recall=float(recall),
            validation_recall_best=float(best),
            validation_atoms=len(truth.queries),
        )
        self._set_search_parameters()
        return self

    def _set_search_parameters(self):
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = int(self.params["nprobe"] or 1)  # None: not tuned yet (being filled)
        if self.params.get("hnsw_quantizer"):
            # the centroid graph must return at least nprobe cells
            faiss.downcast_index(ivf.quantizer).hnsw.efSearch = ef_search(self.params)

    def add(self, points):
        self.index.add(np.ascontiguousarray(points, dtype=np.float32))

    def __len__(self):
        return len(self.exact) if self.exact is not None else int(self.index.ntotal)

    @property
    def points(self) -> np.ndarray:
        if self.exact is None:
            raise ReferenceError(f"an approximate ({self.kind}) reference keeps codes, not its atoms' features")
        return self.exact.points

    def nbytes(self) -> int:
        return len(self) * bytes_per_atom(self.params, self.n_features)

    def cells(self, points) -> np.ndarray:
        """The IVF cell of each point (approximate kinds only)."""
        ivf = _faiss().extract_index_ivf(self.index)
        return ivf.quantizer.search(np.ascontiguousarray(points, dtype=np.float32), 1)[1][:, 0]

    def candidates(self, queries, take, nprobe=None) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances (n, take), features (n, take, n_features)) of each query's
        ``take`` nearest reference atoms, as the search sees them: exact, all atoms; IVF, the
        decoded codes in the probed cells (``nprobe``: this many instead of the tuned number;
        cells short of atoms: the missing ones +inf)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.exact is not None:
            squared = self.exact.squared_distances(queries)
            labels = np.argpartition(squared, take - 1, axis=1)[:, :take] if take < len(self) else None
            if labels is None:
                labels = np.broadcast_to(np.arange(len(self)), squared.shape)
            if self._points is None:
                self._points = self.exact.points  # one copy, kept: an MD step re-searches a few atoms
            return np.take_along_axis(squared, labels, axis=1), self._points[labels]
        params = None if nprobe is None else _faiss().SearchParametersIVF(nprobe=int(nprobe))
        squared, labels, decoded = self.index.search_and_reconstruct(queries, take, params=params)
        missing = labels < 0
        decoded[missing], squared[missing] = np.inf, np.inf
        return squared, decoded

    def mean_distance(self, queries, k, exclude_nearest=False, settle_below=None) -> np.ndarray:
        """Mean distance of each query to its k nearest reference atoms (``exclude_nearest``:
        the nearest is dropped first, the query itself when it is in the reference).
        IVF-SQ / IVF-PQ: distances to the atoms' decoded codes in the ``nprobe`` nearest cells; a
        query whose cells hold fewer than k atoms averages those found (none: UNSEEN).

        ``settle_below`` (approximate kinds): every query is first searched in its nearest
        ``SETTLE_NPROBE`` cell(s) only; where that finds k atoms whose mean distance is at
        most ``settle_below``, that mean, an upper bound of the exact k-NN mean (they are
        reference atoms), is the answer, and only the other queries get the full search.
        The domain passes a share of its threshold, so no decision changes and a query deep
        inside the reference costs one cell instead of ``nprobe``."""
        if self.exact is not None:
            return self.exact.mean_distance(queries, k, exclude_nearest)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if settle_below is None or exclude_nearest or self.params["nprobe"] <= SETTLE_NPROBE:
            return self._searched_mean(queries, k, exclude_nearest)
        cheap = self._searched_mean(queries, k, False, nprobe=SETTLE_NPROBE, complete=True)
        rest = np.flatnonzero(~(cheap <= settle_below))
        if len(rest):
            cheap[rest] = self._searched_mean(queries[rest], k, False)
        return cheap

    def _searched_mean(self, queries, k, exclude_nearest, nprobe=None, complete=False) -> np.ndarray:
        """The mean distance to the k nearest codes FAISS finds (``nprobe``: this many cells
        instead of the tuned number; ``complete``: a query with fewer than k found is +inf)."""
        faiss = _faiss()
        take = min(k + int(exclude_nearest), len(self))
        params = None if nprobe is None else faiss.SearchParametersIVF(nprobe=int(nprobe))
        out = np.empty(len(queries))
        for start in range(0, len(queries), SEARCH_ROWS):
            squared, labels = self.index.search(queries[start : start + SEARCH_ROWS], take, params=params)
            distance = np.where(labels >= 0, np.sqrt(np.maximum(squared, 0.0)), np.nan)
            if exclude_nearest:
                distance = distance[:, 1:]
            found = np.isfinite(distance).sum(1)
            total = np.nansum(distance, axis=1)
            mean = np.where(found > 0, total / np.maximum(found, 1), UNSEEN)
            if complete:
                mean[found < distance.shape[1]] = np.inf
            out[start : start + len(distance)] = mean
        return out

    # ---- persistence ---------------------------------------------------------------------
    def state(self) -> tuple[np.ndarray, dict]:
        """(uint8 bytes of the FAISS index, JSON meta with its sha256)."""
        faiss = _faiss()
        if self.exact is not None:
            index = faiss.IndexFlatL2(self.n_features)
            index.add(self.exact.points)
        else:
            index = self.index
        data = np.ascontiguousarray(faiss.serialize_index(index), dtype=np.uint8)
        meta = {**self.params, "n": len(self), "n_features": self.n_features}
        meta["sha256"] = hashlib.sha256(data.tobytes()).hexdigest()
        return data, meta

    @classmethod
    def from_state(cls, data, meta: dict, where="reference index") -> ElementIndex:
        """Refuses (one-line ValueError) bytes whose sha256 is not the recorded one, and an
        index of another kind or size than its meta says; FAISS reads only verified bytes."""
        faiss = _faiss()
        data = np.ascontiguousarray(np.asarray(data).reshape(-1), dtype=np.uint8)
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        if digest != meta.get("sha256"):
            raise ReferenceError(f"{where}: its bytes do not match the recorded sha256 (damaged or replaced)")
        try:
            raw = faiss.deserialize_index(data)
            index = faiss.downcast_index(raw)
            index.this.own(raw.this.own())  # the downcast proxy owns the index, not the temporary
            raw.this.disown()
        except RuntimeError as exc:
            raise ReferenceError(f"{where}: FAISS cannot read it ({str(exc).splitlines()[0]})") from None
        n, d, kind = int(meta["n"]), int(meta["n_features"]), meta["kind"]
        want = {"flat": faiss.IndexFlatL2, "ivfpq": faiss.IndexIVFPQ, "ivfsq": faiss.IndexIVFScalarQuantizer}.get(kind)
        if want is None:
            raise ReferenceError(f"{where}: unknown index kind {kind!r} (written by a newer mlip-probe?)")
        if not isinstance(index, want) or index.d != d or index.ntotal != n:
            raise ReferenceError(
                f"{where}: holds a {type(index).__name__} of {index.ntotal} atoms x {index.d} features, "
                f"its metadata a {kind} index of {n} x {d}"
            )
        params = {key: meta[key] for key in meta if key not in ("n", "n_features", "sha256")}
        if kind == "flat":
            points = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d).copy()
            return cls(params, d, exact=ExactNeighbors(points))
        return cls(params, d, index=index)


def element_scale(index: ElementIndex, points, k: int) -> float:
    """The element's typical nearest-neighbour distance among its own reference atoms
    (self excluded), from ``points`` (reference atoms): divides raw distances so that
    elements are comparable."""
    if len(index) < 2 or len(points) == 0:
        return 1.0
    scale = float(np.median(index.mean_distance(points, min(k, len(index) - 1), exclude_nearest=True)))
    return scale if scale > 0 else 1.0


class BuiltReference:
    """A domain reference built by ``build_reference``: standardisation, per-element
    indexes and scales, the structure scalars' ranges; ``DomainModel.fit`` takes it (with
    calibration structures) in place of a FeatureSet. ``save`` / ``load``: a
    ``.reference`` file (safetensors + JSON, hash-checked, never unpickled)."""

    def __init__(self, mean, std, indexes, scales, ranges, n_neighbors, info):
        self.mean_, self.std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.indexes, self.scales, self.ranges = indexes, scales, ranges
        self.n_neighbors, self.info = int(n_neighbors), info

    @property
    def n_features(self) -> int:
        return len(self.mean_)

    def summary(self) -> str:
        parts = [
            f"Z={z}: {len(ix)} atoms {ix.kind} ({ix.nbytes() / 1e6:.1f} MB)" for z, ix in sorted(self.indexes.items())
        ]
        return "reference: " + ", ".join(parts)

    def save(self, path):
        from safetensors.numpy import save_file

        from probe_base.io.paths import atomic_write

        arrays, index_meta = {"mean": self.mean_, "std": self.std_}, {}
        for z, index in self.indexes.items():
            arrays[f"index.{z}"], index_meta[str(z)] = index.state()
        meta = {
            "format": FORMAT,
            "n_neighbors": self.n_neighbors,
            "indexes": index_meta,
            "scale": {str(z): s for z, s in self.scales.items()},
            "ranges": {name: list(r) for name, r in self.ranges.items()},
            "info": self.info,
        }
        atomic_write(Path(path), lambda tmp: save_file(arrays, str(tmp), metadata={METADATA_KEY: json.dumps(meta)}))

    @classmethod
    def load(cls, path) -> BuiltReference:
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise ReferenceError(f"{path}: reference file not found; build one with `probe reference build`")
        try:
            with safe_open(str(path), framework="np") as handle:
                meta = json.loads((handle.metadata() or {})[METADATA_KEY])
            arrays = load_file(str(path))
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise ReferenceError(
                f"{path}: not a valid .reference file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "re-create it with `probe reference build`"
            ) from None
        if meta.get("format") != FORMAT:
            raise ReferenceError(f"{path}: unsupported reference format {meta.get('format')!r}; expected {FORMAT}")
        try:
            indexes = {
                int(z): ElementIndex.from_state(arrays[f"index.{z}"], m, f"{path}: index of Z={z}")
                for z, m in meta["indexes"].items()
            }
        except ReferenceError as exc:
            raise ReferenceError(f"{exc}; re-create it with `probe reference build`") from None
        except KeyError as exc:
            raise ReferenceError(f"{path}: lacks {exc}; re-create it with `probe reference build`") from None
        return cls(
            arrays["mean"],
            arrays["std"],
            indexes,
            {int(z): float(s) for z, s in meta["scale"].items()},
            {name: tuple(r) for name, r in meta["ranges"].items()},
            meta["n_neighbors"],
            meta.get("info", {}),
        )


def is_reference_file(path) -> bool:
    """Whether ``path`` is a ``.reference`` file (its header says so), not a feature store."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            return METADATA_KEY in (handle.metadata() or {})
    except Exception:  # not safetensors at all (an HDF5 store, a folder, nothing)
        return False


def load_built_reference(path, fingerprint: dict, fit_store="") -> BuiltReference:
    """A ``.reference`` file for ``probe fit``, refused if built from another backbone's or
    other layers' features than the fitting store's."""
    from probe_base.errors import FingerprintMismatch

    built = BuiltReference.load(path)
    mine = built.info.get("fingerprint") or {}
    key = ("adapter", "weights_sha256", "layers", "widths")
    if tuple(mine.get(k) for k in key) != tuple(fingerprint.get(k) for k in key):
        raise FingerprintMismatch(
            f"{path}: this reference was built from features of another backbone or other layers "
            f"({mine.get('adapter')} {mine.get('layers')}) than {fit_store} ({fingerprint.get('adapter')} "
            f"{fingerprint.get('layers')}): build it from stores extracted with the same --adapter, --model and --layers"
        )
    return built
