"""The core's adapter conformance suite, run on a tiny MACE ensemble.

Fixtures ``adapter`` (an ensemble of three model files) and ``structures`` come from
conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestMACEConformance(AdapterConformance):
    pass


import pytest  # noqa: E402
from probe_mace import MACECalculator  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestMACECalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self, model_paths):
        return lambda **kw: MACECalculator(model_paths=str(model_paths[0]), device="cpu", **kw)

    def test_one_class_with_and_without_probe(self, make_calculator, structures, probe_path):
        """Issue 27: ``isinstance(calc, MACECalculator)`` for both forms, and the probe's
        options are ASE parameters that ``set`` changes."""
        from mace.calculators import MACECalculator as Original

        from probe_base.calculator import ProbedCalculator
        from probe_base.errors import UnreliablePrediction

        plain = make_calculator()
        assert isinstance(plain, MACECalculator) and type(plain) is Original
        assert not isinstance(plain, ProbedCalculator)
        probed = make_calculator(probe=probe_path, probe_policy="ignore")
        assert isinstance(probed, MACECalculator) and isinstance(probed, ProbedCalculator)
        assert probed.parameters["policy"] == "ignore" and probed.parameters["threshold"] is None
        atoms = structures[0].copy()
        atoms.calc = probed
        atoms.get_potential_energy()
        probed.set(policy="raise", threshold=1.01)  # no P reaches 1.01: the next pass raises
        assert probed.parameters["policy"] == "raise" and probed.threshold == 1.01
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()
