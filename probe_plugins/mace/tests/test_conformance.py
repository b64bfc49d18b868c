"""The core's adapter conformance suite, run on a tiny MACE ensemble.

Fixtures ``adapter`` (an ensemble adapter) and ``structures`` come from conftest.py.
"""

import pytest

testing = pytest.importorskip(
    "probe_base.testing", reason="probe_base.testing (the conformance suite) not available yet"
)
AdapterConformance = testing.AdapterConformance


class TestMACEConformance(AdapterConformance):
    pass
