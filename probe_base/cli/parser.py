"""The ``probe`` command's argument parser: ``build_parser`` assembles every subcommand, no
work done (``probe --help`` imports nothing heavy). The argument types and shared options are
in ``probe_base.cli.options``; the verbs' subparsers in ``probe_base.cli.verbs_fit`` (extract,
fit), ``probe_base.cli.verbs_use`` (evaluate, predict, demo, calibrate, select, md) and
``probe_base.cli.reference`` (reference build)."""

from __future__ import annotations

import argparse

from probe_base.cli.options import POSITIVE_INT
from probe_base.cli.verbs_fit import add_extract_parser, add_fit_parser
from probe_base.cli.verbs_use import (
    add_calibrate_parser,
    add_demo_parser,
    add_evaluate_parser,
    add_md_parser,
    add_predict_parser,
    add_select_parser,
)

EXAMPLES = """
typical run (a MACE model, DFT data in extxyz):
  probe extract --adapter mace --model my.model m2.model m3.model m4.model \\
                --input heldout.xyz --output heldout.h5
  probe fit --store heldout.h5 --output my.probe --eval-fraction 0.5
  probe calibrate --probe my.probe --store heldout.h5 --target-risk 0.1 --delta 0.05
  probe evaluate --probe my.probe --store heldout.h5 --output-dir report/
  probe predict --probe my.probe --adapter mace --model my.model \\
                --input new_structures.xyz --output scored.xyz
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="probe",
        description="PROBE: probability that an MLIP prediction is reliable, read from the "
        "backbone's own per-atom features (one forward pass, no ensemble).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads, >= 1 (default: torch's)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed backbone adapters")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="load each plugin (imports torch): its adapters and their classes, broken "
        "plugins and adapter-name collisions",
    )

    add_extract_parser(sub)
    add_fit_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_demo_parser(sub)
    add_calibrate_parser(sub)
    add_select_parser(sub)

    from probe_base.cli.reference import add_reference_parser  # `probe reference build` (its own file)

    add_reference_parser(sub)

    add_md_parser(sub)
    return parser
