"""The backbone's domain: where in its own feature space it has seen atoms before.

Per-atom novelty = mean distance of an atom's standardised backbone features to its k
nearest reference atoms *of the same element* (per element a FAISS index,
``probe_base.domain.reference_index``: exact Euclidean k-NN up to ``exact_max_atoms`` reference
atoms, IVF-SQ above), divided by that element's typical reference distance. Structure novelty = the largest per-atom
novelty, so one odd atom (a bond pulled apart, a fragment's dangling end) is enough.

The reference atoms come from the backbone's training set (``probe fit --reference``) or,
without one, from the probe's fitting set. The threshold is split-conformal on
in-distribution structures that are not in the reference (``domain/conformal.py``).
Novelties are reported divided by that threshold: > 1 means outside the domain.

Structure-level scalars count too: how far a structure's predicted energy per atom, or (for
total-energy labels) its atom count, lies beyond the reference set's range, in units of
that range's width (one atom for counts), times ``SCALAR_WEIGHT``, competes with the atom
novelty in the same structure score. A dimer of the training molecule (twice the atoms) or
another composition is far outside; a structure just past the range's edge is not. One
conformal threshold on that score, so alpha bounds both together.

The calibration novelties are computed by the same indexes that score, so with an
approximate index the threshold is the conformal quantile of the approximate novelty: the
false-alarm bound holds for what is actually computed.

Memory: an exact element keeps ``4 * n_features`` bytes per atom (50 000 atoms x 256
features = 51 MB), an IVF-SQ one ``n_features + 8`` (``index_params``); the same goes into the
``.probe`` file, each index as FAISS's serialised bytes with its sha256. Optionally at most
``max_reference_atoms`` atoms per element (a random subsample). Time per scored atom: exact,
one matrix-vector product with its element's reference (a 9-atom step against 3 000
reference atoms per element: ~0.1 ms); IVF-SQ / IVF-PQ, ``nprobe`` cells' codes.

Beside it in ``domain/``: ``one_structure_search.py`` (an MD step's search), ``novelty.py``
(the numeric helpers), ``state.py`` (the ``.probe`` file's arrays).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from probe_base.decision import DEFAULT_ALPHA
from probe_base.domain.conformal import DomainError, conformal_threshold
from probe_base.domain.index_params import EXACT_MAX_ATOMS, SCALE_SAMPLE, index_params
from probe_base.domain.novelty import (
    SCALARS,
    atom_novelty,
    atoms_of,
    range_excess,
    scalar_values,
    standardise,
    structure_novelty,
)
from probe_base.domain.one_structure_search import OneStructureSearch
from probe_base.domain.reference_file import BuiltReference
from probe_base.domain.reference_index import ElementIndex, element_scale
from probe_base.domain.state import domain_from_state, domain_state
from probe_base.domain.step_neighbours import StepNeighbours

# one range width beyond the reference's range weighs as much as this many typical
# nearest-neighbour distances (ID structures lie within ~0.05 widths of the range)
SCALAR_WEIGHT = 20.0
# scoring: an atom whose novelty is bounded (by a one-cell search, or by the candidates an MD
# step kept) at most this share of the threshold reports that bound, searched no further; it
# is inside the domain whatever the full search would find, so no decision changes
SETTLED_SHARE = 0.5


class DomainModel(BaseEstimator):
    """Per-element reference atoms in the backbone's feature space and a conformal
    threshold on the structure novelty. ``fit`` then ``novelty``."""

    def __init__(
        self,
        n_neighbors=5,
        max_reference_atoms=None,
        alpha=DEFAULT_ALPHA,
        calibration_folds=5,
        scalars=SCALARS,
        seed=0,
        exact_max_atoms=EXACT_MAX_ATOMS,
        nprobe=None,
        scalar_weight=SCALAR_WEIGHT,
    ):
        self.n_neighbors = n_neighbors
        self.scalar_weight = scalar_weight
        self.max_reference_atoms = max_reference_atoms
        self.exact_max_atoms = exact_max_atoms
        self.nprobe = nprobe
        self.alpha = alpha
        self.calibration_folds = calibration_folds
        self.scalars = scalars
        self.seed = seed

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, reference, calibration=None):
        """``reference``: a FeatureSet of in-domain structures (the backbone's training
        set), or a ``BuiltReference`` (``build_reference``: streamed from stores, calibration
        then required). ``calibration``: in-distribution structures *not* in ``reference``
        for the conformal threshold. Without it, the reference itself calibrates by
        cross-fitting (each fold's novelty against the other folds' atoms)."""
        if not 0.0 < self.alpha < 1.0:
            raise DomainError(f"alpha must lie in (0, 1), not {self.alpha!r} (e.g. --alpha 0.02)")
        if isinstance(reference, BuiltReference):
            return self._fit_built(reference, calibration)
        if len(reference) == 0:
            raise DomainError("the domain's reference set has no structures")
        feats = np.asarray(reference.features, dtype=np.float32)
        self.n_features_in_ = feats.shape[1]
        self.mean_ = feats.mean(0)
        self.std_ = feats.std(0) + 1e-6
        if calibration is None:
            scores = self._cross_fitted_scores(reference)
        else:
            self._fit_reference(reference)
            scores = self._raw_structure_novelty(calibration)[0]
        self.n_calibration_ = int(len(scores))
        self.threshold_ = conformal_threshold(scores, self.alpha)
        self.calibration_scores_ = np.sort(scores).astype(np.float64)
        return self

    def _fit_built(self, built, calibration):
        """Adopt a streamed build's indexes; calibrate on ``calibration`` with them."""
        if calibration is None:
            raise DomainError(
                "a built reference needs in-distribution calibration structures not in it "
                "(the fitting set: `probe fit --store FIT.h5 --reference TRAIN.reference`)"
            )
        if built.n_neighbors != self.n_neighbors:
            raise DomainError(
                f"the reference was built with n_neighbors = {built.n_neighbors}, this domain model "
                f"uses {self.n_neighbors}: rebuild it with `probe reference build --neighbors {self.n_neighbors}`"
            )
        self.n_features_in_ = built.n_features
        self.mean_, self.std_ = built.mean_, built.std_
        self.ranges_ = {name: tuple(built.ranges[name]) for name in self.scalars}
        self.elements_ = np.array(sorted(built.indexes), dtype=np.int64)
        self.reference_ = {int(z): index for z, index in built.indexes.items()}
        self.scale_ = {int(z): float(s) for z, s in built.scales.items()}
        scores = self._raw_structure_novelty(calibration)[0]
        self.n_calibration_ = int(len(scores))
        self.threshold_ = conformal_threshold(scores, self.alpha)
        self.calibration_scores_ = np.sort(scores).astype(np.float64)
        return self

    def _index_params(self, n):
        return index_params(n, self.n_features_in_, self.exact_max_atoms, self.nprobe)

    def _fit_reference(self, reference, rows=None):
        """Keep at most ``max_reference_atoms`` atoms per element (``rows``: structure
        indices to use) and the per-element distance scale."""
        rng = np.random.default_rng(self.seed)
        structures = np.arange(len(reference)) if rows is None else np.asarray(rows)
        values = self._scalar_values(reference)
        self.ranges_ = {name: (float(v[structures].min()), float(v[structures].max())) for name, v in values.items()}
        z_all = np.asarray(reference.atomic_numbers)
        atom_rows = np.arange(len(z_all)) if rows is None else atoms_of(reference, rows)
        self.elements_ = np.unique(z_all[atom_rows]).astype(np.int64)
        self.reference_, self.scale_ = {}, {}
        for z in self.elements_:
            mine = atom_rows[z_all[atom_rows] == z]
            if self.max_reference_atoms is not None and len(mine) > self.max_reference_atoms:
                mine = np.sort(rng.choice(mine, self.max_reference_atoms, replace=False))
            points = self._standardise(reference.features[mine])
            index = ElementIndex.build(points, self._index_params(len(points)), seed=self.seed)
            self.reference_[int(z)] = index
            # the scale from every atom of an exact reference, a seeded sample of a larger one
            scaled = points
            if len(points) > SCALE_SAMPLE:
                scaled = points[np.sort(rng.choice(len(points), SCALE_SAMPLE, replace=False))]
            self.scale_[int(z)] = element_scale(index, scaled, self.n_neighbors)
        return self

    def _cross_fitted_scores(self, reference):
        """Structure novelty of each reference structure against the other folds' atoms,
        then the final reference of all atoms."""
        n = len(reference)
        folds = min(self.calibration_folds, n)
        if folds < 2:
            raise DomainError("cross-fitted calibration needs at least 2 structures")
        order = np.random.default_rng(self.seed).permutation(n)
        scores = np.zeros(n)
        for k in range(folds):
            held = np.sort(order[k::folds])
            rest = np.setdiff1d(np.arange(n), held)
            self._fit_reference(reference, rows=rest)
            scores[held] = self._raw_structure_novelty(reference.subset(held))[0]
        self._fit_reference(reference)
        self.out_of_fold_scores_ = scores  # in the reference's order
        return scores

    # ---- scoring -------------------------------------------------------------------------
    def _scalar_values(self, X) -> dict:
        energy = np.asarray(X.energy_pred, dtype=np.float64)
        return scalar_values(self.scalars, energy, X.n_atoms.astype(np.float64))

    def range_excess(self, X) -> dict:
        """Per scalar: how far each structure lies beyond the reference's range, in range
        widths (0 inside; one atom is the least width of an atom count)."""
        return range_excess(self._scalar_values(X), self.ranges_)

    def _standardise(self, feats):
        return standardise(feats, self.mean_, self.std_)

    def element_groups(self, atomic_numbers) -> list:
        """The atoms of each element with what their search needs: (rows, reference search
        or None for an element the reference never had, k, scale). Depends only on the
        atomic numbers, so a calculator keeps it across MD steps."""
        z = np.asarray(atomic_numbers)
        groups = []
        for element in np.unique(z):
            knn = self.reference_.get(int(element))
            rows = np.flatnonzero(z == element)
            if knn is None:
                groups.append((rows, None, 0, 1.0))
            else:
                groups.append((rows, knn, min(self.n_neighbors, len(knn)), self.scale_[int(element)]))
        return groups

    def one_structure_search(self, atomic_numbers) -> OneStructureSearch | list:
        """What ``novelty_of_one`` needs for structures of these atomic numbers: one search
        against every element's reference at once where that product is small (tens of
        atoms against a few thousand reference atoms), else ``element_groups`` with each
        each element's search kept across steps (``StepNeighbours``)."""
        search = OneStructureSearch(self, atomic_numbers)
        if search.usable:
            return search
        # each element keeps its atoms' candidates across steps (step_neighbours.py)
        return [
            (
                rows,
                StepNeighbours(knn, keep_below=SETTLED_SHARE * self.threshold_ * scale) if knn is not None else None,
                k,
                scale,
            )
            for rows, knn, k, scale in self.element_groups(atomic_numbers)
        ]

    def _raw_atom_novelty(self, features, atomic_numbers=None, groups=None, settle=False):
        """Scaled k-NN distance of every atom to same-element reference atoms (UNSEEN for an
        element the reference never had). ``groups``: ``element_groups(atomic_numbers)``.
        ``settle`` (fitted: scoring, never calibration): an approximate element's atom whose
        one-cell search already bounds its novelty at ``SETTLED_SHARE`` of the threshold
        reports that bound (``ElementIndex.mean_distance(settle_below=...)``)."""
        groups = self.element_groups(atomic_numbers) if groups is None else groups
        settle_below = SETTLED_SHARE * self.threshold_ if settle else None
        return atom_novelty(self._standardise(features), groups, settle_below)

    def _raw_structure_novelty(self, X, settle=False):
        atom = self._raw_atom_novelty(X.features, X.atomic_numbers, settle=settle)
        if len(X) == 0:
            return np.zeros(0), atom
        return structure_novelty(atom, X.offsets, self.range_excess(X), self.scalar_weight), atom

    def novelty_of_one(self, features, search, energy):
        """``novelty`` of one structure: (structure novelty, per-atom novelties), divided by
        the threshold; ``search``: ``one_structure_search`` of its atomic numbers (what a
        calculator keeps across steps). The same numbers as ``novelty``."""
        n = len(features)
        if isinstance(search, OneStructureSearch):
            atom = search(self._standardise(features))
        else:
            atom = self._raw_atom_novelty(features, groups=search, settle=True)
        structure = float(atom.max()) if n else 0.0
        scalars = scalar_values(self.scalars, np.array([float(energy)]), np.array([float(n)]))
        for excess in range_excess(scalars, self.ranges_).values():
            structure = max(structure, self.scalar_weight * float(excess[0]))
        return structure / self.threshold_, atom / self.threshold_

    def novelty(self, X):
        """(structure novelty (n,), per-atom novelty list), both divided by the conformal
        threshold: > 1 = outside the domain. Against an approximate reference an atom's
        value at most ``SETTLED_SHARE`` (0.5) may be an upper bound of it (one cell
        searched: ``_raw_atom_novelty``); every value above is the full search's."""
        _check_fitted(self)
        if X.n_features != self.n_features_in_:
            raise DomainError(
                f"features have width {X.n_features}, the domain model "
                f"{self.n_features_in_}: another backbone or other layers"
            )
        structure, atom = self._raw_structure_novelty(X, settle=True)
        atom = atom / self.threshold_
        per_atom = [atom[X.offsets[i] : X.offsets[i + 1]] for i in range(len(X))]
        return structure / self.threshold_, per_atom

    def in_domain(self, X) -> np.ndarray:
        return self.novelty(X)[0] <= 1.0

    # ---- persistence (the artifact module writes these to the .probe file) ---------------
    def state_dict(self) -> tuple[dict, dict]:
        """(arrays, JSON metadata): everything ``from_state`` needs, no pickle (``state.py``)."""
        _check_fitted(self)
        return domain_state(self)

    @classmethod
    def from_state(cls, arrays: dict, meta: dict) -> "DomainModel":
        return domain_from_state(cls, arrays, meta)

    def summary(self) -> str:
        counts = ", ".join(
            f"Z={z}: {len(p)}{'' if p.kind == 'flat' else f' ({p.kind.upper()})'}" for z, p in self.reference_.items()
        )
        ranges = ", ".join(f"{name} {lo:.4g}..{hi:.4g}" for name, (lo, hi) in self.ranges_.items())
        return (
            f"domain: {counts} reference atoms; {ranges}; threshold at alpha = {self.alpha:g} "
            f"from {self.n_calibration_} calibration structures"
        )

    def reasons(self, X, i) -> list[str]:
        """The structure-level reasons structure i is outside (empty if only atoms are)."""
        one = X.subset([i])
        values, excess = self._scalar_values(one), self.range_excess(one)
        out = []
        for name, v in values.items():
            if self.scalar_weight * excess[name][0] > self.threshold_:
                lo, hi = self.ranges_[name]
                out.append(f"{name} {v[0]:.4g} outside the reference's {lo:.4g}..{hi:.4g}")
        return out


def _check_fitted(model):
    if getattr(model, "threshold_", None) is None:
        raise DomainError("this DomainModel is not fitted yet: call fit(reference) first")
