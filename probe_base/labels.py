"""Per-structure error targets and the threshold that turns them into reliable/unreliable."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from probe_base.errors import LabelError

TARGETS = {
    "energy": "absolute total-energy error |E_pred - E_ref| (eV), the paper's per-molecule error",
    "energy_per_atom": "absolute energy error per atom (eV/atom)",
    "force_rmse": "RMSE of force components (eV/Å)",
    "force_max": "largest per-atom force-error norm (eV/Å)",
}
UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "force_rmse": "eV/Å", "force_max": "eV/Å"}
#: the default label: the error beyond which a prediction is not usable, in the target's unit.
#: energy: chemical accuracy, 1 kcal/mol per structure; energy_per_atom: 5 meV/atom (chemical
#: accuracy spread over a 9-atom molecule; the order of the per-atom errors materials MLIPs
#: are judged by); force_rmse: 0.1 eV/Å (2-3x a good MLIP's force RMSE on its own data);
#: force_max: 0.5 eV/Å on the worst atom
DEFAULT_TOLERANCES = {"energy": 0.0434, "energy_per_atom": 0.005, "force_rmse": 0.1, "force_max": 0.5}
OFFSET_MODES = (True, False, "auto")
#: "auto" removes the mean signed energy error when it is this many standard errors from 0
OFFSET_SIGNIFICANCE = 3.0


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
    """``target`` and an absolute ``threshold`` (default: ``DEFAULT_TOLERANCES``, the error
    that makes a prediction unusable) or a ``quantile`` of the fitting errors (the official
    PROBE code uses the median, quantile 0.5: half of normal structures count as unreliable).

    ``remove_offset`` (energy targets): measure errors after subtracting the fitting set's
    mean signed error, so that a backbone's constant energy shift (another reference level,
    forces-weighted training) does not decide what is "unreliable": a constant shift changes
    neither forces nor relative energies, which is what MD and most comparisons use.
    ``"auto"`` (default) removes it when it is significant (more than 3 standard errors from
    0); True always; False never (the absolute energy is what counts)."""

    target: str = "energy"
    threshold: float | None = None
    quantile: float | None = None
    remove_offset: bool | str = "auto"
    offset: float = 0.0

    def __post_init__(self):
        if self.target not in TARGETS:
            raise LabelError(f"unknown error target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.threshold is None and self.quantile is None:
            self.threshold = DEFAULT_TOLERANCES[self.target]
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise LabelError(f"--threshold {self.threshold!r}: the tolerance must be a positive number")
        if self.quantile is not None and not 0 < self.quantile < 1 and self.threshold is None:
            raise LabelError(f"quantile must lie in (0, 1), got {self.quantile}")
        if self.remove_offset not in OFFSET_MODES:
            raise LabelError(f"remove_offset must be True, False or 'auto', not {self.remove_offset!r}")
        if self.remove_offset is True and self.target not in ("energy", "energy_per_atom"):
            raise LabelError("--remove-offset applies to energy targets only")
        if not np.isfinite(self.offset):
            raise LabelError(f"label offset {self.offset!r} is not a finite number")

    def errors(self, data) -> np.ndarray:
        return errors(data, self.target, self.offset)

    def offset_estimate(self, fit_data) -> dict | None:
        """The backbone's constant energy offset on the fitting set: mean signed error
        (E_pred - E_ref, the target's unit), its standard error, whether it is significant and
        whether this label removes it. None for force targets."""
        if self.target not in ("energy", "energy_per_atom"):
            return None
        signed = signed_energy_error(fit_data, self.target)
        mean = float(np.mean(signed))
        se = float(np.std(signed, ddof=1) / np.sqrt(len(signed))) if len(signed) > 1 else float("inf")
        significant = bool(abs(mean) > OFFSET_SIGNIFICANCE * se)
        removed = self.remove_offset is True or (self.remove_offset == "auto" and significant)
        return {"mean": mean, "standard_error": se, "significant": significant, "removed": bool(removed)}

    def resolved_on(self, fit_data) -> "LabelSpec":
        """Fix the offset (as asked) and the threshold from the fitting set."""
        offset = self.offset
        estimate = self.offset_estimate(fit_data)
        if estimate is not None and estimate["removed"]:
            offset = estimate["mean"]
        spec = LabelSpec(self.target, self.threshold, self.quantile, False, offset)
        return spec.resolved(spec.errors(fit_data))

    def resolved(self, fit_errors: np.ndarray) -> "LabelSpec":
        """Fix the threshold from the fitting set's errors (a no-op if absolute)."""
        threshold = self.threshold if self.threshold is not None else np.quantile(fit_errors, self.quantile)
        return LabelSpec(self.target, float(threshold), None, False, self.offset)

    def describe(self) -> str:
        """One line: what counts as reliable."""
        unit = UNITS[self.target]
        text = f"{self.target} error <= {self.threshold:.4g} {unit} is reliable"
        if self.offset:
            text += f" (after removing a constant offset of {self.offset:+.4g} {unit})"
        return text

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
    """A probe learns from both kinds: refuse labels of one class, naming a fix that changes it."""
    n_reliable = int(y.sum())
    if n_reliable not in (0, len(y)):
        return
    which = "reliable" if n_reliable == len(y) else "unreliable"
    head = f"all {len(y)} structures of the {context} are {which} at the {spec.target} threshold {spec.threshold:.4g}"
    if len(y) < 10 or len(np.unique(errs)) < 2:
        raise LabelError(
            f"{head}; with {len(y)} structure(s) and {len(np.unique(errs))} distinct error(s) no threshold "
            "gives both reliable and unreliable examples: extract more labelled structures (tens at least)"
        )
    q = np.quantile(errs, [0.25, 0.5, 0.75])
    other = q[2] if n_reliable == len(y) else q[0]  # a threshold on the other side of the errors
    hint = (
        "the backbone is within this tolerance everywhere here: add harder structures (hotter MD, distorted "
        "geometries) to learn where it fails, or"
        if n_reliable == len(y)
        else "the backbone misses this tolerance everywhere here:"
    )
    raise LabelError(
        f"{head}; errors have quartiles {q[0]:.4g} / {q[1]:.4g} / {q[2]:.4g}: {hint} "
        f"use --threshold {other:.4g} (a tolerance inside their range) or --quantile 0.5 (a relative label)"
    )
