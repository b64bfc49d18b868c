"""Per-structure error targets and the threshold that turns them into reliable/unreliable."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import LabelError

TARGETS = {
    "energy": "absolute total-energy error |E_pred - E_ref| (eV), the paper's per-molecule error",
    "energy_per_atom": "absolute energy error per atom (eV/atom)",
    "force_rmse": "RMSE of force components (eV/Å)",
    "force_max": "largest per-atom force-error norm (eV/Å)",
}
UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "force_rmse": "eV/Å", "force_max": "eV/Å"}


def signed_energy_error(data, target: str) -> np.ndarray:
    """E_pred - E_ref per structure (``energy``) or per atom (``energy_per_atom``)."""
    signed = data.energy_pred - data.energy_ref
    return signed / data.n_atoms if target == "energy_per_atom" else signed


def errors(data, target: str, offset: float = 0.0) -> np.ndarray:
    """The error of every structure in a stored dataset for ``target``. ``offset``
    (energy targets only, same unit) is subtracted from the signed error first."""
    if target in ("energy", "energy_per_atom"):
        return np.abs(signed_energy_error(data, target) - offset)
    if target in ("force_rmse", "force_max"):
        values = data.force_rmse if target == "force_rmse" else data.force_max_error
        if values is None or not np.all(np.isfinite(values)):
            raise LabelError(
                f"target {target!r} needs reference forces, but the feature store has none; "
                "extract with forces or use --target energy"
            )
        return values
    raise LabelError(f"unknown error target {target!r}; choose one of {', '.join(TARGETS)}")


@dataclass
class LabelSpec:
    """``target`` and either an absolute ``threshold`` or a ``quantile`` of the fitting
    errors (the official PROBE code uses the median, quantile 0.5).

    ``remove_offset`` (energy targets): measure errors after subtracting the fitting set's
    mean signed error, so that a backbone's constant energy shift (e.g. another reference
    level, or forces-weighted training) does not decide what is "unreliable"."""

    target: str = "energy"
    threshold: float | None = None
    quantile: float | None = 0.5
    remove_offset: bool = False
    offset: float = 0.0

    def __post_init__(self):
        if self.target not in TARGETS:
            raise LabelError(f"unknown error target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.threshold is None and self.quantile is None:
            raise LabelError("give a threshold or a quantile")
        if self.quantile is not None and not 0 < self.quantile < 1 and self.threshold is None:
            raise LabelError(f"quantile must lie in (0, 1), got {self.quantile}")
        if self.remove_offset and self.target not in ("energy", "energy_per_atom"):
            raise LabelError("--remove-offset applies to energy targets only")

    def errors(self, data) -> np.ndarray:
        return errors(data, self.target, self.offset)

    def resolved_on(self, fit_data) -> "LabelSpec":
        """Fix the offset (if asked) and the threshold from the fitting set."""
        offset = self.offset
        if self.remove_offset:
            offset = float(np.mean(signed_energy_error(fit_data, self.target)))
        spec = LabelSpec(self.target, self.threshold, self.quantile, False, offset)
        return spec.resolved(spec.errors(fit_data))

    def resolved(self, fit_errors: np.ndarray) -> "LabelSpec":
        """Fix the threshold from the fitting set's errors (a no-op if absolute)."""
        threshold = self.threshold if self.threshold is not None else np.quantile(fit_errors, self.quantile)
        return LabelSpec(self.target, float(threshold), None, False, self.offset)

    def reliable(self, errs: np.ndarray, context: str = "fitting set") -> np.ndarray:
        """1 = reliable (error at or below the threshold), 0 = unreliable."""
        if self.threshold is None:
            raise LabelError("resolve the threshold first (LabelSpec.resolved)")
        y = (errs <= self.threshold).astype(np.int64)
        check_both_classes(y, errs, self, context)
        return y

    def to_dict(self):
        return asdict(self)


def check_both_classes(y, errs, spec, context):
    n_reliable = int(y.sum())
    if n_reliable in (0, len(y)):
        which = "reliable" if n_reliable == len(y) else "unreliable"
        q = np.quantile(errs, [0.25, 0.5, 0.75]) if len(errs) else [np.nan] * 3
        raise LabelError(
            f"all {len(y)} structures of the {context} are {which} at the {spec.target} "
            f"threshold {spec.threshold:.4g}; errors have quartiles {q[0]:.4g} / {q[1]:.4g} / "
            f"{q[2]:.4g}: try --threshold {q[1]:.4g} or --quantile 0.5"
        )
