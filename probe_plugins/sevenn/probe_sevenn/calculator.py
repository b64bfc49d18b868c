"""A drop-in ``SevenNetCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations


def SevenNetCalculator(*args, probe=None, probe_policy="warn", probe_threshold=None, **kwargs):  # noqa: N802
    """``sevenn.calculator.SevenNetCalculator`` with three extra keywords.

    ``probe``: a probe file (or loaded probe) trained on this model. Without it, sevenn's
    own calculator is returned unchanged. With it, the calculator is wrapped by
    ``probe_base.attach``: ``results`` also hold ``reliability`` (P(reliable)) and
    ``atom_importance``, read from the same forward pass that gives energies and forces.
    ``probe_policy``: "ignore", "warn" (default) or "raise" (``UnreliablePrediction``).
    ``probe_threshold``: P(reliable) below which the policy acts (default: the probe's).
    All other arguments are sevenn's, e.g. ``SevenNetCalculator("7net-0", device="cpu")``.
    """
    from sevenn.calculator import SevenNetCalculator as _SevenNetCalculator

    from probe_base.calculator import with_probe

    from .plugin import SevenNetAdapter

    return with_probe(_SevenNetCalculator(*args, **kwargs), SevenNetAdapter, probe, probe_policy, probe_threshold)
