"""Drop-in ``AIMNet2Calculator`` and ``AIMNet2ASE`` that can carry a PROBE probe.

    from probe_aimnet import AIMNet2ASE          # instead of aimnet.calculators.AIMNet2ASE
    atoms.calc = AIMNet2ASE("seed1.pt", probe="seed1.probe")
    atoms.get_potential_energy(); atoms.calc.results["reliability"]

Without ``probe`` both make aimnet's own objects (several models: an ``AIMNet2Ensemble``
with ``energy_std``/``forces_std``/``charges_std``), which count as instances of these
classes (``isinstance``); with ``probe``, an instance of the class itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Parameters

from probe_base.integrations.calculator import DropIn, DropInCalculator, PolicyParameters, probe_backbone

from .ensemble import AIMNet2Ensemble
from .plugin import AIMNet2Adapter

ENSEMBLE_KEYS = ("energy_std", "forces_std", "charges_std", "energy_members")


def _base_calculator(model, **kwargs):
    from aimnet.calculators import AIMNet2Calculator as _AIMNet2Calculator

    if isinstance(model, (list, tuple)):
        return AIMNet2Ensemble(model, **kwargs) if len(model) > 1 else _base_calculator(model[0], **kwargs)
    if isinstance(model, (_AIMNet2Calculator, AIMNet2Ensemble)):
        return model
    return _AIMNet2Calculator(str(model) if isinstance(model, Path) else model, **kwargs)


def _aimnet_ase():
    from aimnet.calculators.aimnet2ase import AIMNet2ASE as _AIMNet2ASE

    return _AIMNet2ASE


_ENSEMBLE_ASE = None


def ensemble_ase_class():
    """aimnet's AIMNet2ASE + the ensemble keys (a subclass made on first use: aimnet is
    imported lazily)."""
    global _ENSEMBLE_ASE
    if _ENSEMBLE_ASE is None:
        base = _aimnet_ase()

        class EnsembleASE(base):
            """AIMNet2ASE on an ``AIMNet2Ensemble``: also ``energy_std`` (eV), ``forces_std``
            (n_atoms, 3), ``charges_std`` and ``energy_members`` in ``results``."""

            implemented_properties = [*base.implemented_properties, *ENSEMBLE_KEYS]

            def calculate(self, atoms=None, properties=None, system_changes=None):
                from ase.calculators.calculator import all_changes

                super().calculate(atoms, properties, all_changes if system_changes is None else system_changes)
                last = self.base_calc.last_results or {}
                n = len(self.atoms)
                for key in ENSEMBLE_KEYS:
                    if key in last:
                        value = np.asarray(last[key].detach().cpu())
                        if key == "energy_std":
                            value = float(value.reshape(-1)[0])
                        elif key == "forces_std":
                            value = value.reshape(n, 3)
                        else:
                            value = value.reshape(-1)
                        self.results[key] = value

        _ENSEMBLE_ASE = EnsembleASE
    return _ENSEMBLE_ASE


class AIMNet2ASE(DropInCalculator):
    """``aimnet.calculators.AIMNet2ASE`` with ``probe=``. ``base_calc``: a calculator, a
    model file or name, or a list of them (an ensemble: ``results`` then also hold
    ``energy_std``, ``forces_std``, ``charges_std`` and ``energy_members``). With a probe,
    ``results`` hold ``reliability`` and ``atom_importance`` from the same forward pass
    (``probe_base.attach``); ``probe_policy``: "ignore", "warn" (default) or "raise";
    ``probe_threshold``: P(reliable) below which it acts. Both are ASE ``parameters``.

    One class, two forms (``probe_base.integrations.calculator.DropInCalculator``): without ``probe`` the
    object made is aimnet's own ``AIMNet2ASE`` (or its ensemble subclass), unchanged, and
    ``isinstance(calc, AIMNet2ASE)`` holds for it; with ``probe``, this class (a ``ProbedCalculator``)."""

    adapter = AIMNet2Adapter

    def __init__(
        self, base_calc="aimnet2", charge=0, mult=1, *, probe=None, probe_policy="warn", probe_threshold=None, **kwargs
    ):
        # spelled out for the signature; DropInCalculator does the work
        super().__init__(
            base_calc, charge, mult, probe=probe, probe_policy=probe_policy, probe_threshold=probe_threshold, **kwargs
        )

    @classmethod
    def framework_types(cls):
        return (_aimnet_ase(),)

    @classmethod
    def framework_calculator(cls, base_calc="aimnet2", charge=0, mult=1, **kwargs):
        base = _base_calculator(base_calc)
        ase_class = ensemble_ase_class() if isinstance(base, AIMNet2Ensemble) else _aimnet_ase()
        return ase_class(base, charge=charge, mult=mult, **kwargs)


class ProbedAIMNet2Calculator(PolicyParameters):
    """An ``AIMNet2Calculator`` (or ensemble) whose outputs carry PROBE's reliability.

    Every other attribute is the wrapped calculator's. Features are read by hooks on the
    first model during the call that gives energies and forces. ``parameters`` holds
    ``policy`` and ``threshold`` as an ASE calculator's would; ``set`` changes them."""

    def __init__(self, calculator, probe, policy="warn", threshold=None, allow_mismatch=False):
        from .plugin import _CALCULATORS

        models = getattr(calculator, "models", None) or [calculator.model]
        for calc in getattr(calculator, "calculators", [calculator]):
            _CALCULATORS[calc.model] = calc
        self.calculator = calculator
        self.artifact, self.adapter = probe_backbone(probe, AIMNet2Adapter, models, allow_mismatch)
        self.parameters = Parameters(policy="warn", threshold=None)
        self.set(policy=policy, threshold=threshold)

    def set(self, **kwargs):
        """``calc.set(policy="raise", threshold=0.8)``: the next call acts on them."""
        unknown = sorted(set(kwargs) - set(self.parameters))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; this calculator has {sorted(self.parameters)}")
        self._check_policy(kwargs)
        changed = {key: value for key, value in kwargs.items() if self.parameters[key] != value}
        self.parameters.update(kwargs)
        self._policy_from_parameters()
        return changed

    def __getattr__(self, name):
        if name == "calculator":
            raise AttributeError(name)
        return getattr(self.calculator, name)

    def __call__(self, data, forces=False, stress=False, hessian=False, validate_species=True):
        return self.eval(data, forces=forces, stress=stress, hessian=hessian, validate_species=validate_species)

    def eval(self, data, forces=False, stress=False, hessian=False, validate_species=True):
        from probe_base.scoring import score
        from probe_base.store import FeatureSet

        coord = torch.as_tensor(data["coord"])
        numbers = torch.as_tensor(data["numbers"]).reshape(-1).cpu().numpy()
        if coord.ndim == 3:
            mol = np.repeat(np.arange(coord.shape[0]), coord.shape[1])
        elif data.get("mol_idx") is not None:
            mol = torch.as_tensor(data["mol_idx"]).reshape(-1).cpu().numpy()
        else:
            mol = np.zeros(len(numbers), dtype=np.int64)
        with self.adapter.capture() as captured:
            out = self.calculator(
                data, forces=forces, stress=stress, hessian=hessian, validate_species=validate_species
            )
        features = self.adapter.features_from_capture(captured, len(numbers))
        real = numbers > 0
        energies = out["energy_members"][..., 0] if "energy_members" in out else out["energy"]
        energies = energies.detach().to(torch.float64).reshape(-1).cpu().numpy()
        counts = np.bincount(mol[real], minlength=len(energies))
        X = FeatureSet(features[real], numbers[real], np.concatenate([[0], np.cumsum(counts)]), energies)
        scores = score(self.artifact, X)
        shape = numbers.shape if coord.ndim < 3 else tuple(coord.shape[:2])

        def per_atom(maps):
            flat = np.zeros(len(numbers))
            flat[real] = np.concatenate(maps)
            return torch.as_tensor(flat).reshape(shape)

        per_structure = out["energy"].shape
        out["reliability"] = torch.as_tensor(scores.p_reliable, dtype=torch.float64).reshape(per_structure)
        out["in_domain"] = torch.as_tensor(scores.in_domain).reshape(per_structure)
        out["atom_importance"] = per_atom(scores.importance)
        if scores.novelty is not None:
            out["novelty"] = torch.as_tensor(scores.novelty, dtype=torch.float64).reshape(per_structure)
            out["atom_novelty"] = per_atom(scores.atom_novelty)
        if scores.atom_error is not None:
            out["atom_error"] = per_atom(scores.atom_error)
        self._apply_policy(scores, numbers[real], X.offsets)
        return out

    def _apply_policy(self, scores, numbers, offsets):
        from ase.data import chemical_symbols

        policy = self.reliability_policy
        bad = [
            i for i, (p, inside) in enumerate(zip(scores.p_reliable, scores.in_domain)) if policy.unreliable(p, inside)
        ]
        if policy.policy == "ignore" or not bad:
            return
        first = bad[0]
        symbols = [chemical_symbols[z] for z in numbers[offsets[first] : offsets[first + 1]]]
        message = policy.message(float(scores.p_reliable[first]), symbols, scores, first, label=f"structure {first}")
        if len(bad) > 1:
            message += f" (and {len(bad) - 1} more: structures {bad[1:10]})"
        policy.apply(message, scores.p_reliable)


class AIMNet2Calculator(DropIn, ProbedAIMNet2Calculator):
    """``aimnet.calculators.AIMNet2Calculator`` with ``probe=``; ``model`` may be a list of
    models (an ``AIMNet2Ensemble``, the first is the probed backbone). With a probe, the
    output dict of ``calc(data, forces=True)`` also holds ``reliability`` (P(reliable),
    one per structure), ``in_domain``, ``novelty`` and per atom ``atom_importance``,
    ``atom_novelty``, ``atom_error`` (0 for padding atoms). ``probe_threshold``: P(reliable)
    below which ``probe_policy`` acts (default: the probe's); both are in ``parameters``.

    One class, two forms (``probe_base.integrations.calculator.DropIn``): without ``probe`` the object
    made is aimnet's ``AIMNet2Calculator`` (or an ``AIMNet2Ensemble``), unchanged, and
    ``isinstance(calc, AIMNet2Calculator)`` holds for it; with ``probe``, this class."""

    def __init__(self, model="aimnet2", *, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):
        super().__init__(
            self.framework_calculator(model, **kwargs), probe, policy=probe_policy, threshold=probe_threshold
        )

    @classmethod
    def framework_types(cls):
        from aimnet.calculators import AIMNet2Calculator as _AIMNet2Calculator

        return (_AIMNet2Calculator, AIMNet2Ensemble)

    @classmethod
    def framework_calculator(cls, model="aimnet2", **kwargs):
        return _base_calculator(model, **kwargs)
