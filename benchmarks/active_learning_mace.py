"""One active-learning round on 3BPA with a MACE backbone: does labelling the 50 structures
PROBE picks improve the backbone more than labelling 50 picked at random?

The backbone (MACE seed 1 of ``python -m benchmarks train mace``) was trained on 300 K MD
(train_300K). The held-out set (train_mixedT configurations not in train_300K: 300, 600,
1200 K MD) is split once (seed 0) into

    probe-fit  30 %   labelled: PROBE is fitted here (force-RMSE error above its median)
    pool       40 %   "unlabelled": the candidates to label next
    evaluation 30 %   never touched until the retrained backbones are scored

Arms (50 structures each, taken from the pool, with their DFT labels):
    probe       ``probe select --diverse`` (least reliable, farthest-point spread)
    ensemble    the 50 of largest ensemble-of-4 force std (what users do today)
    random-<k>  50 uniformly at random (seed 100 + k), k = 0..5
    none        no new structure: retrained on train_300K alone (training noise, for scale)

Each arm retrains MACE from scratch with ``mace_run_train`` on train_300K + its 50
structures (same seed, same hyperparameters, same epochs as the backbone), and the new
model is scored on the evaluation split. Trained models are cached; re-runs skip them.

    python -m benchmarks active-learning                 # all arms
    python -m benchmarks active-learning --arms probe random-0

Writes benchmarks/results/active_learning_mace_3bpa.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.backbones.mace import DATASETS, evaluate, train_command
from benchmarks.common import CACHE, DATA, RESULTS, heldout_path
from benchmarks.report import write_markdown
from benchmarks.signal_ablation.stores import stores_for

WORK = CACHE / "active_learning" / "mace_3bpa"
N_PICK = 50
N_RANDOM = 6
SPLIT = (0.3, 0.4, 0.3)  # probe-fit, pool, evaluation
log = logging.getLogger("active_learning")


def splits(n, seed=0):
    order = np.random.default_rng(seed).permutation(n)
    a = int(round(SPLIT[0] * n))
    b = a + int(round(SPLIT[1] * n))
    return np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b:])


def write_xyz(structures, path):
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.xyz")
    ase.io.write(partial, structures, format="extxyz")
    os.replace(partial, path)


def prepare(threads):
    """Fit PROBE on the probe-fit split, write the pool and evaluation files, pick every
    arm's 50 structures. Returns {arm: pool indices} and the split sizes."""
    import ase.io
    import torch

    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.selection import select_file
    from probe_base.store import load_store

    torch.set_num_threads(threads)
    picks_path = WORK / "picks.json"
    if picks_path.exists():
        return json.loads(picks_path.read_text())
    models = find_or_train("mace", "3bpa", train=False)
    store_path, adapter = stores_for("mace", "3bpa", models)[models[0].stem]
    data = load_store(store_path)
    heldout = ase.io.read(heldout_path("3bpa"), ":")
    assert len(heldout) == len(data) and np.array_equal(data.source_index, np.arange(len(data)))
    fit_idx, pool_idx, eval_idx = splits(len(data))
    write_xyz([heldout[i] for i in pool_idx], WORK / "pool.xyz")
    write_xyz([heldout[i] for i in eval_idx], WORK / "evaluation.xyz")

    fit_data = data.subset(fit_idx)
    label = LabelSpec(target="force_rmse", quantile=0.5).resolved_on(fit_data)
    clf = ProbeClassifier(seed=0).fit(fit_data, label.reliable(label.errors(fit_data)))
    probe_path = WORK / "probe.probe"
    save_probe(probe_path, clf, label, data.fingerprint, {"fit_indices": fit_idx.tolist()})

    # the user's step: score the unlabelled pool with the backbone + probe, pick 50
    picked = select_file(probe_path, adapter, WORK / "pool.xyz", WORK / "picked_probe.xyz", N_PICK, diverse=True)
    arms = {"probe": [int(a.info["probe_pool_index"]) for a in picked]}
    pool_force_std = data.member_force_std[pool_idx]
    arms["ensemble"] = np.argsort(-pool_force_std)[:N_PICK].tolist()
    arms["none"] = []  # retrained on train_300K alone: training noise without new data
    for k in range(N_RANDOM):
        arms[f"random-{k}"] = np.sort(
            np.random.default_rng(100 + k).choice(len(pool_idx), N_PICK, replace=False)
        ).tolist()
    pool_errors = data.force_rmse[pool_idx]
    record = {
        "arms": arms,
        "n_fit": len(fit_idx),
        "n_pool": len(pool_idx),
        "n_evaluation": len(eval_idx),
        "label": label.to_dict(),
        # how bad (for the original backbone) the picked structures are: a check of the pick
        "picked_force_rmse_meV_per_A": {arm: float(np.mean(pool_errors[idx]) * 1e3) for arm, idx in arms.items()},
        "pool_force_rmse_meV_per_A": float(np.mean(pool_errors) * 1e3),
    }
    picks_path.write_text(json.dumps(record, indent=2))
    return record


def train_arm(arm, pool_indices, args):
    """mace_run_train on train_300K + the arm's structures; returns the model path."""
    import ase.io

    work_root = args.work
    target = work_root / arm / "model.model"
    if target.exists():
        return target
    work = work_root / arm / "work"
    work.mkdir(parents=True, exist_ok=True)
    pool = ase.io.read(work_root / "pool.xyz", ":")
    train = ase.io.read(args.data / "3bpa" / "train_300K.xyz", ":") + [pool[i] for i in pool_indices]
    write_xyz(train, work_root / arm / "train.xyz")
    # absolute paths: train_command joins them onto its data folder
    spec = dict(
        DATASETS["3bpa"],
        train=str((work_root / arm / "train.xyz").resolve()),
        isolated=str((args.data / DATASETS["3bpa"]["isolated"]).resolve()),
    )
    cmd = train_command(
        "3bpa", spec, args.seed, work, args.data, "float32", spec["epochs"], spec["start_swa"], device=args.device
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log.info("%s: training on %d structures in %s", arm, len(train), work)
    started = time.time()
    with open(work / "mace_run_train.out", "a") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    produced = work / f"seed{args.seed}_stagetwo.model"
    if rc != 0 or not produced.exists():
        raise SystemExit(f"{arm}: mace_run_train failed (rc {rc}); see {work / 'mace_run_train.out'}")
    shutil.copyfile(produced, target.with_suffix(".partial"))
    os.replace(target.with_suffix(".partial"), target)
    log.info("%s: trained in %.1f min", arm, (time.time() - started) / 60)
    return target


def active_learning(args):
    args.work, args.data = args.work.resolve(), args.data.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import ase.io
    import torch

    torch.set_num_threads(args.threads)
    if args.train_only:
        arms = json.loads((args.work / "picks.json").read_text())["arms"]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.parallel) as pool:  # each training is a subprocess
            list(pool.map(lambda arm: train_arm(arm, arms[arm], args), args.arms))
        return 0
    record = prepare(args.threads)
    missing = [arm for arm in record["arms"] if arm not in record["picked_force_rmse_meV_per_A"]]
    if missing:  # arms added after the first pick: how bad their structures were, from the store
        from probe_base.store import load_store

        models = find_or_train("mace", "3bpa", train=False)
        data = load_store(stores_for("mace", "3bpa", models)[models[0].stem][0])
        pool_errors = data.force_rmse[splits(len(data))[1]]
        for arm in missing:
            idx = record["arms"][arm]
            record["picked_force_rmse_meV_per_A"][arm] = float(np.mean(pool_errors[idx]) * 1e3) if idx else float("nan")
    evaluation = ase.io.read(WORK / "evaluation.xyz", ":")
    results_path = RESULTS / "active_learning_mace_3bpa.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.update({k: v for k, v in record.items() if k != "arms"})
    results["arms_pool_indices"] = record["arms"]
    results.setdefault("evaluation", {})
    backbone = find_or_train("mace", "3bpa", train=False)[0]
    results["evaluation"]["before (backbone)"] = evaluate(backbone, evaluation)
    for arm in args.arms:
        model = train_arm(arm, record["arms"][arm], args)
        results["evaluation"][arm] = evaluate(model, evaluation)
        log.info("%s: %s", arm, results["evaluation"][arm])
        results_path.write_text(json.dumps(results, indent=2))
    write_report(results)
    return 0


def write_report(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = results["evaluation"]
    rows = [
        "| arm | picked structures: original force RMSE (meV/Å) | evaluation energy MAE (meV) "
        "| evaluation force RMSE (meV/Å) | evaluation force MAE (meV/Å) |",
        "|---|---|---|---|---|",
    ]
    picked = results["picked_force_rmse_meV_per_A"]
    for arm, m in ev.items():
        rows.append(
            f"| {arm} | {picked.get(arm, float('nan')):.1f} | {m['energy_mae_meV']:.1f} | "
            f"{m['forces_rmse_meV_per_A']:.1f} | {m['forces_mae_meV_per_A']:.1f} |"
        )
    randoms = [m for arm, m in ev.items() if arm.startswith("random-")]
    if len(randoms) > 1:

        def spread(key):
            values = np.array([m[key] for m in randoms])
            return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"

        rows.append(
            f"| random, mean ± sd of {len(randoms)} draws | "
            f"{np.mean([picked[a] for a in ev if a.startswith('random-')]):.1f} | "
            f"{spread('energy_mae_meV')} | {spread('forces_rmse_meV_per_A')} | "
            f"{spread('forces_mae_meV_per_A')} |"
        )
    text = (
        f"# Active learning round, MACE on 3BPA\n\nprobe-fit {results['n_fit']}, pool "
        f"{results['n_pool']}, evaluation {results['n_evaluation']} structures; 50 picked per "
        f"arm; pool mean force RMSE of the original backbone "
        f"{results['pool_force_rmse_meV_per_A']:.1f} meV/Å.\n\n" + "\n".join(rows) + "\n"
    )
    write_markdown(RESULTS / "active_learning_mace_3bpa.md", text)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = list(ev)
    for ax, key, title in zip(
        axes, ["energy_mae_meV", "forces_rmse_meV_per_A"], ["energy MAE (meV)", "force RMSE (meV/Å)"]
    ):
        ax.bar(
            range(len(names)),
            [ev[n][key] for n in names],
            color=[
                "grey" if n.startswith("before") else "C0" if n == "probe" else "C1" if n == "ensemble" else "C2"
                for n in names
            ],
        )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(f"evaluation split: {title}")
    fig.tight_layout()
    fig.savefig(RESULTS / "active_learning_mace_3bpa.png", dpi=120)


def register(sub):
    parser = sub.add_parser(
        "active-learning",
        help="one active-learning round on 3BPA with MACE: PROBE's picks vs the ensemble's vs random",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arms", nargs="+", default=["probe", "ensemble", "none"] + [f"random-{k}" for k in range(N_RANDOM)]
    )
    parser.add_argument("--seed", type=int, default=1, help="MACE training seed (the backbone's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="mace_run_train's --device (cpu, cuda)")
    parser.add_argument("--parallel", type=int, default=1, help="arms trained at once (GPU)")
    parser.add_argument(
        "--train-only", action="store_true", help="train the arms of an existing picks.json (e.g. on a GPU machine)"
    )
    parser.add_argument("--work", type=Path, default=WORK, help="folder of picks.json and the arms")
    parser.add_argument("--data", type=Path, default=DATA, help="reference data folder")
    parser.set_defaults(handler=active_learning)
