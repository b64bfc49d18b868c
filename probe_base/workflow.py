"""The steps the CLI, the demo and the benchmarks share: fit, evaluate, predict.

Each step reads and writes files only through the store and the artifact modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .artifact import atomic_write, load_probe, save_probe
from .baselines import all_baselines
from .classifier import ProbeClassifier
from .labels import LabelSpec
from .metrics import evaluate_signal, format_table
from .selective import selective_evaluation
from .store import load_store


def split_holdout(n, fraction, seed):
    """Deterministic split of ``n`` structures: (fit indices, held-out indices)."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = int(round(fraction * n))
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def fit_probe(store_path, output, label: LabelSpec, classifier: ProbeClassifier,
              eval_fraction: float = 0.0, split_seed: int = 0, comm=None):
    """Fit on a feature store (minus an optional held-out fraction); write ``output``.
    ``comm`` (a ``probe_base.distributed.Group``): every rank of a torchrun job calls this,
    features are streamed from the store, and rank 0 writes ``output``."""
    data = load_store(store_path, lazy=comm is not None and comm.world > 1)
    fit_idx, eval_idx = split_holdout(len(data), eval_fraction, split_seed)
    fit_data = data.subset(fit_idx)
    resolved = label.resolved_on(fit_data)
    fit_errors = resolved.errors(fit_data)
    y = resolved.reliable(fit_errors, context=f"fitting set of {store_path}")
    classifier.fit(fit_data, y, comm=comm)
    info = {
        "fit_store": str(Path(store_path).resolve()),
        "store_identity": data.attrs,
        "fit_indices": fit_idx.tolist(),
        "eval_indices": eval_idx.tolist(),
        "n_fit": int(len(fit_idx)),
        "fit_error_quantiles": np.quantile(fit_errors, [0.1, 0.5, 0.9]).tolist(),
        "epochs": [len(h) for h in classifier.history_],
        "decision_threshold": 0.5,
    }
    if comm is None or comm.rank == 0:
        save_probe(output, classifier, resolved, data.fingerprint, info)
    if comm is not None:
        comm.barrier()  # every rank returns once the file is there
    return resolved, classifier


UNGUARDED = "PROBE without domain guard"


def evaluate_probe(probe_path, store_path, n_bootstrap=1000, seed=0, allow_mismatch=False):
    """PROBE and the baselines on the same structures. If ``store_path`` is the store the
    probe was fitted on, only its held-out structures are used."""
    artifact = load_probe(probe_path)
    data = load_store(store_path)
    artifact.check_backbone(data.fingerprint, allow_mismatch, source=str(probe_path))
    info = artifact.info["info"]
    same_store = info.get("store_identity") == data.attrs
    fit_data = None
    if same_store:
        if not info["eval_indices"]:
            raise ValueError(f"{store_path} is the store {probe_path} was fitted on, with no "
                             "held-out part: evaluate on another store or refit with --eval-fraction")
        fit_data = data.subset(info["fit_indices"])
        data = data.subset(info["eval_indices"])
    elif Path(info.get("fit_store", "")).exists():
        fit_store = load_store(info["fit_store"])
        fit_data = fit_store.subset(info["fit_indices"])
    errs = artifact.label.errors(data)
    unreliable = (errs > artifact.label.threshold).astype(int)
    classifier = artifact.classifier
    p_network, importance = classifier.predict_with_importance(data, guard=False)
    inside = classifier.in_domain(data)
    p_reliable = classifier.guarded(p_network, data, inside)
    scores = {"PROBE": 1 - p_reliable}
    if getattr(classifier, "domain_radius_", None) is not None:  # what the guard changes
        scores[UNGUARDED] = 1 - p_network
    scores.update(all_baselines(fit_data, data, seed))
    results = {}
    for name, score in scores.items():
        results[name] = evaluate_signal(score, unreliable, errs,
                                        {"PROBE": p_reliable, UNGUARDED: p_network}.get(name),
                                        n_bootstrap=n_bootstrap, seed=seed)
    return {
        "label": artifact.label.to_dict(),
        "n_structures": int(len(data)),
        "unreliable_fraction": float(unreliable.mean()),
        "in_domain_fraction": float(inside.mean()),
        "metrics": results,
        "selective": selective_evaluation(artifact, data, p_reliable, unreliable),
        "arrays": {"errors": errs, "unreliable": unreliable, "p_reliable": p_reliable,
                   "scores": scores, "importance": importance, "data": data},
    }


def write_evaluation(evaluation, output_dir) -> Path:
    """metrics.json, the four plots and report.html (all of it on one page); returns the folder."""
    from .report import write_plots
    from .report_html import write_report

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in evaluation.items() if k != "arrays"}
    atomic_write(output_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    write_report(evaluation, output_dir, write_plots(evaluation, output_dir))
    return output_dir


def metrics_table(evaluation) -> str:
    return format_table(evaluation["metrics"])


def predict_file(probe_path, adapter, input_path, output_path, index=":", batch_size=32,
                 allow_mismatch=False, progress=True, on_batch=None):
    """Score every structure of ``input_path``; write extxyz with ``probe_reliability``
    per structure and ``probe_importance`` per atom (plus the backbone's energy).
    ``on_batch(batch, features)``, if given, sees each batch of input structures and its
    backbone features (e.g. ``chemiscope_export.PredictionCollector``)."""
    import ase.io
    from tqdm.auto import tqdm

    from .data import count_structures, iter_batches
    from .store import FeatureSet

    artifact = load_probe(probe_path)
    artifact.check_backbone(adapter.fingerprint(), allow_mismatch, source=str(probe_path))
    annotated = []
    bar = tqdm(total=count_structures(input_path, index), unit="struct", desc="predict", disable=not progress)

    def score(batch):
        atoms_list = [s.atoms for s in batch]
        out = adapter.run(atoms_list, compute_forces=False, members=False, source=str(input_path),
                          indices=[s.index for s in batch])
        features = FeatureSet.from_backbone_output(out, atoms_list)
        p, importance = artifact.classifier.predict_with_importance(features)
        if on_batch is not None:
            on_batch(batch, features)
        for atoms, prob, imp, energy in zip(atoms_list, p, importance, out.energies):
            atoms = atoms.copy()
            atoms.calc = None
            atoms.info["probe_reliability"] = float(prob)
            atoms.info["probe_energy"] = float(energy)
            atoms.arrays["probe_importance"] = imp.astype(np.float64)
            annotated.append(atoms)
        bar.update(len(batch))

    for batch in iter_batches(input_path, index, batch_size):
        score(batch)
    bar.close()
    atomic_write(Path(output_path), lambda tmp: ase.io.write(str(tmp), annotated, format="extxyz"))
    return annotated
