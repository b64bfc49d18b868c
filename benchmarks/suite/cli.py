"""``python -m benchmarks run | report | cost``: the suite's commands, with the package
docstring as the help of ``run``."""

from __future__ import annotations

import argparse

from benchmarks import suite as package
from benchmarks.backbones import find_models
from benchmarks.common import BACKBONES, DATASETS, SIZES
from benchmarks.suite.cost import remeasure_cost
from benchmarks.suite.readme import report
from benchmarks.suite.runner import run


def available_backbones():
    """Backbones whose plugin imports in this environment."""
    from probe_base.plugins import get_adapter_class

    found = []
    for backbone in BACKBONES:
        try:
            get_adapter_class(backbone)
            found.append(backbone)
        except Exception:  # noqa: BLE001 - not installed here: another environment runs it
            continue
    return found


def run_command(args):
    import torch

    torch.set_num_threads(1)
    if not args.all:
        if not (args.backbone and args.dataset):
            raise SystemExit("run: give --backbone and --dataset, or --all")
        run(args.backbone, args.dataset, args.size, args.bootstrap, not args.no_train)
        return 0
    for backbone in available_backbones():
        for dataset in DATASETS:
            for size in SIZES:
                train = size == "small" and not args.no_train
                if len(find_models(backbone, dataset, size)) < 2 and not train:
                    print(f"{backbone}/{dataset}/{size}: no cached models, skipped", flush=True)
                    continue
                run(backbone, dataset, size, args.bootstrap, train)
    return report()


def cost_command(args):
    import torch

    torch.set_num_threads(1)
    remeasure_cost(args.backbone, args.dataset, args.size, args.rounds)
    return 0


def register(sub):
    r = sub.add_parser(
        "run",
        help="the suite: one backbone x dataset x size, or --all",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--backbone", choices=BACKBONES)
    r.add_argument("--dataset", choices=DATASETS)
    r.add_argument("--size", choices=SIZES, default="small")
    r.add_argument(
        "--all",
        action="store_true",
        help="every backbone importable here x dataset x size whose models are cached "
        "(small ones are trained if missing)",
    )
    r.add_argument("--no-train", action="store_true", help="use cached models only")
    r.add_argument("--bootstrap", type=int, default=1000)
    r.set_defaults(handler=run_command)
    sub.add_parser("report", help="results/README.md from every suite result (and the speed results)").set_defaults(
        handler=report
    )
    c = sub.add_parser("cost", help="measure a finished run's cost table again (quiet machine)")
    c.add_argument("--backbone", choices=BACKBONES, required=True)
    c.add_argument("--dataset", choices=DATASETS, required=True)
    c.add_argument("--size", choices=SIZES, default="small")
    c.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    c.set_defaults(handler=cost_command)
