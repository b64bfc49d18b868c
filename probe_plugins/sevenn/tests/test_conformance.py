"""The core's adapter conformance suite on SevenNet-0 (11Jul2024 + 22May2024 as the
ensemble). Fixtures ``adapter`` and ``structures`` come from conftest.py."""

from probe_base.testing import AdapterConformance


class TestSevenNetConformance(AdapterConformance):
    pass
