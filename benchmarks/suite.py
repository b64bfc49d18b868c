"""The benchmark suite: PROBE vs ensemble disagreement on real DFT data, and the cost.

For one backbone x dataset x size (``run``), or every combination this environment can
run (``run --all``; each backbone plugin lives in its own environment, so ``nox -s
benchmarks`` runs ``--all`` once per backbone environment and then ``report``):

1. the backbone's 4 seeds, trained with the framework's own tool by
   ``python -m benchmarks train <backbone>`` (benchmarks/backbones/) and cached (re-runs
   skip training);
2. one feature extraction of the held-out DFT set (seed 1 probed, all 4 seeds as the
   ensemble), and of the out-of-distribution set (methanol for the ethanol backbone;
   the 3BPA held-out set is itself out of distribution: 300-1200 K vs a 300 K training set);
3. PROBE fitted on one half of the held-out set (split seed 0), evaluated on the other half
   and on the OOD set, at three labels: total-energy error above chemical accuracy
   (1 kcal/mol = 0.0434 eV) and force RMSE above 0.1 eV/Å (the defaults), and total-energy
   error above the fitting median (the official PROBE label); the probe has its domain test
   on (P = 0 outside), and the same network without it (the paper's
   PROBE) is scored alongside;
4. AUROC, AUPRC, AURC, E-AURC, Spearman, ECE with 95 % bootstrap intervals for PROBE,
   ensemble energy std, ensemble force std, latent distance and random; every method at
   one operating point (PROBE's decision rule, 5 % false alarms set on its calibration
   structures, a quarter of the fitting half or more where that holds fewer than 20 reliable
   ones; each baseline cut at the same rate on the same structures: measured false alarms
   and detection, paired differences); the cost table.

    python -m benchmarks run --backbone mace --dataset ethanol
    python -m benchmarks run --backbone mace --dataset 3bpa --size large
    python -m benchmarks run --all                 # whatever this environment can run
    python -m benchmarks scaling --backbone mace   # probe time / memory vs atoms (benchmarks/scaling.py)
    python -m benchmarks report                    # results/README.md from every results JSON

Writes ``benchmarks/results/<backbone>_<dataset>[_<size>].{json,md}`` and the plots of each
evaluation under ``benchmarks/results/<backbone>_<dataset>[_<size>]/<label>_<set>/``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.backbones import find_models, find_or_train
from benchmarks.common import BACKBONES, CACHE, DATA, DATASETS, RESULTS, SIZES, heldout_path
from benchmarks.report import interval, write_markdown

#: the default labels (absolute tolerances, ``probe_base.labels.DEFAULT_TOLERANCES``: 1 kcal/mol
#: per structure, 0.1 eV/Å force RMSE) and the official PROBE code's median label
LABELS = {
    "energy_tolerance": dict(target="energy"),
    "force_rmse_tolerance": dict(target="force_rmse"),
    "energy_median": dict(target="energy", quantile=0.5),
}
METHODS = (
    "PROBE",
    "PROBE network alone",
    "novelty",
    "LLPR",
    "GMM NLL",
    "ensemble E std",
    "ensemble F std",
    "latent distance",
    "random",
)
METRICS = ("auroc", "auprc", "aurc", "e_aurc", "spearman", "ece")


def ood_file(dataset):
    """The out-of-distribution structures for a backbone trained on ``dataset`` (or None)."""
    if dataset != "ethanol":
        return None
    import ase.io

    path = CACHE / "methanol_ood.xyz"
    if not path.exists():
        frames = [
            a
            for a in ase.io.read(DATA / "ethanol" / "test_eth_meth.xyz", ":")
            if a.info.get("config_type") == "methanol"
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, frames, format="extxyz")
    return path


def calibration_fraction(store, label, eval_fraction=0.5, split_seed=0, false_alarm=0.05):
    """The share of the fitting half that sets the decision cut: the default 0.25, or more
    (at most 0.5) where that leaves too few reliable calibration structures for the rate.
    Chosen from the fitting half's label counts alone."""
    from probe_base.decision import DEFAULT_CALIBRATION_FRACTION, min_reliable_calibration
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    data = load_store(store)
    fit = data.subset(split_holdout(len(data), eval_fraction, split_seed)[0])
    resolved = label.resolved_on(fit)
    n_reliable = int((resolved.errors(fit) <= resolved.threshold).sum())
    needed = min_reliable_calibration(false_alarm) + 1
    return float(min(0.5, max(DEFAULT_CALIBRATION_FRACTION, needed / max(n_reliable, 1))))


def backbone_errors(data, models):
    """Held-out errors of the backbones, from the extraction this run made: energy MAE and
    mean signed error of every seed, force MAE (per atom component norm) and RMSE of seed 1."""
    members = data.member_energies if data.member_energies is not None else data.energy_pred[:, None]
    result = {}
    for k, model in enumerate(models[: members.shape[1]]):
        error = members[:, k] - data.energy_ref
        result[model.name] = {
            "energy_mae_meV": 1000 * float(np.mean(np.abs(error))),
            "energy_mean_signed_error_meV": 1000 * float(np.mean(error)),
        }
    first = result[models[0].name]
    first["force_rmse_meV_per_A"] = 1000 * float(np.sqrt(np.mean(data.force_rmse**2)))
    first["atom_force_error_mean_meV_per_A"] = 1000 * float(np.mean(data.atom_force_error))
    return result


def run(backbone, dataset, size, n_bootstrap=1000, train=True):
    import torch

    from probe_base.decision import DecisionError
    from probe_base.errors import LabelError
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.plugins import get_adapter_class
    from probe_base.store import extract, load_store
    from probe_base.workflow.evaluate import evaluate_probe, write_evaluation
    from probe_base.workflow.fit import fit_probe

    clock = {"started": time.perf_counter()}
    models = find_or_train(backbone, dataset, size, train, minimum=2)
    clock["trained"] = time.perf_counter()
    name = f"{backbone}_{dataset}" + ("" if size == "small" else f"_{size}")
    adapter_class = get_adapter_class(backbone)
    layers = [layer.name for layer in adapter_class(models[:1]).feature_layers()]
    adapter = adapter_class(models, layers=layers)
    sets = {"held-out": heldout_path(dataset)}
    if ood_file(dataset) is not None:
        sets["OOD (methanol)"] = ood_file(dataset)
    stores = {}
    for set_name, path in sets.items():
        # the held-out store has the same name as signal_ablation's: extracted once for both
        where = dataset if size == "small" else f"{dataset}-{size}"
        tag = "" if set_name == "held-out" else "_ood"
        stores[set_name] = CACHE / "stores" / f"{backbone}_{where}{tag}_{models[0].stem}_n{len(models)}.h5"
        extract(adapter, path, stores[set_name])
    clock["extracted"] = time.perf_counter()

    out_dir = RESULTS / name
    evaluations, skipped, fits = {}, {}, {}
    for label_name, label_args in LABELS.items():
        probe_path = CACHE / "suite" / f"{name}_{label_name}.probe"
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            clf = fit_probe(
                stores["held-out"],
                probe_path,
                LabelSpec(**label_args),
                ProbeClassifier(seed=0),
                eval_fraction=0.5,
                split_seed=0,
                calibration_fraction=calibration_fraction(stores["held-out"], LabelSpec(**label_args)),
            ).classifier_
        except (LabelError, DecisionError) as error:  # e.g. every structure within chemical accuracy
            skipped[label_name] = str(error).split("\n")[0]
            print(f"{name} {label_name}: skipped: {skipped[label_name]}", flush=True)
            continue
        fits[label_name] = {"seconds": time.perf_counter() - started, "epochs": int(sum(len(h) for h in clf.history_))}
        for set_name, store in stores.items():
            try:
                evaluation = evaluate_probe(probe_path, store, n_bootstrap=n_bootstrap)
            except (LabelError, ValueError) as error:
                skipped[f"{label_name} / {set_name}"] = str(error).split("\n")[0]
                continue
            key = f"{label_name} / {set_name}"
            folder = out_dir / f"{label_name}_{'ood' if set_name.startswith('OOD') else 'heldout'}"
            if 0 < evaluation["unreliable_fraction"] < 1:  # plots need both classes
                write_evaluation(evaluation, folder)
            evaluations[key] = {k: v for k, v in evaluation.items() if k != "arrays"}
            if set_name == "held-out":
                in_distribution = evaluation["arrays"]
                if "PROBE network alone" in evaluation["arrays"]["scores"]:
                    from benchmarks.ood import paired_difference

                    scores = evaluation["arrays"]["scores"]
                    evaluations[key]["default_minus_network"] = paired_difference(
                        evaluation["arrays"]["unreliable"], scores["PROBE"], scores["PROBE network alone"], n_bootstrap
                    )
            else:  # can each signal tell the OOD structures from the held-out ones?
                evaluations[key]["ood_detection"] = ood_detection(in_distribution, evaluation["arrays"], n_bootstrap)
            print(
                f"{name} {key}: PROBE AUROC {evaluation['metrics']['PROBE']['auroc'][0]:.3f}, "
                f"ensemble E std {evaluation['metrics'].get('ensemble E std', {}).get('auroc', [np.nan])[0]:.3f}",
                flush=True,
            )

    clock["evaluated"] = time.perf_counter()
    data = load_store(stores["held-out"])
    cost = measure_cost(adapter, sets["held-out"], data, name, fits.get("energy_median"))
    clock["done"] = time.perf_counter()
    wall = {
        "training_seconds": clock["trained"] - clock["started"],
        "extraction_seconds": clock["extracted"] - clock["trained"],
        "fit_and_evaluation_seconds": clock["evaluated"] - clock["extracted"],
        "cost_table_seconds": clock["done"] - clock["evaluated"],
        "total_seconds": clock["done"] - clock["started"],
        "torch_threads": torch.get_num_threads(),
    }
    payload = {
        "backbone": backbone,
        "dataset": dataset,
        "size": size,
        "models": [str(m) for m in models],
        "layers": layers,
        "sets": {k: str(v) for k, v in sets.items()},
        "backbone_errors": backbone_errors(data, models),
        "labels": LABELS,
        "fits": fits,
        "skipped": skipped,
        "evaluations": evaluations,
        "cost": cost,
        "wall": wall,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    write_markdown(RESULTS / f"{name}.md", markdown(payload))
    return payload


def cost_table(adapter, data_path, n=200, rounds=5):
    """Wall times on the same structures: one backbone pass, the same pass with the hooks,
    the ensemble. Interleaved rounds, so that another process on the machine slows all
    three alike; ratios are medians of the per-round ratios, times the per-round minimum."""
    import ase.io

    frames = ase.io.read(data_path, f":{n}")
    primary_only = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)

    def batches(run):
        for i in range(0, len(frames), 32):
            run(frames[i : i + 32])

    runs = {
        "backbone": lambda: batches(lambda b: primary_only.predict(primary_only.models[0], b, True)),
        "hooked": lambda: batches(lambda b: primary_only.run(b, compute_forces=True, members=False)),
        "ensemble": lambda: batches(lambda b: [adapter.predict(m, b, True) for m in adapter.models]),
    }
    for run in runs.values():
        run()  # warm-up
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    plain = np.array(times["backbone"])
    return {
        "structures": n,
        "rounds": rounds,
        "backbone_seconds": float(plain.min()),
        "backbone_with_hooks_seconds": float(min(times["hooked"])),
        "ensemble_seconds": float(min(times["ensemble"])),
        "n_members": len(adapter.models),
        "hook_overhead_ratio": float(np.median(np.array(times["hooked"]) / plain)),
        "ensemble_ratio": float(np.median(np.array(times["ensemble"]) / plain)),
    }


def measure_cost(adapter, heldout, data, name, fit=None, rounds=5):
    """The cost table: backbone pass, hooks, ensemble (interleaved rounds), the probe's
    inference on the same structures, and (given the energy-median fit's time and epochs)
    a probe epoch on cached features vs one that re-runs the backbone. ``data``: the
    held-out feature store, loaded."""
    from probe_base.artifact import load_probe

    cost = cost_table(adapter, heldout, rounds=rounds)
    probe_path = CACHE / "suite" / f"{name}_energy_median.probe"
    if fit is None or not probe_path.exists():  # no probe fitted by this run
        return cost
    clf = load_probe(probe_path).classifier
    sub = data.subset(np.arange(min(cost["structures"], len(data))))
    clf.predict_proba(sub)  # warm-up
    t0 = time.perf_counter()
    clf.predict_proba(sub)
    cost["probe_seconds"] = time.perf_counter() - t0
    cost["probe_overhead_ratio"] = cost["probe_seconds"] / cost["backbone_seconds"]
    n_fit = len(data) - len(data) // 2
    cost["probe_epoch_seconds_cached_features"] = fit["seconds"] / max(fit["epochs"], 1)
    # the official code re-runs the backbone every epoch: one pass over the fitting half
    cost["backbone_pass_over_fit_set_seconds"] = cost["backbone_seconds"] / cost["structures"] * n_fit
    cost["epoch_speedup_cached_vs_rerun"] = (
        cost["backbone_pass_over_fit_set_seconds"] + cost["probe_epoch_seconds_cached_features"]
    ) / cost["probe_epoch_seconds_cached_features"]
    return cost


def remeasure_cost(backbone, dataset, size, rounds=5):
    """Only the cost table of a finished run, again (e.g. on a quiet machine): same models,
    same cached probe and fit time; the JSON and Markdown are rewritten."""
    from pathlib import Path

    from probe_base.plugins import get_adapter_class
    from probe_base.store import load_store

    name = f"{backbone}_{dataset}" + ("" if size == "small" else f"_{size}")
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    adapter = get_adapter_class(backbone)([Path(m) for m in payload["models"]], layers=payload["layers"])
    where = dataset if size == "small" else f"{dataset}-{size}"
    store = CACHE / "stores" / f"{backbone}_{where}_{Path(payload['models'][0]).stem}_n{len(payload['models'])}.h5"
    payload["cost"] = measure_cost(
        adapter, payload["sets"]["held-out"], load_store(store), name, payload["fits"].get("energy_median"), rounds
    )
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    text = write_markdown(RESULTS / f"{name}.md", markdown(payload), echo=False)
    print(text.split("## Cost")[-1])
    return payload


def ood_detection(in_arrays, ood_arrays, n_bootstrap):
    """Each signal as a detector of out-of-distribution structures (positive class: OOD),
    on the held-out evaluation half + the OOD set; and how many PROBE's decision rule flags."""
    from probe_base.report.metrics import evaluate_signal

    is_ood = np.r_[np.zeros(len(in_arrays["p_reliable"])), np.ones(len(ood_arrays["p_reliable"]))]
    result = {
        "n_in_distribution": int((is_ood == 0).sum()),
        "n_ood": int(is_ood.sum()),
        "mean_p_reliable_in_distribution": float(np.mean(in_arrays["p_reliable"])),
        "mean_p_reliable_ood": float(np.mean(ood_arrays["p_reliable"])),
        "flagged_in_distribution": float(np.mean(in_arrays["flagged"])),
        "flagged_ood": float(np.mean(ood_arrays["flagged"])),
        "metrics": {},
    }
    for method in in_arrays["scores"]:
        if method in ood_arrays["scores"] and method != "random":
            score = np.r_[in_arrays["scores"][method], ood_arrays["scores"][method]]
            m = evaluate_signal(score, is_ood.astype(int), n_bootstrap=n_bootstrap)
            result["metrics"][method] = {k: m[k] for k in ("auroc", "auprc")}
    return result


def verdict(metrics, against="ensemble E std"):
    """One sentence: does PROBE beat this ensemble signal, intervals apart?"""
    probe, ens = metrics["PROBE"], metrics.get(against)
    if ens is None:
        return f"no {against} to compare with"
    parts = []
    for metric, higher_is_better in (("auroc", True), ("aurc", False)):
        p, e = probe[metric], ens[metric]
        better = p[0] > e[0] if higher_is_better else p[0] < e[0]
        apart = p[1] > e[2] if higher_is_better else p[2] < e[1]
        worse_apart = p[2] < e[1] if higher_is_better else p[1] > e[2]
        if better and apart:
            parts.append(f"PROBE beats it on {metric.upper()} (intervals do not overlap)")
        elif better:
            parts.append(f"PROBE is ahead on {metric.upper()} but the intervals overlap")
        elif worse_apart:
            parts.append(f"it beats PROBE on {metric.upper()} (intervals do not overlap)")
        else:
            parts.append(f"it is ahead on {metric.upper()} but the intervals overlap")
    return f"vs {against}: " + "; ".join(parts) + "."


def markdown(payload):
    b, d, s = payload["backbone"], payload["dataset"], payload["size"]
    lines = [
        f"# {b} on {d} ({s} backbone, {len(payload['models'])} seeds)",
        "",
        f"`python -m benchmarks run --backbone {b} --dataset {d} --size {s}`",
        "",
    ]
    errors = payload.get("backbone_errors", {})
    if errors:
        lines += [
            "Backbones on the whole held-out set (the first is the probed one; force errors are stored for it only):",
            "",
            "| model | energy MAE (meV) | mean signed energy error (meV) | force RMSE (meV/Å) | "
            "mean atom force error (meV/Å) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['energy_mae_meV']:.1f} | {m['energy_mean_signed_error_meV']:+.1f} | "
            + (
                f"{m['force_rmse_meV_per_A']:.1f} | {m['atom_force_error_mean_meV_per_A']:.1f} |"
                if "force_rmse_meV_per_A" in m
                else "- | - |"
            )
            for name, m in errors.items()
        ]
        lines += [""]
    if "wall" in payload:
        w = payload["wall"]
        lines += [
            f"Wall time of this run: {w['total_seconds'] / 60:.1f} min (training "
            f"{w['training_seconds'] / 60:.1f}, extraction {w['extraction_seconds'] / 60:.1f}, "
            f"probe fits + evaluation {w['fit_and_evaluation_seconds'] / 60:.1f}, cost table "
            f"{w['cost_table_seconds'] / 60:.1f}; {w['torch_threads']} torch thread).",
            "",
        ]
    for key, ev in payload["evaluations"].items():
        label = ev["label"]
        in_domain = (
            f", {100 * ev['in_domain_fraction']:.0f} % inside the backbone's domain"
            if "in_domain_fraction" in ev
            else ""
        )
        lines += [
            f"## {key}: unreliable = {label['target']} error > {label['threshold']:.4g} "
            f"({ev['n_structures']} structures, {100 * ev['unreliable_fraction']:.0f} % unreliable"
            f"{in_domain})",
            "",
            "| method | " + " | ".join(m.upper().replace("_", "-") for m in METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for method in METHODS:
            if method not in ev["metrics"]:
                continue
            m = ev["metrics"][method]
            lines.append(
                f"| {method} | "
                + " | ".join(interval(m[k]) if k in m and np.isfinite(m[k][0]) else "-" for k in METRICS)
                + " |"
            )
        if "default_minus_network" in ev:
            d = ev["default_minus_network"]
            lines += [
                "",
                "Default (domain test on) minus the network alone, paired bootstrap: AUROC "
                f"{d['auroc'][0]:+.4f} [{d['auroc'][1]:+.4f}, {d['auroc'][2]:+.4f}], AURC "
                f"{d['aurc'][0]:+.4f} [{d['aurc'][1]:+.4f}, {d['aurc'][2]:+.4f}]",
            ]
        for map_name, q in (ev.get("atom_maps") or {}).items():
            lines.append(
                f"Per-atom map '{map_name}': top atom among the 3 worst forces in "
                f"{100 * q['hit_rate']:.0f}% of {q['n_structures']} structures (random "
                f"{100 * q['random_rate']:.0f}%), within-structure Spearman {q['spearman']:.2f}  "
            )
        if ev.get("decisions"):
            lines += ["", decisions_markdown(ev["decisions"], ev.get("paired_at_operating_point"))]
        if 0 < ev["unreliable_fraction"] < 1:
            lines += (
                [""]
                + [
                    f"**{verdict(ev['metrics'], against)}**  "
                    for against in ("ensemble E std", "ensemble F std")
                    if against in ev["metrics"]
                ]
                + [""]
            )
        else:
            lines += ["", "(one class only: ranking metrics are undefined on this set)", ""]
        if "ood_detection" in ev:
            od = ev["ood_detection"]
            lines += [
                f"OOD detection ({od['n_ood']} OOD vs {od['n_in_distribution']} held-out "
                f"structures; mean P(reliable) {od['mean_p_reliable_ood']:.3f} OOD vs "
                f"{od['mean_p_reliable_in_distribution']:.3f} held-out; flagged by the decision rule: "
                f"{100 * od['flagged_ood']:.0f} % vs {100 * od['flagged_in_distribution']:.0f} %):",
                "",
                "| signal | AUROC (OOD vs held-out) | AUPRC |",
                "|---|---|---|",
            ]
            lines += [
                f"| {name} | {interval(m['auroc'])} | {interval(m['auprc'])} |" for name, m in od["metrics"].items()
            ]
            lines += [""]
    for key, why in payload["skipped"].items():
        lines += [f"- {key}: not evaluated: {why}"]
    c = payload["cost"]
    rounds = c.get("rounds", 3)
    lines += [
        "",
        f"## Cost (same structures; {rounds} interleaved rounds: times are minima, ratios "
        "medians of the per-round ratios)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| backbone pass, {c['structures']} structures | {c['backbone_seconds']:.2f} s |",
        f"| hooks overhead (backbone + feature capture) | x{c['hook_overhead_ratio']:.3f} |",
        f"| ensemble of {c['n_members']} / one backbone | x{c['ensemble_ratio']:.2f} |",
    ]
    if "probe_seconds" in c:
        lines += [
            f"| probe inference / backbone pass | {100 * c['probe_overhead_ratio']:.1f} % |",
            f"| probe training epoch on cached features | {c['probe_epoch_seconds_cached_features']:.2f} s |",
            f"| epoch that re-runs the backbone (official code) / cached epoch | "
            f"x{c['epoch_speedup_cached_vs_rerun']:.1f} |",
        ]
    return "\n".join(lines) + "\n"


def _rate(rate, interval):
    if rate is None or not np.isfinite(rate):
        return "-"
    return f"{100 * rate:.1f} %" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def decisions_markdown(decisions, paired=None) -> str:
    """Every method at PROBE's operating point: measured false alarms and detection."""
    lines = [
        "At one operating point (PROBE's rule; every other score cut at the same false-alarm rate on the "
        "same calibration structures; 95 % intervals):",
        "",
        "| method | false alarms (reliable flagged) | detected (unreliable flagged) | rule |",
        "|---|---|---|---|",
    ]
    for name, d in decisions.items():
        lines.append(
            f"| {name} | {_rate(d['reliable_flagged'], d.get('reliable_flagged_interval'))} | "
            f"{_rate(d['unreliable_flagged'], d.get('unreliable_flagged_interval'))} | {d['rule']} |"
        )
    for comparison, d in (paired or {}).items():
        det, fa = d["detection"], d["false_alarm"]
        lines.append(
            f"\nPROBE minus {comparison} ({d['other']}), paired bootstrap: detection "
            f"{100 * det[0]:+.1f} points [{100 * det[1]:+.1f}, {100 * det[2]:+.1f}], false alarms "
            f"{100 * fa[0]:+.1f} [{100 * fa[1]:+.1f}, {100 * fa[2]:+.1f}]  "
        )
    return "\n".join(lines) + "\n"


# ---- report --------------------------------------------------------------------------------
def _leader(probe, ensemble, tie=5e-4):
    if abs(probe - ensemble) < tie:
        return "level"
    return "PROBE ahead" if probe > ensemble else "ensemble ahead"


def _operating_cell(decisions, against) -> str:
    if not decisions or "PROBE" not in decisions:
        return "- (before the decision rule)"
    probe, other = decisions["PROBE"], decisions.get(against)
    cell = f"{_rate(probe['reliable_flagged'], None)}, {_rate(probe['unreliable_flagged'], None)}"
    if other:
        cell += f"; {_rate(other['reliable_flagged'], None)}, {_rate(other['unreliable_flagged'], None)}"
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
    from benchmarks import speed

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


def available_backbones():
    """Backbones whose plugin imports in this environment."""
    from probe_base.plugins import get_adapter_class

    found = []
    for backbone in BACKBONES:
        try:
            get_adapter_class(backbone)
            found.append(backbone)
        except Exception:  # noqa: BLE001 - not installed here: another environment runs it
            continue
    return found


def run_command(args):
    import torch

    torch.set_num_threads(1)
    if not args.all:
        if not (args.backbone and args.dataset):
            raise SystemExit("run: give --backbone and --dataset, or --all")
        run(args.backbone, args.dataset, args.size, args.bootstrap, not args.no_train)
        return 0
    for backbone in available_backbones():
        for dataset in DATASETS:
            for size in SIZES:
                train = size == "small" and not args.no_train
                if len(find_models(backbone, dataset, size)) < 2 and not train:
                    print(f"{backbone}/{dataset}/{size}: no cached models, skipped", flush=True)
                    continue
                run(backbone, dataset, size, args.bootstrap, train)
    return report()


def cost_command(args):
    import torch

    torch.set_num_threads(1)
    remeasure_cost(args.backbone, args.dataset, args.size, args.rounds)
    return 0


def register(sub):
    r = sub.add_parser(
        "run",
        help="the suite: one backbone x dataset x size, or --all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--backbone", choices=BACKBONES)
    r.add_argument("--dataset", choices=DATASETS)
    r.add_argument("--size", choices=SIZES, default="small")
    r.add_argument(
        "--all",
        action="store_true",
        help="every backbone importable here x dataset x size whose models are cached "
        "(small ones are trained if missing)",
    )
    r.add_argument("--no-train", action="store_true", help="use cached models only")
    r.add_argument("--bootstrap", type=int, default=1000)
    r.set_defaults(handler=run_command)
    sub.add_parser("report", help="results/README.md from every suite result (and the speed results)").set_defaults(
        handler=report
    )
    c = sub.add_parser("cost", help="measure a finished run's cost table again (quiet machine)")
    c.add_argument("--backbone", choices=BACKBONES, required=True)
    c.add_argument("--dataset", choices=DATASETS, required=True)
    c.add_argument("--size", choices=SIZES, default="small")
    c.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    c.set_defaults(handler=cost_command)
