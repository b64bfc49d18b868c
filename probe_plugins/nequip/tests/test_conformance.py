"""The core's adapter conformance suite, run on a tiny NequIP ensemble trained here.

Fixtures ``adapter`` (a package and a checkpoint of two trainings) and ``structures``
come from conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestNequIPConformance(AdapterConformance):
    pass


import pytest  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestNequIPCalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self, model_paths):
        from probe_nequip import NequIPCalculator

        return lambda **kw: NequIPCalculator.from_saved_model(
            str(model_paths[0]), device="cpu", chemical_species_to_atom_type_map=True, **kw
        )
