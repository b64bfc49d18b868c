"""AIMNet2 backbone plugin for mlip-probe.

    from probe_aimnet import AIMNet2ASE
    atoms.calc = AIMNet2ASE("seed1.pt", probe="seed1.probe")        # one flag
    atoms.get_potential_energy(); atoms.calc.results["reliability"]

    AIMNet2ASE(["seed1.pt", "seed2.pt", "seed3.pt", "seed4.pt"])     # an ensemble:
    # results["energy_std"], ["forces_std"], ["charges_std"], ["energy_members"]

or, on the command line, ``--adapter aimnet`` with v2 ``.pt`` files (several = ensemble).
"""

from .calculator import AIMNet2ASE, AIMNet2Calculator, ProbedAIMNet2Calculator
from .ensemble import AIMNet2Ensemble
from .plugin import AIMNet2Adapter

__all__ = ["AIMNet2Adapter", "AIMNet2ASE", "AIMNet2Calculator", "AIMNet2Ensemble", "ProbedAIMNet2Calculator"]
