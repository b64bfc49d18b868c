"""ASE integration: ``attach(calculator, "model.probe")``.

The returned calculator runs the wrapped calculator as usual; forward hooks on its model
capture the per-atom features during that same pass, and the probe adds
``results["reliability"]`` (P(reliable)) and ``results["atom_importance"]`` (per atom,
sums to 1). The same values are written to ``atoms.info["probe_reliability"]`` and
``atoms.arrays["probe_importance"]`` so extxyz trajectories carry them.
"""

from __future__ import annotations

import warnings

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .artifact import ProbeArtifact, load_probe
from .errors import ProbeError, UnreliablePrediction
from .store import FeatureSet

POLICIES = ("ignore", "warn", "raise")


class UnreliableWarning(UserWarning):
    """Emitted by the ``warn`` policy."""


def _find_adapter_class(calculator, adapter, probe_adapter_name):
    from .plugins import available_adapters, get_adapter_class

    if adapter is not None:
        return get_adapter_class(adapter) if isinstance(adapter, str) else adapter
    if probe_adapter_name:
        return get_adapter_class(probe_adapter_name)
    for info in available_adapters().values():
        if info.adapter_class.models_of_calculator(calculator) is not None:
            return info.adapter_class
    raise ProbeError(f"no installed adapter knows {type(calculator).__name__}; "
                     "install the backbone's plugin or pass adapter=")


class ProbedCalculator(Calculator):
    """An ASE calculator that adds PROBE's reliability to another calculator's results."""

    def __init__(self, calculator, artifact: ProbeArtifact, adapter, policy="warn",
                 threshold=None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        super().__init__()
        self.calculator = calculator
        self.artifact = artifact
        self.adapter = adapter
        self.policy = policy
        self.threshold = float(threshold if threshold is not None
                               else artifact.info.get("info", {}).get("decision_threshold", 0.5))
        self.implemented_properties = list(calculator.implemented_properties) + [
            "reliability", "atom_importance"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wrapped = [p for p in properties if p in self.calculator.implemented_properties] or ["energy"]
        self.adapter.check_structures([self.atoms], source="attached calculator")
        with self.adapter.capture() as captured:
            self.calculator.calculate(self.atoms, wrapped, system_changes)
        self.results = dict(self.calculator.results)
        n = len(self.atoms)
        features = self.adapter.features_from_capture(captured, n)
        energy = self.adapter.primary_energy(self.calculator.results)
        X = FeatureSet(features, self.atoms.numbers.copy(), np.array([0, n]), np.array([energy]))
        p_reliable, importance = self.artifact.classifier.predict_with_importance(X)
        self.results["reliability"] = float(p_reliable[0])
        self.results["atom_importance"] = importance[0].astype(np.float64)
        if atoms is not None:  # so that trajectories written as extxyz carry them
            atoms.info["probe_reliability"] = self.results["reliability"]
            atoms.arrays["probe_importance"] = self.results["atom_importance"].copy()
        self._apply_policy()

    def _apply_policy(self):
        p = self.results["reliability"]
        if self.policy == "ignore" or p >= self.threshold:
            return
        top = np.argsort(self.results["atom_importance"])[::-1][:3]
        symbols = self.atoms.get_chemical_symbols()
        where = ", ".join(f"{symbols[i]}{i}" for i in top)
        message = (f"PROBE: prediction unreliable (P(reliable) = {p:.3f} < {self.threshold:.2f}); "
                   f"most attended atoms: {where}")
        if self.policy == "warn":
            warnings.warn(message, UnreliableWarning, stacklevel=2)
        else:
            importance = self.results["atom_importance"]
            self.reset()  # no cached results: asking again for the same atoms raises again
            raise UnreliablePrediction(message, p, importance)


def attach(calculator, probe, *, adapter=None, policy="warn", threshold=None,
           allow_mismatch=False) -> ProbedCalculator:
    """Wrap an ASE ``calculator`` so that its results include PROBE's reliability.

    ``probe``: a ``.probe`` path or a loaded ``ProbeArtifact``. ``adapter``: an adapter name
    or class (found from the probe file or the calculator type when omitted). ``policy``
    for predictions with P(reliable) < ``threshold``: ``ignore``, ``warn`` or ``raise``.
    """
    artifact = probe if isinstance(probe, ProbeArtifact) else load_probe(probe)
    adapter_class = _find_adapter_class(calculator, adapter, artifact.fingerprint.get("adapter"))
    models = adapter_class.models_of_calculator(calculator)
    if models is None:
        raise ProbeError(f"adapter {adapter_class.name!r} does not know calculators of type "
                         f"{type(calculator).__name__}")
    backbone = adapter_class.from_models(models, layers=artifact.fingerprint["layers"])
    artifact.check_backbone(backbone.fingerprint(), allow_mismatch, source=str(probe))
    return ProbedCalculator(calculator, artifact, backbone, policy, threshold)
