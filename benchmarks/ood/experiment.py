"""``ood``'s run for one backbone: per label the probe fitted with defaults on the held-out
half, every set evaluated at one operating point, the scalar-rule ablation (``ablation``),
then the backbone's result files (``page``)."""

from __future__ import annotations

import json
import time

from benchmarks.common import CACHE, RESULTS
from benchmarks.ood.ablation import scalar_ablation
from benchmarks.ood.page import markdown, plot
from benchmarks.ood.protocol import METHODS, PROTOCOL, SETS, _separation, paired_difference, stores_of
from benchmarks.report import write_markdown
from benchmarks.suite.protocol import LABELS


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
