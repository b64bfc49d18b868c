"""The conformance suite, run on the built-in toy adapter (and so tested itself)."""

import ase.io
import pytest

from probe_base.testing import AdapterConformance


class TestToyAdapter(AdapterConformance):
    @pytest.fixture(scope="class")
    def adapter(self, toy_adapter):
        return toy_adapter

    @pytest.fixture(scope="class")
    def structures(self, toy_files):
        return ase.io.read(toy_files["heldout"], ":4")
