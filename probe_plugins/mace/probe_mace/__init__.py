"""MACE backbone plugin for mlip-probe.

    from probe_mace import MACECalculator
    calc = MACECalculator(model_paths=["seed1.model"], device="cpu", probe="seed1.probe")
    atoms.calc = calc; atoms.get_potential_energy(); calc.results["reliability"]

or, on the command line, ``--adapter mace`` with ``.model`` files (several = ensemble).
"""

from .calculator import MACECalculator
from .plugin import MACEAdapter

__all__ = ["MACEAdapter", "MACECalculator"]
