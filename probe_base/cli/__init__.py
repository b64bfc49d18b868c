"""The ``probe`` command: plugins, extract, fit, evaluate, predict, calibrate, select, demo.

- ``parser``: the argument parser (``build_parser``);
- ``checks``: what is refused before any work (``check_before_work``, ``check_device``);
- ``commands``: one ``cmd_<name>(args)`` per subcommand, in ``COMMANDS``;
- here: ``main``, the console entry point, which turns a ``ProbeError`` or an ``OSError``
  into one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from ..errors import ProbeError
from .checks import check_before_work, check_device
from .commands import COMMANDS
from .parser import build_parser

__all__ = ["build_parser", "check_before_work", "check_device", "main"]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        check_before_work(args)
        return COMMANDS[args.command](args) or 0
    except ProbeError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a user's path that the checks could not foresee (e.g. disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"error: {where}{_one_line(exc.strerror or str(exc))}; check the path and free "
            "disk space, then run the command again",
            file=sys.stderr,
        )
        return 2


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())
