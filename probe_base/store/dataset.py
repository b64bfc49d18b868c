"""What the probe reads from a store: ``FeatureSet`` (per-atom features of many structures,
flattened) and ``StoredDataset`` (a finished store in memory: features plus labels)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass
class FeatureSet:
    """Per-atom features of many structures, flattened: structure i owns atoms
    ``offsets[i]:offsets[i+1]``. This is what the probe reads."""

    features: np.ndarray  # (n_atoms_total, n_features) float32
    atomic_numbers: np.ndarray  # (n_atoms_total,)
    offsets: np.ndarray  # (n_structures + 1,)
    energy_pred: np.ndarray  # (n_structures,) backbone energy, eV

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    def padded(self, indices):
        """Structures ``indices`` as a padded batch: features (B, N, F) float32, atomic
        numbers (B, N) int64 (0 = padding) and the mask (B, N) of real atoms."""
        counts = self.n_atoms[indices]
        arange = np.arange(int(counts.max()))
        mask = arange[None, :] < counts[:, None]
        atom_index = self.offsets[indices][:, None] + arange[None, :]
        atom_index[~mask] = 0
        return (self.features[atom_index], self.atomic_numbers[atom_index].astype(np.int64) * mask, mask)

    def subset(self, indices):
        """A new set of the same class holding structures ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.n_atoms[indices]
        atom_index = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices])
            if len(indices) and self.features is not None
            else np.zeros(0, dtype=np.int64)
        )
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "offsets":
                values[f.name] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            elif f.name in PER_ATOM_FIELDS:
                values[f.name] = value[atom_index] if value is not None else None
            elif isinstance(value, np.ndarray) and value.shape[:1] == (len(self),):
                values[f.name] = value[indices]
            else:
                values[f.name] = value
        return type(self)(**values)

    @classmethod
    def from_backbone_output(cls, output, atoms_list):
        counts = [len(a) for a in atoms_list]
        return cls(
            features=np.concatenate(output.features).astype(np.float32),
            atomic_numbers=np.concatenate([a.numbers for a in atoms_list]),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            energy_pred=np.asarray(output.energies, dtype=np.float64),
        )


PER_ATOM_FIELDS = {"features", "atomic_numbers", "atom_force_error", "atom_force_pred_norm"}


@dataclass
class StoredDataset(FeatureSet):
    """A finished feature store in memory: features plus reference labels."""

    energy_ref: np.ndarray = None  # (n_structures,)
    force_rmse: np.ndarray = None  # (n_structures,) NaN without reference forces
    force_max_error: np.ndarray = None  # (n_structures,)
    atom_force_error: np.ndarray | None = None  # (n_atoms_total,) |F_pred - F_ref|
    # (n_atoms_total,) |F_pred| of the backbone, NaN where forces were not computed; None
    # for a store written before format 3 (which did not keep it)
    atom_force_pred_norm: np.ndarray | None = None
    source_index: np.ndarray = None  # (n_structures,) index in the input file
    member_energies: np.ndarray | None = None  # (n_structures, n_members)
    member_force_std: np.ndarray | None = None  # (n_structures,) mean per-atom force std
    attrs: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> dict:
        return self.attrs["fingerprint"]

    @property
    def has_labels(self) -> bool:
        """Whether the store holds reference energies (False for ``probe extract --no-labels``:
        features, predictions and ensemble members only, reference fields NaN)."""
        if self.energy_ref is None or not self.attrs.get("labels", True):
            return False
        return not (len(self.energy_ref) and np.isnan(self.energy_ref).all())
