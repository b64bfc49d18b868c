"""The core's calculator conformance suite on MyNameCalculator (fixtures in conftest.py):
the framework's results unchanged, PROBE's from the same pass, one class with and without
a probe (``isinstance``), policy and threshold as ASE parameters."""

from probe_base.testing import CalculatorConformance


class TestMyNameCalculatorConformance(CalculatorConformance):
    pass
