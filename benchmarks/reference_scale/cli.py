"""``python -m benchmarks reference-scale``: its options (sizes, index kinds, timing rounds,
the MD run, SevenNet-0's environment)."""

from __future__ import annotations

from benchmarks.reference_scale.experiment import SIZES, run


def register(sub):
    s = sub.add_parser("reference-scale", help="domain reference index: build, memory, recall, query cost vs size")
    s.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    s.add_argument("--base", type=int, default=2000, help="real EMT clusters read by the backbone")
    s.add_argument("--noise", type=float, default=0.1, help="replica noise, in feature standard deviations")
    s.add_argument("--queries", type=int, default=300, help="query atoms for recall and query time")
    s.add_argument("--exact-compare", type=int, default=10**6, help="also the exact index up to this size")
    s.add_argument(
        "--kinds", nargs="+", default=["ivfsq", "ivfpq"], choices=["ivfsq", "ivfpq"], help="approximate kinds built"
    )
    s.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds of the MD step's query")
    s.add_argument("--md-steps", type=int, default=100, help="steps of the MD run the kept search is timed on")
    s.add_argument("--md-rounds", type=int, default=3, help="interleaved rounds of that MD run")
    s.add_argument(
        "--sevenn-python",
        default=None,
        help="a Python with sevenn (e.g. .nox/sevenn/bin/python): SevenNet-0's step timed in this run",
    )
    s.set_defaults(handler=run)
