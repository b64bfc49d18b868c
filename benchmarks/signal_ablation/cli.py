"""``python -m benchmarks signal-ablation | ablation-table``: the options of both commands,
with the package docstring as the help of ``signal-ablation``."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import signal_ablation as package
from benchmarks.common import DATASETS
from benchmarks.signal_ablation.experiment import signal_ablation
from benchmarks.signal_ablation.recipes import RECIPES
from benchmarks.signal_ablation.tables import ablation_table_command


def register(sub):
    s = sub.add_parser(
        "signal-ablation",
        help="PROBE recipes vs ensemble disagreement over backbone x probe seeds, and the cost",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--backbone", default="mace")
    s.add_argument("--dataset", default="ethanol", choices=DATASETS)
    s.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    s.add_argument("--probe-seeds", type=int, default=5)
    s.add_argument("--target", default="energy")
    s.add_argument("--threshold", type=float, default=None, help="absolute threshold (default: median)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--remove-offset", action="store_true", help="label errors around the fitting half's mean signed error"
    )
    s.add_argument("--tag", default="", help="suffix of the output files (separate ablation runs)")
    s.set_defaults(handler=signal_ablation)
    t = sub.add_parser("ablation-table", help="results/ablation.md from every signal-ablation run")
    t.add_argument(
        "--bootstrap",
        type=Path,
        default=None,
        metavar="JSON",
        help="instead, one run's per-seed bootstrap intervals (<run>_bootstrap.md)",
    )
    t.set_defaults(handler=ablation_table_command)
