"""A drop-in ``SevenNetCalculator`` that can carry a PROBE reliability probe."""

from __future__ import annotations


def SevenNetCalculator(*args, probe=None, probe_policy="warn", **kwargs):  # noqa: N802
    """``sevenn.calculator.SevenNetCalculator`` with two extra keywords.

    ``probe``: a probe file (or loaded probe) trained on this model. Without it, sevenn's
    own calculator is returned unchanged. With it, the calculator is wrapped by
    ``probe_base.attach``: ``results`` also hold ``reliability`` (P(reliable)) and
    ``atom_importance``, read from the same forward pass that gives energies and forces.
    ``probe_policy``: "ignore", "warn" (default) or "raise" (``UnreliablePrediction``).
    All other arguments are sevenn's, e.g. ``SevenNetCalculator("7net-0", device="cpu")``.
    """
    from sevenn.calculator import SevenNetCalculator as _SevenNetCalculator

    calculator = _SevenNetCalculator(*args, **kwargs)
    if probe is None:
        return calculator
    from probe_base import attach

    from .plugin import SevenNetAdapter

    return attach(calculator, probe, adapter=SevenNetAdapter, policy=probe_policy)
