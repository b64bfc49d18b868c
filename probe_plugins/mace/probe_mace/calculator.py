"""A drop-in ``MACECalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations


def MACECalculator(*args, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):  # noqa: N802
    """``mace.calculators.MACECalculator`` with three extra keywords.

    ``probe``: a probe file (or loaded probe) trained on the first model of
    ``model_paths``. Without it, mace's own calculator is returned unchanged. With it,
    the calculator is wrapped by ``probe_base.attach``: ``results`` also hold
    ``reliability`` (P(reliable)) and ``atom_importance``; features are read from the
    same forward pass that gives energies and forces.
    ``probe_policy``: "ignore", "warn" (default) or "raise" (``UnreliablePrediction``).
    ``probe_threshold``: P(reliable) below which the policy acts (default: the probe's).
    All other arguments are mace's, e.g. ``MACECalculator(model_paths=[...], device="cpu")``.
    """
    from mace.calculators import MACECalculator as _MACECalculator

    from probe_base.calculator import with_probe

    from .plugin import MACEAdapter

    return with_probe(_MACECalculator(*args, **kwargs), MACEAdapter, probe, probe_policy, probe_threshold)
