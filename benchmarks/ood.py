"""Out-of-distribution benchmark: is PROBE safe on structures unlike the backbone's data?

Backbones (4 seeds each) trained on GFN2-xTB labels of 1000 ethanol geometries; every set
labelled with the same xTB (``python -m benchmarks ood-data``, benchmarks/ood_data/, builds
data, backbones and feature stores). The probe is fitted the way a user would, with defaults, on half of 500 held-out
ethanol structures (``--reference`` = the backbone's training-set store, alpha = 0.02) and
scored on the other half (in distribution) and on seven OOD sets: bond-dissociation scans,
an atom pulled away, fragments, dimers, compressed/stretched geometries, 1500-2500 K MD and
other C/H/O molecules.

Every method at one operating point: PROBE flags with its decision rule (5 % false alarms,
the cut set on its calibration structures); every other score is cut by the same
split-conformal rule at the same rate on the same calibration structures. Per set and
method: the fraction of *unreliable* structures flagged (detection) and of *reliable* ones
flagged (false alarms; on the held-out half, the in-distribution rate the rule states),
and the AUROC of telling the set's structures from the in-distribution ones. Labels: the
absolute tolerances (total-energy error above 1 kcal/mol, force RMSE above 0.1 eV/Å, with
the per-atom map's hit rate) and the paper's median label.

    python -m benchmarks ood --backbone mace        # in the backbone's environment
    python -m benchmarks ood --report               # results/ood.md from every backbone's JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import BACKBONES, CACHE, RESULTS
from benchmarks.ood_data.layout import OOD_KINDS, STORES
from benchmarks.report import write_markdown

LABELS = {
    "energy_tolerance": dict(target="energy"),
    "force_rmse_tolerance": dict(target="force_rmse"),
    "energy_median": dict(target="energy", quantile=0.5),
}
METHODS = (
    "PROBE",
    "PROBE network alone",
    "novelty",
    "ensemble E std",
    "ensemble F std",
    "LLPR",
    "GMM NLL",
    "latent distance",
)
SETS = tuple(f"ood_{kind}" for kind in OOD_KINDS)
#: results of this protocol compare every method at one operating point (older files did not)
PROTOCOL = "one operating point"


def stores_of(backbone):
    needed = {name: STORES / f"{backbone}_{name}.h5" for name in ("train", "heldout", *SETS)}
    if not all(p.exists() for p in needed.values()):
        cmd = [sys.executable, "-m", "benchmarks", "ood-data", "--backbone", backbone, "--stage", "all"]
        print("building:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return needed


def _separation(in_scores, out_scores):
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    s = np.r_[in_scores, out_scores]
    s = np.where(np.isfinite(s), s, np.nanmax(np.where(np.isfinite(s), s, np.nan)) * 10 + 1)
    return float(roc_auc_score(y, s))


def paired_difference(unreliable, score_a, score_b, n_bootstrap=1000, seed=0):
    """AUROC and AURC of score_a minus score_b on the same structures, with a paired 95 %
    bootstrap interval (both scores resampled together)."""
    from sklearn.metrics import roc_auc_score

    from probe_base.report.metrics import aurc

    rng = np.random.default_rng(seed)
    n = len(unreliable)
    diffs = {"auroc": [], "aurc": []}
    point = {
        "auroc": roc_auc_score(unreliable, score_a) - roc_auc_score(unreliable, score_b),
        "aurc": aurc(score_a, unreliable) - aurc(score_b, unreliable),
    }
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        if unreliable[idx].min() == unreliable[idx].max():
            continue
        diffs["auroc"].append(
            roc_auc_score(unreliable[idx], score_a[idx]) - roc_auc_score(unreliable[idx], score_b[idx])
        )
        diffs["aurc"].append(aurc(score_a[idx], unreliable[idx]) - aurc(score_b[idx], unreliable[idx]))
    return {k: (float(point[k]), *map(float, np.percentile(v, [2.5, 97.5]))) for k, v in diffs.items()}


def run(backbone, n_bootstrap=200, alpha=0.02, split_seed=0):
    from probe_base.artifact import load_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.report.baselines import ReferenceBaselines
    from probe_base.store import load_store
    from probe_base.workflow.evaluate import evaluate_probe
    from probe_base.workflow.fit import fit_probe

    started = time.perf_counter()
    stores = stores_of(backbone)
    reference = load_store(stores["train"])
    result = {
        "backbone": backbone,
        "alpha": alpha,
        "protocol": PROTOCOL,
        "labels": {},
        "stores": {k: str(v) for k, v in stores.items()},
    }
    for label_name, label_args in LABELS.items():
        probe_path = CACHE / "ood" / "probes" / f"{backbone}_{label_name}.probe"
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        fit_probe(
            stores["heldout"],
            probe_path,
            LabelSpec(**label_args),
            ProbeClassifier(seed=0),
            eval_fraction=0.5,
            split_seed=split_seed,
            reference=stores["train"],
            alpha=alpha,
        )
        artifact = load_probe(probe_path)
        fit_data = load_store(stores["heldout"]).subset(artifact.info["info"]["fit_indices"])
        baselines = ReferenceBaselines().fit(reference, fit_data, seed=0)
        sets, heldout_scores = {}, None
        for name in ("heldout", *SETS):
            ev = evaluate_probe(probe_path, stores[name], n_bootstrap=n_bootstrap, baselines=baselines)
            row = {
                "n": ev["n_structures"],
                "unreliable_fraction": ev["unreliable_fraction"],
                "in_domain_fraction": ev["in_domain_fraction"],
                "decisions": ev["decisions"],
                "auroc": {m: ev["metrics"][m]["auroc"][0] for m in METHODS if m in ev["metrics"]},
                "atom_maps": ev["atom_maps"],
            }
            scores = ev["arrays"]["scores"]
            if name == "heldout":
                heldout_scores = scores
                # the default (domain test on) against the network alone (the earlier default)
                row["default_minus_network"] = paired_difference(
                    ev["arrays"]["unreliable"], scores["PROBE"], scores["PROBE network alone"]
                )
            else:
                row["separation_auroc"] = {
                    m: _separation(heldout_scores[m], scores[m]) for m in METHODS if m in scores and m in heldout_scores
                }
            sets[name] = row
            flagged = row["decisions"].get("PROBE", {}).get("unreliable_flagged", float("nan"))
            print(
                f"{backbone} {label_name} {name}: n={row['n']}, "
                f"{100 * row['unreliable_fraction']:.0f}% unreliable, PROBE flags "
                f"{100 * flagged:.0f}% of them, {100 * (1 - row['in_domain_fraction']):.1f}% outside the domain",
                flush=True,
            )
        result["labels"][label_name] = {
            "threshold": artifact.label.threshold,
            "n_calibration": artifact.domain.n_calibration_,
            "sets": sets,
        }
    result["scalar_ablation"] = scalar_ablation(stores, alpha, split_seed)
    result["wall_seconds"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ood_{backbone}.json").write_text(json.dumps(result, indent=1, default=float))
    plot(result, RESULTS / f"ood_{backbone}.png")
    write_markdown(RESULTS / f"ood_{backbone}.md", markdown([result]))
    return result


SCALAR_VARIANTS = {
    "atoms only": (),
    "+ energy per atom": ("energy_per_atom",),
    "+ atom count": ("n_atoms",),
    "+ both (default)": ("energy_per_atom", "n_atoms"),
}
SCALAR_WEIGHTS = (5.0, 10.0, 20.0, 40.0, 80.0)


def scalar_ablation(stores, alpha=0.02, split_seed=0, label_args=None):
    """The domain test with and without each structure-scalar rule (energy per atom, atom
    count), on the energy-tolerance label. Each OOD set is split in two halves (seeded):
    the scalar weight of each variant is chosen on the *validation* halves (highest mean
    detection of unreliable structures, ties to the smaller weight), and every figure is
    reported on the other halves only. Reference: the backbone's training set; calibration:
    the fitting half of the held-out set (as ``probe fit --reference``)."""
    from probe_base.domain.model import DomainModel
    from probe_base.labels import LabelSpec
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    reference = load_store(stores["train"])
    heldout = load_store(stores["heldout"])
    fit_idx, eval_idx = split_holdout(len(heldout), 0.5, split_seed)
    calibration, in_distribution = heldout.subset(fit_idx), heldout.subset(eval_idx)
    label = LabelSpec(**(label_args or LABELS["energy_tolerance"])).resolved_on(calibration)
    halves = {}
    for name in SETS:
        data = load_store(stores[name])
        order = np.random.default_rng(split_seed).permutation(len(data))
        cut = len(data) // 2
        unreliable = label.errors(data) > label.threshold
        halves[name] = {
            half: (data.subset(np.sort(rows)), unreliable[np.sort(rows)])
            for half, rows in (("validation", order[:cut]), ("report", order[cut:]))
        }

    def rates(domain, half):
        out = {}
        for name, parts in halves.items():
            data, bad = parts[half]
            outside = ~domain.in_domain(data)
            out[name] = {
                "unreliable_flagged": float(outside[bad].mean()) if bad.any() else None,
                "reliable_flagged": float(outside[~bad].mean()) if (~bad).any() else None,
                "n_unreliable": int(bad.sum()),
                "n_reliable": int((~bad).sum()),
            }
        return out

    def mean_detection(r):
        values = [v["unreliable_flagged"] for v in r.values() if v["unreliable_flagged"] is not None]
        return float(np.mean(values)) if values else float("nan")

    result = {"label": label.to_dict(), "weights_tried": list(SCALAR_WEIGHTS), "variants": {}}
    for variant, scalars in SCALAR_VARIANTS.items():
        weights = SCALAR_WEIGHTS if scalars else (SCALAR_WEIGHTS[0],)  # no scalar: the weight is unused
        tried = {}
        for weight in weights:
            domain = DomainModel(alpha=alpha, scalars=scalars, seed=split_seed, scalar_weight=weight)
            domain.fit(reference, calibration=calibration)
            tried[weight] = (mean_detection(rates(domain, "validation")), domain)
        best = max(tried, key=lambda w: (tried[w][0], -w))
        domain = tried[best][1]
        reported = rates(domain, "report")
        result["variants"][variant] = {
            "scalars": list(scalars),
            "weight": best if scalars else None,
            "validation_mean_detection": {str(w): v for w, (v, _) in tried.items()},
            "report": reported,
            "report_mean_detection": mean_detection(reported),
            "in_distribution_flagged": float((~domain.in_domain(in_distribution)).mean()),
        }
        print(
            f"scalar ablation {variant}: weight {best if scalars else '-'} (validation), report halves: "
            f"mean detection {100 * mean_detection(reported):.0f} %, held-out flagged "
            f"{100 * result['variants'][variant]['in_distribution_flagged']:.1f} %",
            flush=True,
        )
    return result


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


def ood_command(args):
    import torch

    torch.set_num_threads(1)
    if not args.report and args.backbone:
        run(args.backbone, args.bootstrap, args.alpha)
    return report()


def register(sub):
    o = sub.add_parser(
        "ood",
        help="out-of-distribution benchmark on GFN2-xTB labels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    o.add_argument("--backbone", choices=BACKBONES)
    o.add_argument("--report", action="store_true", help="results/ood.md from every backbone's JSON")
    o.add_argument("--bootstrap", type=int, default=200)
    o.add_argument("--alpha", type=float, default=0.02)
    o.set_defaults(handler=ood_command)
