"""SevenNet backbone plugin for mlip-probe, made by copying ``plugin_template/``.

    from probe_sevenn import SevenNetCalculator
    calc = SevenNetCalculator("7net-0", device="cpu", probe="7net-0.probe")
    atoms.calc = calc; atoms.get_potential_energy(); calc.results["reliability"]

or, on the command line, ``--adapter sevenn --model 7net-0 7net-0_22May2024 7net-l3i5``
(checkpoint files or the pretrained names bundled with sevenn; several = an ensemble).
"""

from .calculator import SevenNetCalculator
from .plugin import SevenNetAdapter

__all__ = ["SevenNetAdapter", "SevenNetCalculator"]
