"""``python -m benchmarks practice guarantee|md``: their options, with the package docstring
as the help."""

from __future__ import annotations

import argparse

from benchmarks import practice_mace as package
from benchmarks.practice_mace.guarantee import guarantee
from benchmarks.practice_mace.md import md


def practice(args):
    import torch

    torch.set_num_threads(args.threads)
    {"guarantee": guarantee, "md": md}[args.practice](args)
    return 0


def register(sub):
    parser = sub.add_parser(
        "practice",
        help="MACE in practice: the risk guarantee (SGR, CRC) and the MD watchdog",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts = parser.add_subparsers(dest="practice", required=True)
    g = parts.add_parser("guarantee")
    g.add_argument("--datasets", nargs="+", default=["ethanol", "3bpa"])
    g.add_argument("--splits", type=int, default=200)
    g.add_argument("--delta", type=float, default=0.1)
    g.add_argument(
        "--quantile", type=float, default=0.5, help="unreliable = error above this quantile of the fitting errors"
    )
    g.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    m = parts.add_parser("md")
    m.add_argument("--temperatures", nargs="+", type=int, default=[300, 1500])
    m.add_argument("--steps", type=int, default=2000)
    m.add_argument("--timestep", type=float, default=0.5)
    m.add_argument("--patience", type=int, default=10)
    m.add_argument("--alpha", type=float, default=0.15)
    m.add_argument("--quantile", type=float, default=0.8)
    m.add_argument("--delta", type=float, default=0.1)
    for p in (g, m):
        p.add_argument("--threads", type=int, default=1)
        p.set_defaults(handler=practice)
