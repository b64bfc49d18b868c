"""The benchmarks' Markdown helpers: cells, tables and result pages.

Every experiment writes its ``results/<name>.md`` with ``write_markdown``;
``benchmarks/results/README.md`` is assembled by ``benchmarks.suite.write_readme``. This
module imports no experiment, so every experiment can import it.
"""

from __future__ import annotations

from pathlib import Path


def interval(triple) -> str:
    """``value [low, high]`` of a (value, low, high) metric."""
    value, low, high = triple
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def table(header, rows) -> list[str]:
    """The lines of a Markdown table: the header, the separator, one line per row of cells."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows
    ]


def write_markdown(path: Path, text: str, echo: bool = True) -> str:
    """Write one result page (its folder created), and print it unless ``echo`` is off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if echo:
        print(text)
    return text
