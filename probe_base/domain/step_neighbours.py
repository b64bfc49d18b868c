"""The k-NN of one structure's atoms in an approximate reference index across MD steps,
without a FAISS search per atom per step.

Between two MD steps an atom's features move a little. ``StepNeighbours`` keeps, per atom,
the ``candidates`` nearest reference atoms (decoded codes) that FAISS found at an anchor
point ``a``, and ``r``, the distance from ``a`` to the farthest of them. At a new point
``q`` with ``|q - a| = m``, every atom the anchor's search ranked beyond the candidates is
at least ``r - m`` from ``q`` (triangle inequality). So where the k-th nearest candidate is
within ``r - m`` of ``q``, the k nearest candidates are the k nearest of everything that
search saw, and their distances are computed directly (one small product per atom).
Elsewhere the atom is searched again and re-anchored, unless its kept mean distance, an
upper bound of the true one (the candidates are reference atoms), is at most ``keep_below``
(the domain passes half its threshold): that atom is inside the domain either way and
reports the bound (at most 0.5 in threshold units). A proven cached answer is the
exact k-NN among the atoms the anchor's probed cells hold, where a fresh search would use
``q``'s probed cells: the same kind of approximation, never a guess from a stale answer
(``tests/test_step_neighbours.py``: with every cell probed both are equal at every step).

Measured (``python -m benchmarks reference-scale``, results/reference_scale.md; 100 steps of
a 140-atom in-distribution structure, one thread): against 10^7 reference atoms (IVF-SQ) a
later step's domain query takes 4.0 ms instead of 25 ms with a fresh search (0.72 % of a
SevenNet-0 step at 99 atoms), 0.1 % of the atoms searched with the tuned nprobe and 5.3 % with
one cell per step, the atoms' decision the same as a fresh search's at every step; the first
step 37 ms. 10^6: 2.4 ms instead of 7.0 ms.
"""

from __future__ import annotations

import numpy as np

from probe_base.domain.index_params import SEARCH_ROWS, SETTLE_NPROBE, UNSEEN

CANDIDATES = 64  # decoded reference atoms kept per query atom (a fresh search costs the same for 5 or 64)


class StepNeighbours:
    """``mean_distance(queries, k)`` of one element's atoms of one structure, the rows in the
    same order every step (``ElementIndex.mean_distance``'s numbers, see the module doc)."""

    def __init__(self, index, candidates=CANDIDATES, keep_below=0.0):
        self.index = index
        self.keep_below = float(keep_below)  # an unproven kept mean distance at most this needs no search
        self.take = int(min(candidates, len(index)))
        self.anchor = None  # (atoms, features) where each atom's candidates were found
        self.points = None  # (atoms, take, features) the candidates' decoded features
        self.radius = None  # (atoms,) distance from the anchor to its farthest candidate
        self.steps = 0
        self.searched = 0  # atom searches so far (the tuned one), the first step's included
        self.settle_searched = 0  # ... and bounding searches of SETTLE_NPROBE cells

    def __len__(self):
        return len(self.index)

    @property
    def kind(self) -> str:
        return self.index.kind

    def mean_distance(self, queries, k, exclude_nearest=False) -> np.ndarray:
        if exclude_nearest:
            raise ValueError("StepNeighbours serves MD steps; a reference atom's own novelty needs ElementIndex")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(min(k, self.take))
        self.steps += 1
        if self.anchor is None or self.anchor.shape != queries.shape:
            n, d = queries.shape
            self.anchor = np.zeros((n, d), np.float32)
            self.points = np.zeros((n, self.take, d), np.float32)
            self.radius = np.zeros(n)
            self.full = np.zeros(n, bool)  # candidates from the tuned search (else a bounding one)
            self._research(queries, np.arange(n), k)
        nearest = self._nearest(queries, np.arange(len(queries)), k)
        moved = np.linalg.norm(queries - self.anchor, axis=1)
        # the k-th candidate provably nearer than every atom beyond the candidates
        proven = self.full & (nearest.max(1) + moved <= self.radius)
        # unproven, yet the kept mean is an upper bound of the true one (the candidates are
        # reference atoms): far enough inside the domain, it cannot change the decision
        harmless = nearest.mean(1) <= self.keep_below
        stale = np.flatnonzero(~(proven | harmless))
        if len(stale):
            nearest[stale] = self._research(queries[stale], stale, k)
        found = np.isfinite(nearest)
        out = np.where(found, nearest, 0.0).sum(1) / np.maximum(found.sum(1), 1)
        return np.where(found.any(1), out, UNSEEN)

    def _nearest(self, queries, rows, k) -> np.ndarray:
        """The k smallest distances of each query to its row's candidates (inf: none there)."""
        diff = self.points[rows] - queries[:, None, :]
        squared = np.einsum("nkd,nkd->nk", diff, diff)
        return np.sqrt(np.partition(squared, k - 1, axis=1)[:, :k])

    def _research(self, queries, rows, k) -> np.ndarray:
        """New candidates for ``rows``: first from the nearest ``SETTLE_NPROBE`` cell(s), kept
        where their k-NN mean is at most ``keep_below`` (a bound: no proof from them later);
        the tuned search for the others. Returns the rows' k nearest candidate distances."""
        rows = np.asarray(rows)
        approximate = self.index.kind != "flat" and self.index.params["nprobe"] > SETTLE_NPROBE
        if approximate and self.keep_below > 0:
            self._search(queries, rows, nprobe=SETTLE_NPROBE)
            nearest = self._nearest(queries, rows, k)
            settled = np.isfinite(nearest).all(1) & (nearest.mean(1) <= self.keep_below)
            self.full[rows[settled]] = False
            rest = ~settled
        else:
            nearest, rest = np.empty((len(rows), k)), np.ones(len(rows), bool)
        if rest.any():
            self._search(queries[rest], rows[rest])
            self.full[rows[rest]] = True
            nearest[rest] = self._nearest(queries[rest], rows[rest], k)
        return nearest

    def _search(self, queries, rows, nprobe=None):
        """Fresh candidates (``ElementIndex.candidates``) for ``rows``, anchored at ``queries``."""
        for start in range(0, len(rows), SEARCH_ROWS):
            part, q = rows[start : start + SEARCH_ROWS], queries[start : start + SEARCH_ROWS]
            squared, decoded = self.index.candidates(q, self.take, nprobe=nprobe)
            self.points[part], self.anchor[part] = decoded, q
            # a cell short of candidates: the radius that of the found ones
            far = np.where(np.isfinite(squared), squared, -np.inf).max(1)
            self.radius[part] = np.sqrt(np.maximum(far, 0.0))
        self.searched += len(rows) if nprobe is None else 0
        self.settle_searched += len(rows) if nprobe is not None else 0
