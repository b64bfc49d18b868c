"""Reading and checking a LAMMPS input for ``run_lammps``: the commands of a file, a string
or a list, with ``&`` continuations joined, comments dropped and ``include`` files expanded in
place (the probe feeds LAMMPS its input command by command), and ``LammpsInputError``, the
one-line error (file, line, command) for a command that LAMMPS refuses or cannot run that way.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from probe_base.errors import InputError

# commands LAMMPS can only run from a file it reads itself (we feed it command by command)
UNSUPPORTED = {"jump", "label", "next"}


class LammpsInputError(InputError):
    """LAMMPS refused a command of the input: the file, the line and LAMMPS's message."""


def read_commands(source) -> list[tuple[str, int, str]]:
    """(file, line, command) of a LAMMPS input: a file path, or a string / list of commands.
    Joins ``&`` continuations, drops comments, and expands ``include`` files in place (so
    that their ``run`` commands see the fix)."""
    if isinstance(source, (list, tuple)):
        return _parse("\n".join(source).splitlines(), "<commands>")
    if isinstance(source, str) and "\n" in source:
        return _parse(source.splitlines(), "<commands>")
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: LAMMPS input file not found; check the path (--in)")
    return _parse(path.read_text().splitlines(), str(path))


def _parse(lines, name, depth=0):
    out, pending, first = [], "", 0
    for number, raw in enumerate(lines, start=1):
        line = _strip_comment(raw).rstrip()
        if not pending:
            first = number
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if not command:
            continue
        word = command.split()[0]
        if word in UNSUPPORTED:
            raise LammpsInputError(
                f"{name}, line {first}: `{command}`: {word} needs LAMMPS to read the file itself, which "
                "the probe's callback cannot; unroll the loop (or run several inputs one after another)"
            )
        if word == "include" and "$" not in command:
            target = Path(shlex.split(command)[1])  # relative to the working folder, as LAMMPS reads it
            if depth > 20 or not target.is_file():
                raise LammpsInputError(f"{name}, line {first}: `{command}`: included file {target} not found")
            out += _parse(target.read_text().splitlines(), str(target), depth + 1)
            continue
        out.append((name, first, command))
    if pending:
        out.append((name, first, pending.strip()))
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i]
    return line
