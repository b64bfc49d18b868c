"""``report``: ``benchmarks/results/README.md`` from every suite result JSON (this
protocol's rows, an earlier protocol's apart, the small vs large table), then the speed
benchmarks' section."""

from __future__ import annotations

import json

from benchmarks.common import RESULTS
from benchmarks.report import interval, write_markdown
from benchmarks.suite.page import rate_cell, verdict
from benchmarks.suite.protocol import LABELS


def _leader(probe, ensemble, tie=5e-4):
    if abs(probe - ensemble) < tie:
        return "level"
    return "PROBE ahead" if probe > ensemble else "ensemble ahead"


def _operating_cell(decisions, against) -> str:
    if not decisions or "PROBE" not in decisions:
        return "- (before the decision rule)"
    probe, other = decisions["PROBE"], decisions.get(against)
    cell = f"{rate_cell(probe['reliable_flagged'], None)}, {rate_cell(probe['unreliable_flagged'], None)}"
    if other:
        cell += f"; {rate_cell(other['reliable_flagged'], None)}, {rate_cell(other['unreliable_flagged'], None)}"
    return cell


def suite_payloads(results):
    """Every suite result JSON in ``results`` (other benchmarks' JSON files are skipped)."""
    for path in sorted(results.glob("*.json")):
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and {"backbone", "evaluations", "size"} <= set(payload):
            yield payload


def write_readme(results) -> str:
    """``results/README.md``: this suite's section, then the speed benchmarks' (an empty
    section is left out)."""
    from benchmarks.speed import readme as speed

    sections = [readme_section(results), speed.readme_section(results)]
    return write_markdown(results / "README.md", "\n".join(s for s in sections if s))


def report(args=None):
    """benchmarks/results/README.md: the suite's section, then the other experiments'."""
    write_readme(RESULTS)
    return 0


def is_current(payload) -> bool:
    """A result of this suite's labels and decision rule (every label it ran is one of
    ``LABELS``, and its held-out rows carry the operating point); else an earlier protocol's."""
    labels = payload.get("labels") or []
    held = [ev for key, ev in payload["evaluations"].items() if key.endswith("/ held-out")]
    return bool(labels) and set(labels) <= set(LABELS) and all("decisions" in ev for ev in held)


def _suite_rows(payloads):
    rows = [
        "| backbone | dataset | size | label / set | PROBE AUROC | ensemble AUROC | PROBE AURC | "
        "ensemble AURC | verdict (ensemble signal named) | at one operating point: false alarms, detected "
        "(PROBE; ensemble) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for payload in payloads:
        for key, ev in payload["evaluations"].items():
            if "ood_detection" in ev:  # OOD vs held-out structures as the classes
                m = ev["ood_detection"]["metrics"]
                ens = m.get("ensemble E std")
                rows.append(
                    f"| {payload['backbone']} | {payload['dataset']} | {payload['size']} | "
                    f"{key}: OOD detection | {interval(m['PROBE']['auroc'])} | "
                    f"{interval(ens['auroc']) if ens else '-'} | - | - | "
                    f"{_leader(m['PROBE']['auroc'][0], ens['auroc'][0]) if ens else '-'} on AUROC | - |"
                )
            if not 0 < ev["unreliable_fraction"] < 1:
                continue
            m = ev["metrics"]
            for against in ("ensemble E std", "ensemble F std"):
                if against not in m:
                    continue
                ens = m[against]
                rows.append(
                    f"| {payload['backbone']} | {payload['dataset']} | {payload['size']} | {key} | "
                    f"{interval(m['PROBE']['auroc'])} | {interval(ens['auroc'])} | "
                    f"{interval(m['PROBE']['aurc'])} | {interval(ens['aurc'])} | {verdict(m, against)} | "
                    f"{_operating_cell(ev.get('decisions'), against)} |"
                )
    return rows


def readme_section(results):
    """Every suite result in ``results``, one verdict line per row: this protocol's first,
    an earlier protocol's apart (never in one table with them), and the small vs large
    table of this protocol's pairs."""
    payloads = list(suite_payloads(results))
    current = [p for p in payloads if is_current(p)]
    earlier = [p for p in payloads if not is_current(p)]
    text = (
        "# Benchmark suite results\n\nOne row per backbone x dataset x size x label x evaluation "
        "set; details, all metrics and cost tables in `<backbone>_<dataset>[_<size>].md`. Labels: "
        + ", ".join(LABELS)
        + "; every method cut at PROBE's measured false-alarm rate on the same calibration structures.\n\n"
        + "\n".join(_suite_rows(current))
        + "\n\n"
        + expressiveness_table(current)
        + "\n"
    )
    if earlier:
        names = ", ".join(sorted({f"{p['backbone']}_{p['dataset']}_{p['size']}" for p in earlier}))
        text += (
            "## Earlier protocol (not re-run: compare nothing here with the table above)\n\n"
            f"{names}: the median and chemical-accuracy labels and the decision rule before this one "
            "(the large backbones were trained on a GPU, which later sessions did not have). "
            "Re-run with `python -m benchmarks run --backbone B --dataset D --size large` on a machine with the "
            "models.\n\n" + "\n".join(_suite_rows(earlier)) + "\n"
        )
    return text


def expressiveness_table(payloads):
    """Small vs large backbone (of ``payloads``), held-out set: does the PROBE signal strengthen with the more
    expressive backbone, and more than the ensemble's?"""
    payloads = {(p["backbone"], p["dataset"], p["size"]): p for p in payloads}
    lines = [
        "## Expressiveness: small vs large backbone (held-out set, AUROC)",
        "",
        "| backbone | dataset | label | PROBE small | PROBE large | ensemble E std small | "
        "ensemble E std large | ensemble F std small | ensemble F std large |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (backbone, dataset, size), small in sorted(payloads.items()):
        large = payloads.get((backbone, dataset, "large"))
        if size != "small" or large is None:
            continue
        for label in LABELS:
            key = f"{label} / held-out"
            if key not in small["evaluations"] or key not in large["evaluations"]:
                continue
            cells = []
            for method in ("PROBE", "ensemble E std", "ensemble F std"):
                for payload in (small, large):
                    m = payload["evaluations"][key]["metrics"].get(method)
                    cells.append(f"{m['auroc'][0]:.3f}" if m else "-")
            lines.append(f"| {backbone} | {dataset} | {label} | " + " | ".join(cells) + " |")
    if len(lines) == 4:
        lines.append("| no small and large pair run with these labels yet | | | | | | | | |")
    return "\n".join(lines) + "\n"
