"""The core's calculator conformance suite on MyNameCalculator (fixtures in conftest.py)."""

import pytest
from probe_myname import MyNameAdapter, MyNameCalculator

from probe_base.calculator import ProbedCalculator
from probe_base.errors import UnreliablePrediction
from probe_base.testing import CalculatorConformance


class TestMyNameCalculatorConformance(CalculatorConformance):
    def test_one_class_with_and_without_probe(self, make_calculator, structures, probe_path):
        """``isinstance(calc, MyNameCalculator)`` for both forms; without a probe it is
        MyName's own calculator, with one the probe's options are ASE parameters."""
        plain = make_calculator()
        assert type(plain) is MyNameAdapter.calculator_class(), "without probe: the framework's calculator"
        assert isinstance(plain, MyNameCalculator) and not isinstance(plain, ProbedCalculator)
        probed = make_calculator(probe=probe_path, probe_policy="ignore")
        assert isinstance(probed, MyNameCalculator) and isinstance(probed, ProbedCalculator)
        assert probed.parameters["policy"] == "ignore"
        atoms = structures[0].copy()
        atoms.calc = probed
        atoms.get_potential_energy()
        probed.set(policy="raise", threshold=1.01)  # no P reaches 1.01: the next pass raises
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()
