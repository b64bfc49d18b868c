"""``probe demo``: the whole PROBE chain on a built-in example, in a few minutes on a CPU.

Real labels from a real calculator (ASE's EMT on copper clusters), a backbone ensemble
trained on cool, ideal clusters, a held-out set that reaches beyond them (hotter,
strained, with vacancies). Extract -> fit on half of the held-out set -> evaluate on the
other half against ensemble disagreement -> annotated extxyz with per-atom importance;
report.html shows it all on one page.
"""

from __future__ import annotations

import time
from pathlib import Path

import ase.io

from probe_base import toy
from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.plugins import get_adapter_class
from probe_base.store import extract
from probe_base.workflow.evaluate import evaluate_probe, metrics_table, write_evaluation
from probe_base.workflow.fit import fit_probe
from probe_base.workflow.predict import predict_file

TRAIN_SEED, HELDOUT_SEED = 0, 1


def demo_data(output_dir: Path, n_train=160, n_heldout=600):
    """The example's structures (deterministic: same seeds, same EMT labels)."""
    paths = {"train": output_dir / "train.xyz", "heldout": output_dir / "heldout.xyz"}
    if not paths["train"].exists():
        ase.io.write(paths["train"], toy.emt_clusters(n_train, seed=TRAIN_SEED, rattle=(0.02, 0.08)))
    if not paths["heldout"].exists():
        ase.io.write(
            paths["heldout"],
            toy.emt_clusters(
                n_heldout, seed=HELDOUT_SEED, rattle=(0.02, 0.2), vacancy_fraction=0.3, strain=(0.97, 1.03)
            ),
        )
    return paths


def run_demo(output_dir="probe-demo-output", backbone="mace", members=4, retrain=False):
    start = time.time()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"[1/5] EMT-labelled copper clusters -> {output_dir}")
    data = demo_data(output_dir)
    if backbone == "toy":  # the example backbone of the core is no installed plugin
        toy.register_toy_adapter()
    adapter_class = get_adapter_class(backbone)
    print(f"[2/5] {members}-member {backbone} ensemble trained on {data['train'].name}")
    models = adapter_class.example_models(data["train"], output_dir / "models", members, retrain=retrain)
    adapter = adapter_class(models)
    print(f"[3/5] features of layers {adapter.layers} for {data['heldout'].name}")
    store = extract(adapter, data["heldout"], output_dir / "heldout.h5", overwrite=True)
    print("[4/5] probe fit on half the held-out set (cross-fitted, calibrated)")
    probe_path = output_dir / f"{backbone}.probe"
    label = fit_probe(
        store, probe_path, LabelSpec("energy", quantile=0.5), ProbeClassifier(seed=0, progress=True), eval_fraction=0.5
    ).label_
    evaluation = evaluate_probe(probe_path, store, n_bootstrap=500)
    report = write_evaluation(evaluation, output_dir / "report") / "report.html"
    explorer = _write_chemiscope(evaluation, output_dir / "report" / "chemiscope.json.gz")
    print("[5/5] per-atom importance for the evaluation half")
    predict_file(probe_path, adapter_class(models[:1]), data["heldout"], output_dir / "heldout_scored.xyz")
    print()
    print(
        f"Label: {label.target} error > {label.threshold * 1000:.1f} meV is unreliable "
        f"({evaluation['n_structures']} evaluation structures, "
        f"{100 * evaluation['unreliable_fraction']:.0f}% unreliable)"
    )
    print(metrics_table(evaluation))
    print(
        f"\nPlots, metrics.json, the probe and heldout_scored.xyz (probe_reliability, "
        f"probe_importance) are in:\n  {output_dir}\n(done in {time.time() - start:.0f} s)"
    )
    print(f"\nThe report, one page with the least-trusted structures drawn atom by atom:\n  {report}")
    print(
        f"Structures, maps and scores for chemiscope (open at chemiscope.org):\n  {explorer}"
        if explorer
        else "(pip install chemiscope to also get a chemiscope file of the structures)"
    )
    return evaluation


def _write_chemiscope(evaluation, path):
    """The evaluation as a chemiscope file when chemiscope is installed (an optional extra)."""
    import importlib.util

    if importlib.util.find_spec("chemiscope") is None:
        return None
    from probe_base.report.chemiscope import chemiscope_from_evaluation

    chemiscope_from_evaluation(evaluation, path)
    return path
