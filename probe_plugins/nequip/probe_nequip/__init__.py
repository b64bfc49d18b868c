"""NequIP backbone plugin for mlip-probe.

    from probe_nequip import NequIPCalculator
    calc = NequIPCalculator.from_saved_model("seed1.nequip.zip", device="cpu", probe="seed1.probe")
    atoms.calc = calc; atoms.get_potential_energy(); calc.results["reliability"]

or, on the command line, ``--adapter nequip`` with ``.nequip.zip`` / ``.ckpt`` files
(several = an ensemble), or, in a ``nequip-train`` config, the Lightning callback
``probe_nequip.ProbeCallback`` (PROBE fitted and scored on the test set).

nequip is imported lazily: listing adapters does not import it.
"""

from .plugin import NequIPAdapter

__all__ = ["NequIPAdapter", "NequIPCalculator", "ProbeCallback"]


def __getattr__(name):
    if name == "NequIPCalculator":
        from .calculator import NequIPCalculator

        return NequIPCalculator
    if name == "ProbeCallback":
        from .callback import ProbeCallback

        return ProbeCallback
    raise AttributeError(f"module 'probe_nequip' has no attribute {name!r}")
