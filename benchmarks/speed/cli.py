"""``python -m benchmarks evaluate-speed`` and ``startup``: their options (workload sizes,
rounds, the baseline and the compared ref)."""

from __future__ import annotations

from benchmarks.speed.compare import BEFORE_SPEED_WORK
from benchmarks.speed.experiment import evaluate_speed, startup


def register(sub) -> None:
    """The subcommands of this module, on the suite's parser."""
    e = sub.add_parser("evaluate-speed", help="`probe evaluate` and evaluate_signal, before vs after")
    e.add_argument("--structures", type=int, default=1000, help="structures evaluated")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--signal-structures", type=int, default=100_000)
    e.add_argument(
        "--signal-baseline-bootstrap",
        type=int,
        default=20,
        help="resamples the baseline runs at --signal-structures (compared per resample)",
    )
    e.add_argument("--rounds", type=int, default=3)
    e.add_argument("--baseline", default=BEFORE_SPEED_WORK)
    e.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    e.set_defaults(handler=evaluate_speed)
    s = sub.add_parser("startup", help="`probe --help` and `probe plugins` start-up, before vs after")
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--baseline", default=BEFORE_SPEED_WORK)
    s.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    s.set_defaults(handler=startup)
