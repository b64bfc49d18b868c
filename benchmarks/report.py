"""The benchmarks' Markdown helpers: cells, tables and result pages.

Every experiment writes its ``results/<name>.md`` with ``write_markdown``;
``benchmarks/results/README.md`` is assembled by ``benchmarks.suite.readme.write_readme``. This
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


def write_result_files(folder: Path, name: str, result: dict, text: str, plot=None) -> None:
    """``name.json``, ``name.md`` and (``plot(result, path)``) ``name.png`` in ``folder``, each
    written atomically; the Markdown printed."""
    import json

    from probe_base.io.paths import atomic_write

    folder = Path(folder)
    atomic_write(folder / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    atomic_write(folder / f"{name}.md", lambda tmp: Path(tmp).write_text(text))
    if plot is not None:
        plot(result, folder / f"{name}.png")
    print(text)
    print(f"wrote {folder / name}.json, .md" + (", .png" if plot is not None else ""))
