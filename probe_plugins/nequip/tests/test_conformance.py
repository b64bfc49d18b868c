"""The core's adapter conformance suite, run on a tiny NequIP ensemble trained here.

Fixtures ``adapter`` (a package and a checkpoint of two trainings) and ``structures``
come from conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestNequIPConformance(AdapterConformance):
    pass
