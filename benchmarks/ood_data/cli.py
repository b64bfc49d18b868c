"""``python -m benchmarks ood-data``: the stages of the OOD benchmark's data (``label``,
``train``, ``extract`` or ``all``), with the package docstring as its help."""

from __future__ import annotations

import argparse
import os

from benchmarks import ood_data as package
from benchmarks.common import BACKBONES
from benchmarks.ood_data.labelling import stage_label
from benchmarks.ood_data.layout import SEEDS, SETS, TRAIN_MINUTES
from benchmarks.ood_data.stores import stage_extract
from benchmarks.ood_data.training import stage_train


def ood_data(args) -> int:
    # one thread: small models and xTB on a shared 2-core machine (tblite and torch load in
    # the stages, after this)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if args.stage != "label" and not args.backbone:
        raise SystemExit(f"ood-data: --stage {args.stage} needs --backbone")
    if args.stage in ("label", "all"):
        stage_label()
    if args.stage in ("train", "all"):
        found = stage_train(args.backbone, args.seeds, args.parallel, args.minutes)
        if args.stage == "train" and len(args.seeds) == 1:  # a child of stage_train
            return 0 if found else 1
    if args.stage in ("extract", "all"):
        stage_extract(args.backbone, args.sets)
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "ood-data",
        help="the OOD benchmark's xTB data, backbones and feature stores",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", choices=BACKBONES, help="needed by the train and extract stages")
    parser.add_argument("--stage", choices=("label", "train", "extract", "all"), default="all")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once (single-thread each)")
    parser.add_argument("--minutes", type=float, default=TRAIN_MINUTES, help="wall-time cap per training")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="stores to extract")
    parser.set_defaults(handler=ood_data)
