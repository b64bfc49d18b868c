"""``python -m benchmarks ood``: a backbone's run and the report, with the package
docstring as its help."""

from __future__ import annotations

import argparse

from benchmarks import ood as package
from benchmarks.common import BACKBONES
from benchmarks.ood.experiment import run
from benchmarks.ood.page import report


def ood_command(args):
    import torch

    torch.set_num_threads(1)
    if not args.report and args.backbone:
        run(args.backbone, args.bootstrap, args.alpha)
    return report()


def register(sub):
    o = sub.add_parser(
        "ood",
        help="out-of-distribution benchmark on GFN2-xTB labels",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    o.add_argument("--backbone", choices=BACKBONES)
    o.add_argument("--report", action="store_true", help="results/ood.md from every backbone's JSON")
    o.add_argument("--bootstrap", type=int, default=200)
    o.add_argument("--alpha", type=float, default=0.02)
    o.set_defaults(handler=ood_command)
