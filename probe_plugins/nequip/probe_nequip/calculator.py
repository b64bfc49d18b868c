"""A drop-in ``NequIPCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations

import torch
from ase.calculators.calculator import all_changes
from nequip.integrations.ase import NequIPCalculator as _NequIPCalculator

from probe_base.errors import InputError
from probe_base.integrations.calculator import DropInCalculator

from .plugin import OPAQUE, NequIPAdapter, _default_dtype


class Float64NequIPCalculator(_NequIPCalculator):
    """nequip's calculator, computing with nequip's float64 default dtype for its data
    whatever default the process uses."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        with _default_dtype(torch.float64):
            super().calculate(atoms, list(properties), system_changes)


class NequIPCalculator(DropInCalculator):
    """``nequip.integrations.ase.NequIPCalculator`` whose factories take three extra keywords.

    One class, two forms (``probe_base.integrations.calculator.DropInCalculator``): without ``probe`` a
    factory returns nequip's own calculator (``isinstance(calc, NequIPCalculator)`` holds);
    with ``probe`` this class, a ``ProbedCalculator`` whose ``results`` also hold
    ``reliability`` (P(reliable)) and ``atom_importance``, read from the same forward pass
    that gives energies and forces. ``probe_policy``: "ignore", "warn" (default) or "raise"
    (``UnreliablePrediction``). ``probe_threshold``: P(reliable) below which the policy acts
    (default: the probe's). Both are ASE ``parameters`` (``calc.set(policy="raise")``).

    The probe needs the eager model: ``NequIPCalculator.from_saved_model("m.nequip.zip",
    probe=...)`` (or ``_from_saved_model``, nequip's name). A compiled model
    (``from_compiled_model``) is opaque and is refused.
    """

    adapter = NequIPAdapter

    @classmethod
    def framework_calculator(cls, calculator):
        return calculator  # made by a factory below: nequip has no plain constructor form

    @classmethod
    def from_saved_model(cls, model_path, device="cpu", *, probe=None, probe_policy="warn", probe_threshold=None, **kw):
        """The eager model of a ``.nequip.zip`` package or a ``.ckpt`` checkpoint (nequip's
        ``_from_saved_model``); the form a probe can read."""
        calculator = Float64NequIPCalculator._from_saved_model(model_path, device=device, **kw)
        return cls(calculator, probe=probe, probe_policy=probe_policy, probe_threshold=probe_threshold)

    _from_saved_model = from_saved_model

    @classmethod
    def from_compiled_model(cls, compile_path, *args, probe=None, **kwargs):
        if probe is not None:
            raise InputError(
                f"{compile_path}: cannot carry a probe; {OPAQUE}. "
                "Load it with NequIPCalculator.from_saved_model(..., probe=...)"
            )
        return Float64NequIPCalculator.from_compiled_model(compile_path, *args, **kwargs)
