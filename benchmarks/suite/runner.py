"""``run`` of one backbone x dataset x size: the cached (or newly trained) seeds, one feature
extraction per set, PROBE fitted and evaluated at every label, OOD detection, the cost
table, and the result JSON and Markdown under ``benchmarks/results/``."""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.common import CACHE, RESULTS, heldout_path
from benchmarks.report import write_markdown
from benchmarks.suite.cost import measure_cost
from benchmarks.suite.page import markdown
from benchmarks.suite.protocol import LABELS, calibration_fraction, ood_file


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
                    from benchmarks.ood.protocol import paired_difference

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


def ood_detection(in_arrays, ood_arrays, n_bootstrap):
    """Each signal as a detector of out-of-distribution structures (positive class: OOD),
    on the held-out evaluation half + the OOD set; and how many PROBE's decision rule flags."""
    from probe_base.report.bootstrap import evaluate_signal

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
