"""The ``probe`` command: plugins, extract, fit, evaluate, predict, calibrate, select, demo.

- ``parser``: the argument parser (``build_parser``), assembled from ``options`` (argument
  types, backbone options), ``verbs_fit`` (extract, fit) and ``verbs_use`` (evaluate,
  predict, demo, calibrate, select, md);
- ``checks``: what is refused before any work (``check_before_work``, ``check_device``);
- ``commands``: one ``cmd_<name>(args)`` per subcommand, in ``COMMANDS``;
- here: ``main``, the console entry point, which turns a ``ProbeError`` or an ``OSError``
  into one line on stderr and exit status 2.
"""

from __future__ import annotations

import signal
import sys

from probe_base.cli.checks import OUTPUTS, check_before_work, check_device
from probe_base.cli.commands import COMMANDS
from probe_base.cli.parser import build_parser
from probe_base.errors import ProbeError

__all__ = ["build_parser", "check_before_work", "check_device", "main"]


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so the command unwinds as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None):
    args = build_parser().parse_args(_joined_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        previous = None
    try:
        check_before_work(args)
        return COMMANDS[args.command](args) or 0
    except (KeyboardInterrupt, Terminated) as exc:
        name, status = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT (Ctrl-C)", 130)
        print(f"interrupted by {name}: {interrupted_state(args)}", file=sys.stderr)
        return status
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def interrupted_state(args) -> str:
    """One line: what an interrupted command left on disk and how to go on."""
    if args.command == "extract":
        from probe_base.io.paths import partial_path

        partial = partial_path(args.output)
        if partial.exists():
            from probe_base.store import stored_count

            n = stored_count(partial)
            saved = "the structures extracted so far are" if n is None else f"{n} structures are"
            return f"{saved} saved in {partial}; run the same command again to resume after them"
        return f"nothing was saved; run the same command again to start {args.output}"
    if args.command == "reference":
        from probe_base.cli.reference import checkpoint_path

        partial = checkpoint_path(args.output)
        if partial.exists():
            return f"the build so far is saved in {partial}; run the same command again to resume it"
        return f"nothing was saved; run the same command again to build {args.output}"
    name = OUTPUTS.get(args.command, (None, None))[0]
    output = getattr(args, name, None) if name else None
    if output is None:
        return "nothing was written; run the command again"
    return f"{output} was not written (an existing file is unchanged); run the command again"


#: options whose value may start with "-" (an ase.io index such as -3:)
NEGATIVE_VALUES = ("--index",)


def _joined_negative_values(argv):
    """``--index -3:`` as ``--index=-3:``: argparse would read "-3:" as an option."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUES and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())
