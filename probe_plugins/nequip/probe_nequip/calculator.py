"""A drop-in ``NequIPCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, all_changes
from nequip.integrations.ase import NequIPCalculator as _NequIPCalculator

from .plugin import _default_dtype


class NequIPCalculator(_NequIPCalculator):
    """``nequip.integrations.ase.NequIPCalculator`` with three extra keywords, accepted by
    the constructor and by every factory (``from_saved_model``, ``_from_saved_model``,
    ``from_compiled_model``), which pass them on to it.

    ``probe``: a probe file (or loaded probe) trained on this model. Without it the
    calculator behaves exactly as nequip's. With it, ``probe_base.attach`` hooks the model:
    ``results`` also hold ``reliability`` (P(reliable)) and ``atom_importance``, read from
    the same forward pass that gives energies and forces; ``atoms.info`` /
    ``atoms.arrays`` carry them into extxyz trajectories.
    ``probe_policy``: "ignore", "warn" (default) or "raise" (``UnreliablePrediction``).
    ``probe_threshold``: P(reliable) below which the policy acts (default: the probe's).

    The probe needs the eager model: ``NequIPCalculator.from_saved_model("m.nequip.zip",
    probe=...)``. A compiled model (``from_compiled_model``) is opaque and is refused.
    """

    def __init__(self, model, device, *args, probe=None, probe_policy="warn",
                 probe_threshold=None, **kwargs):
        super().__init__(model, device, *args, **kwargs)
        self.probed = None
        if probe is None:
            return
        from probe_base import attach

        from .plugin import NequIPAdapter

        # the probed calculator wraps a plain nequip calculator on the same model object
        plain = _NequIPCalculator(self.model, self.device,
                                  energy_units_to_eV=self.energy_units_to_eV,
                                  length_units_to_A=self.length_units_to_A,
                                  transforms=self.transforms)
        self.probed = attach(plain, probe, adapter=NequIPAdapter, policy=probe_policy,
                             threshold=probe_threshold)
        self.implemented_properties = list(self.probed.implemented_properties)

    @classmethod
    def from_saved_model(cls, model_path, device="cpu", **kwargs):
        """The eager model of a ``.nequip.zip`` package or a ``.ckpt`` checkpoint (nequip's
        ``_from_saved_model``); the form a probe can read."""
        return cls._from_saved_model(model_path, device=device, **kwargs)

    @classmethod
    def from_compiled_model(cls, compile_path, *args, probe=None, **kwargs):
        if probe is not None:
            from probe_base.errors import InputError

            from .plugin import OPAQUE

            raise InputError(f"{compile_path}: cannot carry a probe; {OPAQUE}. "
                             "Load it with NequIPCalculator.from_saved_model(..., probe=...)")
        return super().from_compiled_model(compile_path, *args, **kwargs)

    @property
    def policy(self):
        return self.probed.policy if self.probed is not None else None

    @policy.setter
    def policy(self, value):
        self.probed.policy = value

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        # nequip's global float64 default dtype for its data, whatever the process uses
        with _default_dtype(torch.float64):
            if self.probed is None:
                return super().calculate(atoms, list(properties), system_changes)
            Calculator.calculate(self, atoms)
            try:
                self.probed.calculate(atoms, list(properties), system_changes)
            finally:
                self.results = dict(self.probed.results)
