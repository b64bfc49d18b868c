"""``python -m benchmarks <experiment> ...``: every benchmark of this repository.

Each experiment module exposes ``register(subparsers)``, adding its subcommands with a
``handler(args)``; a handler returns 0 on success (or an exit status). Modules import no
backbone framework at import time (each lives in its own environment), so ``--help`` works
in any of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# in the order --help lists them
EXPERIMENTS = (
    "suite.cli",  # run, report, cost
    "backbones",  # train <backbone>
    "backbones.aimnet",  # aimnet-hook-overhead
    "signal_ablation.cli",  # signal-ablation, ablation-table
    "ood.cli",  # ood
    "ood_data.cli",  # ood-data
    "scaling",  # scaling
    "step_cost.cli",  # step-cost
    "speed.cli",  # evaluate-speed, startup
    "attention_ablation",  # attention
    "practice_mace.cli",  # practice guarantee|md
    "active_learning_mace",  # active-learning
    "distributed_extract",  # distributed-extract ranks|gpu|record-gpu
    "sevenn_signal",  # sevenn-signal
    "sevenn_attach_cost",  # sevenn-attach-cost
    "reference_scale.cli",  # reference-scale
    "evaluate_scale",  # evaluate-scale
    "lammps_cost",  # lammps-cost
    "torchsim_cost",  # torchsim-cost
)

DESCRIPTION = """The benchmarks of PROBE on frozen MLIP features (benchmarks/).

    python -m benchmarks run --backbone mace --dataset ethanol
    python -m benchmarks run --all        # whatever this environment can run
    python -m benchmarks report           # results/README.md from every results JSON
    python -m benchmarks <experiment> --help
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="<experiment>")
    for name in EXPERIMENTS:
        importlib.import_module(f"benchmarks.{name}").register(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    status = args.handler(args)
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
