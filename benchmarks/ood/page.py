"""``ood``'s result pages and plot: per backbone and label the detection and false-alarm
table of every method, the scalar-rule ablation, and ``results/ood.md`` from every
backbone's JSON (``report``)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.ood.protocol import METHODS, PROTOCOL, SETS
from benchmarks.report import write_markdown


def ablation_markdown(ablation) -> list[str]:
    variants = ablation["variants"]
    sets = list(next(iter(variants.values()))["report"])
    lines = [
        f"### Domain test: each structure-scalar rule on and off (label {ablation['label']['target']} "
        f"> {ablation['label']['threshold']:.4g}; weights {ablation['weights_tried']} chosen on the "
        "validation halves of the OOD sets, figures on the other halves)",
        "",
        "Cell: % of the half's unreliable structures outside the domain (reliable ones flagged in brackets).",
        "",
        "| variant | weight | held-out flagged | " + " | ".join(n.removeprefix("ood_") for n in sets) + " | mean |",
        "|---" * (len(sets) + 4) + "|",
    ]
    for variant, v in variants.items():
        cells = [
            f"{_pct(r['unreliable_flagged'])} ({_pct(r['reliable_flagged'])})" for r in (v["report"][n] for n in sets)
        ]
        lines.append(
            f"| {variant} | {v['weight'] if v['weight'] is not None else '-'} | "
            f"{100 * v['in_distribution_flagged']:.1f} | "
            + " | ".join(cells)
            + f" | {_pct(v['report_mean_detection'])} |"
        )
    return lines + [""]


def _pct(x):
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.0f}"


def markdown(results) -> str:
    lines = [
        "# Out-of-distribution benchmark (GFN2-xTB labels)",
        "",
        "`python -m benchmarks ood --backbone B` (data, backbones and stores: "
        "`python -m benchmarks ood-data --backbone B --stage all`)",
        "",
        "Every method at one operating point: PROBE's decision rule; every other score cut at the same "
        "false-alarm rate on the same calibration structures. Cell: % of the set's *unreliable* "
        "structures flagged (detection), in brackets the AUROC of telling the set from the held-out "
        "structures. Row `heldout`: % of the in-distribution *reliable* structures flagged (the "
        "measured false-alarm rate). Column `PROBE reliable flagged`: % of the set's reliable "
        "structures PROBE flags.",
        "",
    ]
    for result in results:
        if result.get("protocol") != PROTOCOL:
            lines += [
                f"**{result['backbone']}: measured before the decision rule** (median labels; PROBE flagged at "
                "P < 0.5, the label-free scores above their fitting-set 99th percentile, the held-out row all "
                "structures flagged): not like for like; re-run `python -m benchmarks ood --backbone "
                f"{result['backbone']}`.",
                "",
            ]
        for label_name, block in result["labels"].items():
            sets = block["sets"]
            methods = [m for m in METHODS if m in sets["heldout"]["decisions"]]
            lines += [
                f"## {result['backbone']}, label {label_name} (threshold {block['threshold']:.4g}; "
                f"alpha {result['alpha']}, {block['n_calibration']} calibration structures)",
                "",
                "| set | n | % unreliable | " + " | ".join(methods) + " | PROBE reliable flagged |",
                "|---" * (len(methods) + 4) + "|",
            ]
            for name, row in sets.items():
                cells = []
                for m in methods:
                    d = row["decisions"].get(m)
                    if name == "heldout":
                        cells.append(_pct(d["reliable_flagged"]) if d else "-")
                    else:
                        sep = row.get("separation_auroc", {}).get(m)
                        cells.append(
                            (_pct(d["unreliable_flagged"]) if d else "-") + (f" ({sep:.2f})" if sep is not None else "")
                        )
                probe = row["decisions"].get("PROBE", {})
                lines.append(
                    f"| {name.removeprefix('ood_')} | {row['n']} | {_pct(row['unreliable_fraction'])} | "
                    + " | ".join(cells)
                    + f" | {_pct(probe.get('reliable_flagged'))} of {probe.get('n_reliable', '-')} |"
                )
            held = sets["heldout"]
            lines += [
                "",
                "In-distribution AUROC (held-out half): "
                + ", ".join(f"{m} {v:.3f}" for m, v in held["auroc"].items() if np.isfinite(v)),
            ]
            if "default_minus_network" in held:
                d = held["default_minus_network"]
                lines.append(
                    "Default (domain test on) minus network alone, paired bootstrap: AUROC "
                    f"{d['auroc'][0]:+.4f} [{d['auroc'][1]:+.4f}, {d['auroc'][2]:+.4f}], AURC "
                    f"{d['aurc'][0]:+.4f} [{d['aurc'][1]:+.4f}, {d['aurc'][2]:+.4f}] (AURC: lower is better)"
                )
            for name, q in held.get("atom_maps", {}).items():
                lines.append(
                    f"Per-atom map '{name}': top atom among the 3 worst forces in "
                    f"{100 * q['hit_rate']:.0f}% of {q['n_structures']} structures "
                    f"(random {100 * q['random_rate']:.0f}%), within-structure Spearman "
                    f"{q['spearman']:.2f}"
                )
            lines.append("")
        if result.get("scalar_ablation"):
            lines += [f"## {result['backbone']}: scalar rules", ""] + ablation_markdown(result["scalar_ablation"])
    return "\n".join(lines)


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label_name = next(iter(result["labels"]))
    block = result["labels"][label_name]["sets"]
    methods = [m for m in METHODS if m in block["heldout"]["decisions"]]
    names = list(SETS)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        values = [100 * block[n]["decisions"].get(m, {}).get("unreliable_flagged", np.nan) for n in names]
        ax.bar(np.arange(len(names)) + k * width, values, width, label=m)
    ax.axhline(95, color="k", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + 0.4, [n.removeprefix("ood_") for n in names], rotation=15)
    ax.set_ylabel("% of unreliable structures flagged")
    ax.set_title(f"{result['backbone']}: OOD sets, label {label_name}, one operating point")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report():
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("ood_*.json"))]
    for result in results:
        plot(result, RESULTS / f"ood_{result['backbone']}.png")
    write_markdown(RESULTS / "ood.md", markdown(results))
    return 0
