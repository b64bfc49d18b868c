"""The domain search for one structure in an MD step: every element's reference atoms in
one matrix product.

``DomainModel.one_structure_search`` returns a ``OneStructureSearch`` where the product of
the structure's atoms and the reference atoms stays small (tens of atoms against a few
thousand exact reference atoms) and every element takes the same k; a calculator keeps it
across steps. Larger or approximate references use the per-element searches instead
(``step_neighbours.py``).
"""

from __future__ import annotations

import numpy as np

from probe_base.domain.neighbours import ExactNeighbors
from probe_base.domain.novelty import UNSEEN

# one structure's atoms x every element's reference atoms: one product up to this many
# (beyond it the per-element searches' smaller selections win over saved calls)
ONE_STRUCTURE_DISTANCES = 1 << 16


class OneStructureSearch:
    """The k-NN novelty of one structure's atoms against the reference atoms of every
    element in one matrix product, another element's reference atoms masked out (+inf): a
    few array operations per MD step instead of a few per element. ``usable`` where the
    product stays small and every element takes the same k."""

    def __init__(self, domain, atomic_numbers):
        z = np.asarray(atomic_numbers)
        elements = [int(e) for e in np.unique(z) if int(e) in domain.reference_]
        sizes = [len(domain.reference_[e]) for e in elements]
        ks = {min(domain.n_neighbors, size) for size in sizes}
        exact = all(domain.reference_[e].kind == "flat" for e in elements)
        self.usable = exact and len(ks) == 1 and len(z) * sum(sizes) <= ONE_STRUCTURE_DISTANCES
        if not self.usable:
            return
        self.k = ks.pop()
        self.reference = ExactNeighbors(np.concatenate([domain.reference_[e].points for e in elements]))
        owner = np.repeat(elements, sizes)
        self.mask = np.where(z[:, None] == owner[None, :], 0.0, np.inf).astype(np.float32)
        self.unseen = ~np.isin(z, elements)
        scale = {e: domain.scale_[e] for e in elements}
        self.scale = np.array([scale.get(int(e), 1.0) for e in z])

    def __call__(self, points) -> np.ndarray:
        """Raw novelty of each atom from its standardised features (UNSEEN: an element the
        reference never had)."""
        distances = self.reference.squared_distances(points)
        distances += self.mask
        nearest = np.partition(distances, self.k - 1, axis=1)[:, : self.k]
        out = np.sqrt(np.maximum(nearest, 0.0)).mean(1) / self.scale
        out[self.unseen] = UNSEEN
        return out
