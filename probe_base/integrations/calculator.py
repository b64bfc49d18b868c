"""ASE integration: ``attach(calculator, "model.probe")``.

The returned calculator runs the wrapped calculator as usual; forward hooks on its model
capture the per-atom features during that same pass, and the probe adds to ``results``:
``reliability`` (P(reliable); 0 outside the backbone's domain), ``in_domain`` and
``novelty`` (largest atom novelty / conformal threshold; > 1 = outside), and per atom
``atom_novelty``, ``atom_error`` (predicted force error, eV/Å, where the probe has the
per-atom head) and ``atom_importance`` (attention received, sums to 1). The same values
go to ``atoms.info["probe_*"]`` and ``atoms.arrays["probe_*"]`` so extxyz trajectories
carry them.

Each plugin's drop-in calculator (``probe_mace.MACECalculator``, ...) is a ``DropInCalculator``:
the framework's own calculator without ``probe=``, a ``ProbedCalculator`` over it with one.
"""

from __future__ import annotations

import warnings
import weakref
from abc import ABCMeta

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from probe_base.artifact import ProbeArtifact, load_probe
from probe_base.decision import DecisionRule
from probe_base.errors import ProbeError, UnreliablePrediction
from probe_base.scoring import StructureScorer, decision_rule

POLICIES = ("ignore", "warn", "raise")


class UnreliableWarning(UserWarning):
    """Emitted by the ``warn`` policy."""


def _find_adapter_class(calculator, adapter, probe_adapter_name):
    from probe_base.plugins import available_adapters, get_adapter_class

    if adapter is not None:
        return get_adapter_class(adapter) if isinstance(adapter, str) else adapter
    if probe_adapter_name:
        return get_adapter_class(probe_adapter_name)
    for info in available_adapters().values():
        if info.adapter_class.models_of_calculator(calculator) is not None:
            return info.adapter_class
    raise ProbeError(
        f"no installed adapter knows {type(calculator).__name__}; install the backbone's plugin or pass adapter="
    )


class ReliabilityPolicy:
    """What to do with a prediction judged unreliable: ``ignore``, ``warn`` or ``raise``.
    One object shared by every calculator and the watchdog, so they decide alike."""

    def __init__(self, policy="warn", threshold=0.5, rule: DecisionRule | None = None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.policy = policy
        self.rule = rule if rule is not None else DecisionRule(float(threshold), method="fixed")
        self.threshold = self.rule.cut

    def unreliable(self, p_reliable, in_domain=True) -> bool:
        """The probe's decision rule: outside the domain, P below the cut, or P not finite."""
        return self.rule.unreliable(p_reliable, in_domain)

    def message(self, p_reliable, symbols, scores, i=0, label="prediction") -> str:
        """Why structure ``i`` is unreliable: its novel atoms first, else the atoms of
        largest predicted force error (or most attention)."""
        novel = scores.novel_atoms(i)
        why = (scores.reasons or {}).get(i) or []
        if len(novel) or why:
            names = ", ".join(f"{symbols[a]}{a} ({scores.atom_novelty[i][a]:.1f}x)" for a in novel[:5])
            parts = ([f"novel atoms {names}"] if len(novel) else []) + why
            return f"PROBE: {label} outside the backbone's domain: " + "; ".join(parts)
        order = np.argsort(scores.atom_map(i))[::-1][:3]
        kind = "atoms of largest predicted force error" if scores.atom_error is not None else "most attended atoms"
        where = ", ".join(f"{symbols[a]}{a}" for a in order)
        return f"PROBE: {label} unreliable (P(reliable) = {p_reliable:.3f} < {self.threshold:.3g}); {kind}: {where}"

    def apply(self, message, p_reliable, importance=None, before_raise=None):
        if self.policy == "warn":
            warnings.warn(message, UnreliableWarning, stacklevel=3)
        elif self.policy == "raise":
            if before_raise is not None:
                before_raise()
            raise UnreliablePrediction(message, p_reliable, importance)


def write_scores(results: dict, scores, i=0, atoms=None, rule=None):
    """Structure ``i`` of ``scores`` into ASE ``results`` (and ``atoms.info``/``arrays``
    so extxyz carries them); ``rule`` (a ``DecisionRule``) adds the flag, ``unreliable``."""
    results["reliability"] = float(scores.p_reliable[i])
    results["reliability_network"] = float(scores.p_network[i])
    results["in_domain"] = bool(scores.in_domain[i])
    results["atom_importance"] = np.asarray(scores.importance[i], dtype=np.float64)
    if scores.novelty is not None:
        results["novelty"] = float(scores.novelty[i])
        results["atom_novelty"] = np.asarray(scores.atom_novelty[i], dtype=np.float64)
    if scores.atom_error is not None:
        results["atom_error"] = np.asarray(scores.atom_error[i], dtype=np.float64)
    if rule is not None:
        results["unreliable"] = rule.unreliable(results["reliability"], results["in_domain"])
    if atoms is not None:
        atoms.info["probe_reliability"] = results["reliability"]
        atoms.info["probe_in_domain"] = results["in_domain"]
        if "unreliable" in results:
            atoms.info["probe_unreliable"] = results["unreliable"]
        atoms.arrays["probe_importance"] = results["atom_importance"].copy()
        if "novelty" in results:
            atoms.info["probe_novelty"] = results["novelty"]
            atoms.arrays["probe_atom_novelty"] = results["atom_novelty"].copy()
        if "atom_error" in results:
            atoms.arrays["probe_atom_error"] = results["atom_error"].copy()


class PolicyParameters:
    """``policy`` and ``threshold`` read from ``self.parameters`` (ASE's contract) into one
    ``ReliabilityPolicy``; for ``ProbedCalculator`` and probed calculators outside ASE
    (aimnet's dict interface). Needs ``self.artifact`` and ``self.parameters``."""

    @staticmethod
    def _check_policy(kwargs):
        if "policy" in kwargs and kwargs["policy"] not in POLICIES:  # before anything changes
            raise ValueError(f"policy must be one of {POLICIES}, not {kwargs['policy']!r}")

    def _policy_from_parameters(self):
        rule = decision_rule(self.artifact, self.parameters["threshold"])
        self.reliability_policy = ReliabilityPolicy(self.parameters["policy"], rule=rule)

    @property
    def policy(self):
        return self.reliability_policy.policy

    @policy.setter
    def policy(self, value):
        self.set(policy=value)

    @property
    def threshold(self):
        return self.reliability_policy.threshold

    @property
    def rule(self):
        """The decision rule this calculator flags with (the probe file's unless overridden)."""
        return self.reliability_policy.rule


class ProbedCalculator(PolicyParameters, Calculator):
    """An ASE calculator that adds PROBE's reliability to another calculator's results.
    Its ``parameters`` (ASE's contract): ``policy``, ``threshold`` (None: the probe's
    decision rule) and ``use_domain``; ``calc.set(policy="raise")`` changes them."""

    default_parameters = {"policy": "warn", "threshold": None, "use_domain": True}

    def __init__(self, calculator, artifact: ProbeArtifact, adapter, policy="warn", threshold=None, use_domain=True):
        self.calculator = calculator
        self.artifact = artifact
        self.adapter = adapter
        super().__init__(policy=policy, threshold=threshold, use_domain=use_domain)
        self.use_domain = use_domain
        extra = ["reliability", "reliability_network", "in_domain", "unreliable", "atom_importance"]
        if artifact.domain is not None and use_domain:
            extra += ["novelty", "atom_novelty"]
        if artifact.atom_errors is not None:
            extra.append("atom_error")
        self.implemented_properties = list(calculator.implemented_properties) + extra
        self._scorer = StructureScorer(artifact, use_domain)
        # hooks stay on the model while this calculator lives (not added and removed each step)
        self._hooks = adapter.feature_hooks()
        weakref.finalize(self, self._hooks.remove)

    def set(self, **kwargs):
        if "use_domain" in kwargs and kwargs["use_domain"] != self.parameters.get("use_domain", True):
            raise ValueError("use_domain is fixed when the probe is attached: attach again with use_domain=...")
        self._check_policy(kwargs)
        changed = super().set(**kwargs)
        self._policy_from_parameters()
        if changed:
            self.reset()  # cached results carry the old flag and escaped the new policy
        return changed

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wrapped = [p for p in properties if p in self.calculator.implemented_properties] or ["energy"]
        self.adapter.check_structures([self.atoms], source="attached calculator")
        captured = self._hooks.captured
        captured.clear()  # a pass that skips a layer must fail, not reuse the last step's features
        self.calculator.calculate(self.atoms, wrapped, system_changes)
        self.results = dict(self.calculator.results)
        features = self.adapter.features_from_capture(captured, len(self.atoms))
        captured.clear()
        energy = self.adapter.primary_energy(self.calculator.results)
        scores = self._scorer(features, self.atoms.numbers, energy)
        policy = self.reliability_policy
        write_scores(self.results, scores, 0, atoms, policy.rule)
        p = self.results["reliability"]
        if policy.policy == "ignore" or not self.results["unreliable"]:
            return
        message = policy.message(p, self.atoms.get_chemical_symbols(), scores)
        # no cached results on raise: asking again for the same atoms raises again
        policy.apply(message, p, self.results["atom_importance"], before_raise=self.reset)


def probe_backbone(probe, adapter_class, models, allow_mismatch=False, source=None):
    """The loaded probe and the adapter on ``models`` that reads its layers; raises
    ``FingerprintMismatch`` unless ``models`` are the backbone it was fitted on (unless
    ``allow_mismatch``). ``probe``: a ``.probe`` path or a loaded ``ProbeArtifact``."""
    artifact = probe if isinstance(probe, ProbeArtifact) else load_probe(probe)
    # the adapter options the probe was fitted with (a MACE head, a SevenNet modal)
    options = artifact.fingerprint.get("parameters", {})
    backbone = adapter_class.from_models(models, layers=artifact.fingerprint["layers"], **options)
    artifact.check_backbone(backbone.fingerprint(), allow_mismatch, source=str(source or probe))
    return artifact, backbone


def _models_of(calculator, adapter_class):
    models = adapter_class.models_of_calculator(calculator)
    if models is None:
        raise ProbeError(
            f"adapter {adapter_class.name!r} does not know calculators of type {type(calculator).__name__}"
        )
    return models


def attach(
    calculator, probe, *, adapter=None, policy="warn", threshold=None, allow_mismatch=False, use_domain=True
) -> ProbedCalculator:
    """Wrap an ASE ``calculator`` so that its results include PROBE's reliability.

    ``probe``: a ``.probe`` path or a loaded ``ProbeArtifact``. ``adapter``: an adapter name
    or class (found from the probe file or the calculator type when omitted). ``policy``
    for predictions outside the backbone's domain or with P(reliable) < ``threshold``:
    ``ignore``, ``warn`` or ``raise``. ``use_domain=False``: the network alone.
    """
    artifact = probe if isinstance(probe, ProbeArtifact) else load_probe(probe)
    adapter_class = _find_adapter_class(calculator, adapter, artifact.fingerprint.get("adapter"))
    models = _models_of(calculator, adapter_class)
    _, backbone = probe_backbone(artifact, adapter_class, models, allow_mismatch, source=probe)
    return ProbedCalculator(calculator, artifact, backbone, policy, threshold, use_domain)


class DropInType(ABCMeta):
    """Metaclass of the drop-ins: without a probe a drop-in returns the framework's own
    calculator, type unchanged, so ``isinstance(calc, MACECalculator)`` also holds for an
    instance of ``framework_types()``. ``issubclass`` is left alone: widening it would make
    ``isinstance(mace_calc, ProbedCalculator)`` true through ``ABCMeta``'s subclass walk."""

    def __instancecheck__(cls, instance):
        return super().__instancecheck__(instance) or isinstance(instance, cls.framework_types())


class DropIn(metaclass=DropInType):
    """A plugin's calculator class that stands in for its framework's: ``Cls(...)`` without
    ``probe`` returns ``framework_calculator(...)`` itself (``__init__`` does not run: it is
    not a ``Cls`` by type); with ``probe``, a ``Cls`` whose ``__init__`` wraps that calculator."""

    adapter: type | None = None  # the plugin's adapter class

    @classmethod
    def framework_types(cls) -> tuple[type, ...]:
        """The framework's own calculator class(es), imported lazily: by default the
        adapter's ``calculator_class()``."""
        found = cls.adapter.calculator_class() if cls.adapter is not None else None
        return (found,) if found is not None else ()

    @classmethod
    def framework_calculator(cls, *args, **kwargs):
        """The framework's calculator made from the user's arguments (its first type's)."""
        return cls.framework_types()[0](*args, **kwargs)

    def __new__(cls, *args, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):
        if probe is None:
            return cls.framework_calculator(*args, **kwargs)
        return super().__new__(cls)

    def __getnewargs_ex__(self):
        # copy and pickle call __new__ with these: the probed form, not a new framework calculator
        return (), {"probe": self.artifact}


class DropInCalculator(DropIn, ProbedCalculator):
    """A plugin's drop-in ASE calculator: ``Cls(<the framework calculator's arguments>,
    probe=None, probe_policy="warn", probe_threshold=None)``. A subclass sets ``adapter``
    (its adapter class, whose ``ase_calculator`` names the framework's calculator); it
    overrides ``framework_calculator`` where making the calculator is more than calling its
    class, ``framework_types`` where several classes count as the framework's."""

    def __init__(self, *args, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):
        calculator = self.framework_calculator(*args, **kwargs)
        artifact, backbone = probe_backbone(probe, self.adapter, _models_of(calculator, self.adapter))
        super().__init__(calculator, artifact, backbone, probe_policy, probe_threshold)
