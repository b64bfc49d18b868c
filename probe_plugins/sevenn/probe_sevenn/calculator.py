"""A drop-in ``SevenNetCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations

from probe_base.integrations.calculator import DropInCalculator

from .plugin import SevenNetAdapter


class SevenNetCalculator(DropInCalculator):
    """``sevenn.calculator.SevenNetCalculator`` with three extra keywords.

    One class, two forms (``probe_base.integrations.calculator.DropInCalculator``): without ``probe``
    the object made is sevenn's own ``SevenNetCalculator``, unchanged, and ``isinstance(calc,
    SevenNetCalculator)`` holds for it; with ``probe`` it is this class, a ``ProbedCalculator``.

    ``probe``: a probe file (or loaded probe) trained on this model. With it, ``results``
    also hold ``reliability`` (P(reliable)) and ``atom_importance``, read from the same
    forward pass that gives energies and forces. ``probe_policy``: "ignore", "warn"
    (default) or "raise" (``UnreliablePrediction``). ``probe_threshold``: P(reliable) below
    which the policy acts (default: the probe's). Both are ASE ``parameters``
    (``calc.set(policy="raise")``).
    All other arguments are sevenn's, e.g. ``SevenNetCalculator("7net-0", device="cpu")``.
    """

    adapter = SevenNetAdapter
