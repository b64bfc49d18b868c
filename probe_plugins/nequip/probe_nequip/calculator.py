"""A drop-in ``NequIPCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations

import torch
from ase.calculators.calculator import all_changes
from nequip.integrations.ase import NequIPCalculator as _NequIPCalculator

from .plugin import _default_dtype


class NequIPCalculator(_NequIPCalculator):
    """``nequip.integrations.ase.NequIPCalculator`` whose factories take three extra keywords.

    ``probe``: a probe file (or loaded probe) trained on this model. Without it a factory
    returns this calculator, which behaves exactly as nequip's. With it, the calculator is
    wrapped by ``probe_base.attach`` (through ``probe_base.calculator.with_probe``, the
    factory form of the other plugins' ``DropInCalculator``, a ``ProbedCalculator``):
    ``results`` also hold ``reliability`` (P(reliable)) and ``atom_importance``, read from
    the same forward pass that gives energies and forces;
    ``atoms.info`` / ``atoms.arrays`` carry them into extxyz trajectories.
    ``probe_policy``: "ignore", "warn" (default) or "raise" (``UnreliablePrediction``).
    ``probe_threshold``: P(reliable) below which the policy acts (default: the probe's).

    The probe needs the eager model: ``NequIPCalculator.from_saved_model("m.nequip.zip",
    probe=...)`` (or ``_from_saved_model``, nequip's name). A compiled model
    (``from_compiled_model``) is opaque and is refused.
    """

    @classmethod
    def from_saved_model(cls, model_path, device="cpu", **kwargs):
        """The eager model of a ``.nequip.zip`` package or a ``.ckpt`` checkpoint (nequip's
        ``_from_saved_model``); the form a probe can read."""
        return cls._from_saved_model(model_path, device=device, **kwargs)

    @classmethod
    def _from_saved_model(cls, model_path, *args, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):
        from probe_base.calculator import with_probe

        from .plugin import NequIPAdapter

        calculator = super()._from_saved_model(model_path, *args, **kwargs)
        return with_probe(calculator, NequIPAdapter, probe, probe_policy, probe_threshold)

    @classmethod
    def from_compiled_model(cls, compile_path, *args, probe=None, **kwargs):
        if probe is not None:
            from probe_base.errors import InputError

            from .plugin import OPAQUE

            raise InputError(
                f"{compile_path}: cannot carry a probe; {OPAQUE}. "
                "Load it with NequIPCalculator.from_saved_model(..., probe=...)"
            )
        return super().from_compiled_model(compile_path, *args, **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        # nequip's global float64 default dtype for its data, whatever the process uses
        with _default_dtype(torch.float64):
            super().calculate(atoms, list(properties), system_changes)
