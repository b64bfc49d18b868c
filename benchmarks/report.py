"""The one report writer of the benchmarks: Markdown cells and tables, result pages, and
``benchmarks/results/README.md``.

Every experiment writes its ``results/<name>.md`` with ``write_markdown``; the README is
assembled by ``write_readme`` from the sections the experiments contribute
(``readme_section(results) -> str`` of ``benchmarks.suite`` and ``benchmarks.speed``, in that
order; an empty section is left out).
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


def write_readme(results: Path) -> str:
    """``results/README.md`` from every result file in ``results``."""
    from benchmarks import speed, suite

    sections = [suite.readme_section(results), speed.readme_section(results)]
    return write_markdown(results / "README.md", "\n".join(s for s in sections if s))
