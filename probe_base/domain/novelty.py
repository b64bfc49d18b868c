"""The numbers behind ``DomainModel``'s novelty, as module-level functions of arrays.

Standardised features, each atom's scaled k-NN distance to its element's reference, the
structure-level scalars (predicted energy per atom, atom count) and how far they lie beyond
the reference's range, a structure's novelty from both, and the atom rows of a set of
structures. No fitted state: ``DomainModel`` passes its means, ranges and scalar names.
"""

from __future__ import annotations

import numpy as np

from probe_base.domain.conformal import DomainError
from probe_base.domain.reference_index import ElementIndex

SCALARS = ("energy_per_atom", "n_atoms")
UNSEEN = 1e6  # raw novelty of an atom of an element the reference never had


def standardise(feats, mean, std):
    return ((np.asarray(feats, dtype=np.float32) - mean) / std).astype(np.float32)


def scalar_values(scalars, energy, n_atoms) -> dict:
    """The structure scalars named in ``scalars`` from predicted energies and atom counts."""
    unknown = set(scalars) - set(SCALARS)
    if unknown:
        raise DomainError(f"unknown structure scalars {sorted(unknown)}; choose from {SCALARS}")
    values = {"energy_per_atom": energy / np.maximum(n_atoms, 1), "n_atoms": n_atoms}
    return {name: values[name] for name in scalars}


def range_excess(values, ranges) -> dict:
    """Per scalar: how far each value lies beyond its (lo, hi) range, in range widths (0
    inside; one atom is the least width of an atom count)."""
    out = {}
    for name, v in values.items():
        lo, hi = ranges[name]
        width = max(hi - lo, 1.0 if name == "n_atoms" else 1e-6)
        out[name] = np.maximum(np.maximum(v - hi, lo - v), 0.0) / width
    return out


def structure_novelty(atom, offsets, excess, scalar_weight):
    """Per structure: its largest atom novelty or its weighted range excess, whichever is larger."""
    structure = np.maximum.reduceat(atom, offsets[:-1])
    for value in excess.values():
        structure = np.maximum(structure, scalar_weight * value)
    return structure


def atom_novelty(points, groups, settle_below=None):
    """Scaled k-NN distance of every atom (standardised ``points``) to same-element reference
    atoms, UNSEEN for an element the reference never had. ``groups``:
    ``DomainModel.element_groups``. ``settle_below`` (raw novelty, None: never): an
    ``ElementIndex`` atom whose one-cell search bounds its novelty below it reports that bound."""
    out = np.full(len(points), UNSEEN)
    for rows, knn, k, scale in groups:
        if knn is None:  # an unseen element: novel by definition
            continue
        if settle_below is not None and isinstance(knn, ElementIndex):
            distance = knn.mean_distance(points[rows], k, settle_below=settle_below * scale)
        else:  # StepNeighbours keeps its own bound
            distance = knn.mean_distance(points[rows], k)
        out[rows] = distance / scale
    return out


def atoms_of(X, rows):
    """The atom rows of structures ``rows`` of ``X``."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(X.offsets[i], X.offsets[i + 1]) for i in rows])
