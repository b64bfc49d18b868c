"""The core's adapter conformance suite on SevenNet-0 (11Jul2024 + 22May2024 as the
ensemble). Fixtures ``adapter`` and ``structures`` come from conftest.py."""

from probe_base.testing import AdapterConformance


class TestSevenNetConformance(AdapterConformance):
    pass


import pytest  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestSevenNetCalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self):
        from conftest import ENSEMBLE
        from probe_sevenn import SevenNetCalculator

        return lambda **kw: SevenNetCalculator(ENSEMBLE[0], device="cpu", **kw)

    def test_one_class_with_and_without_probe(self, make_calculator, structures, probe_path):
        """Issue 27: ``isinstance(calc, SevenNetCalculator)`` for both forms, and the probe's
        options are ASE parameters that ``set`` changes."""
        from probe_sevenn import SevenNetCalculator
        from sevenn.calculator import SevenNetCalculator as Original

        from probe_base.calculator import ProbedCalculator
        from probe_base.errors import UnreliablePrediction

        plain = make_calculator()
        assert isinstance(plain, SevenNetCalculator) and type(plain) is Original
        assert not isinstance(plain, ProbedCalculator)
        probed = make_calculator(probe=probe_path, probe_policy="ignore")
        assert isinstance(probed, SevenNetCalculator) and isinstance(probed, ProbedCalculator)
        assert probed.parameters["policy"] == "ignore" and probed.parameters["threshold"] is None
        atoms = structures[0].copy()
        atoms.calc = probed
        atoms.get_potential_energy()
        probed.set(policy="raise", threshold=1.01)  # no P reaches 1.01: the next pass raises
        assert probed.parameters["policy"] == "raise" and probed.threshold == 1.01
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()
