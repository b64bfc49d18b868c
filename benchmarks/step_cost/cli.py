"""``python -m benchmarks step-cost``: its options (backbones, structure sizes, rounds, the
baseline and the compared ref)."""

from __future__ import annotations

from benchmarks.speed.compare import BEFORE_SPEED_WORK
from benchmarks.step_cost.experiment import step_cost
from benchmarks.step_cost.models import BACKBONES


def register(sub):
    s = sub.add_parser("step-cost", help="per-MD-step overhead of each plugin's calculator with probe=")
    s.add_argument(
        "--backbones", nargs="+", choices=BACKBONES, default=None, help="default: every backbone importable here"
    )
    s.add_argument(
        "--molecules", nargs="+", type=int, default=[1, 11, 111], help="ethanol molecules per structure (9 atoms each)"
    )
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--baseline", default=BEFORE_SPEED_WORK)
    s.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    s.set_defaults(handler=step_cost)
