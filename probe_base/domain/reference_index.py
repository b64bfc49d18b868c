"""The domain's reference atoms per element as a FAISS index (``ElementIndex``): its build,
search, and serialisation to bytes.

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

The exact kind is stored as a FAISS ``IndexFlatL2`` (one file format for both kinds) and
searched with ``ExactNeighbors``: the same vectors, the same numbers as before this index
(one core, 64 features: 100 queries against 3-50 k atoms or 1000 against 21 k, 2-3x faster
than ``IndexFlatL2.search``; 2000 against 50 k, 1.25x slower; distances equal within 4e-7).

Each index is serialised (``faiss.serialize_index``: FAISS's own binary format, no pickle)
into a uint8 array with its sha256; loading checks the hash, the kind and the sizes first.

The parameters and sizing of an index, and why IVF-SQ: ``index_params.py``; the
``.reference`` file: ``reference_file.py``; the streaming build of a reference from feature
stores (resumable): ``reference_build.py``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from probe_base.domain.index_params import (
    CHUNK_ATOMS,
    NPROBE_LADDER,
    RECALL_K,
    RECALL_PLATEAU,
    RECALL_TARGET,
    SEARCH_ROWS,
    SETTLE_NPROBE,
    TRAIN_MAX,
    UNSEEN,
    VALIDATION_ATOMS,
    ExactTruth,
    ReferenceError,
    _faiss,
    bytes_per_atom,
    ef_search,
    recall_excluding_self,
    training_size,
)
from probe_base.domain.neighbours import ExactNeighbors


# ---- one element's index -----------------------------------------------------------------
class ElementIndex:
    """One element's reference atoms: ``mean_distance`` (what novelty needs), ``len``,
    ``points`` (exact only: what one structure's search in an MD step concatenates),
    ``state`` / ``from_state`` (uint8 bytes + JSON, hash-checked)."""

    def __init__(self, params: dict, n_features: int, exact=None, index=None):
        self.params, self.n_features = dict(params), int(n_features)
        self.exact, self.index = exact, index
        self._points = None
        self._centroids = None  # the cells' centroids in an exact index (batch searches)
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
        cheap = self._searched_mean(queries, k, False, nprobe=SETTLE_NPROBE, complete=True, exact_cells=True)
        rest = np.flatnonzero(~(cheap <= settle_below))
        if len(rest):
            cheap[rest] = self._searched_mean(queries[rest], k, False)
        return cheap

    def _searched_mean(self, queries, k, exclude_nearest, nprobe=None, complete=False, exact_cells=False):
        """The mean distance to the k nearest codes FAISS finds (``nprobe``: this many cells
        instead of the tuned number; ``complete``: a query with fewer than k found is +inf;
        ``exact_cells``: the cells found by ``_search_exact_cells``, not the quantizer)."""
        faiss = _faiss()
        take = min(k + int(exclude_nearest), len(self))
        params = None if nprobe is None else faiss.SearchParametersIVF(nprobe=int(nprobe))
        out = np.empty(len(queries))
        for start in range(0, len(queries), SEARCH_ROWS):
            chunk = queries[start : start + SEARCH_ROWS]
            if exact_cells:
                squared, labels = self._search_exact_cells(chunk, take, int(nprobe or self.params["nprobe"]))
            else:
                squared, labels = self.index.search(chunk, take, params=params)
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

    def _search_exact_cells(self, queries, take, cells):
        """FAISS's IVF search in each query's ``cells`` truly nearest cells, the centroids
        searched exactly (one matrix product): for the one-cell bounding search of a batch, 8x
        cheaper per atom than the HNSW quantizer (made for the few atoms of an MD step). Not
        for the tuned search: the truly nearest 24 cells hold more atoms than the graph's
        and cost more to scan (and the MD step's search is the graph's)."""
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(self.index)
        if self._centroids is None:
            self._centroids = faiss.IndexFlatL2(ivf.d)
            self._centroids.add(ivf.quantizer.reconstruct_n(0, ivf.nlist))
        cells = min(cells, ivf.nlist)
        centroid_squared, nearest_cells = self._centroids.search(queries, cells)
        squared = np.empty((len(queries), take), dtype=np.float32)
        labels = np.empty((len(queries), take), dtype=np.int64)
        # the C++ call: the Python wrapper takes no SearchParameters (its nprobe: ``cells``)
        ivf.search_preassigned_c(
            len(queries),
            faiss.swig_ptr(queries),
            take,
            faiss.swig_ptr(nearest_cells),
            faiss.swig_ptr(centroid_squared),
            faiss.swig_ptr(squared),
            faiss.swig_ptr(labels),
            False,
            faiss.SearchParametersIVF(nprobe=cells),
        )
        return squared, labels

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
