"""A drop-in ``MACECalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations

from probe_base.integrations.calculator import DropInCalculator

from .plugin import MACEAdapter


class MACECalculator(DropInCalculator):
    """``mace.calculators.MACECalculator`` with three extra keywords.

    One class, two forms (``probe_base.integrations.calculator.DropInCalculator``): without ``probe``
    the object made is mace's own ``MACECalculator``, unchanged, and ``isinstance(calc,
    MACECalculator)`` holds for it; with ``probe`` it is this class, a ``ProbedCalculator``.

    ``probe``: a probe file (or loaded probe) trained on the first model of
    ``model_paths``. With it, ``results`` also hold ``reliability`` (P(reliable)) and
    ``atom_importance``; features are read from the same forward pass that gives energies
    and forces. ``probe_policy``: "ignore", "warn" (default) or "raise"
    (``UnreliablePrediction``). ``probe_threshold``: P(reliable) below which the policy acts
    (default: the probe's). Both are ASE ``parameters`` (``calc.set(policy="raise")``).
    All other arguments are mace's, e.g. ``MACECalculator(model_paths=[...], device="cpu")``.
    """

    adapter = MACEAdapter
