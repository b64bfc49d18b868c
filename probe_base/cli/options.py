"""The ``probe`` command's argument types and shared options: range-checked numbers
(``POSITIVE_INT``, ``RATE`` and the others, built by ``_number``), ``KEY=VALUE`` adapter
options, and the backbone options (``--adapter``, ``--model``, ``--layers``, ``--device``,
``--adapter-option``) that every verb running a backbone takes. Standard library only, so
``probe --help`` stays light."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _number(kind, low=None, high=None, low_open=False, high_open=False, what="a number"):
    """An argparse type: ``kind`` within [low, high] (open ends where asked), with the
    allowed range in the message."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if value != value or too_low or too_high:  # value != value: NaN
            left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {' and '.join(filter(None, [left, right]))}"
            )
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1, what="a whole number")
COUNT = _number(int, 0, what="a whole number")
RATE = _number(float, 0, 1, low_open=True, high_open=True, what="a number in (0, 1)")
POSITIVE = _number(float, 0, low_open=True, what="a positive number")
HOLDOUT = _number(float, 0, 1, high_open=True, what="a fraction in [0, 1)")
SHARE = _number(float, 0, 1, low_open=True, what="a fraction in (0, 1]")


def _add_backbone_args(parser, several=True):
    parser.add_argument(
        "--adapter", required=True, help="backbone adapter: a name from `probe plugins` (e.g. mace) or module:Class"
    )
    parser.add_argument(
        "--model",
        nargs="+" if several else 1,
        required=True,
        type=Path,
        help="backbone model file(s); several = an ensemble whose first model is the "
        "backbone the probe reads (the others give the disagreement baseline)"
        if several
        else "backbone model file",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="feature layers to read (default: the adapter's choice; see `probe plugins -v`)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the backbone (cpu, cuda)")
    parser.add_argument(
        "--adapter-option",
        action="append",
        type=_adapter_option,
        default=[],
        metavar="KEY=VALUE",
        help="a backbone option of the adapter, e.g. head=omat (MACE), modal=mpa (SevenNet), "
        "charge=-1 (AIMNet2); repeat for several; VALUE is read as JSON where it parses "
        "(numbers, true, null, {...}), else as text. `probe plugins -v` lists each adapter's options",
    )


def _adapter_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. head=omat)")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed
