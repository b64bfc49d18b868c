"""A tiny trained backbone + probe for the practice tests (seconds on one thread).

Built once per pytest process and shared by tests/test_practice_*.py (no conftest needed).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from probe_base import toy
from probe_base.artifact import save_probe
from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.store import FeatureSet

_CACHE = {}


def toy_probe():
    """dict with folder, model (path), probe (path), adapter, train/probe structures."""
    if "toy" in _CACHE:
        return _CACHE["toy"]
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="practice-toy-"))
    atexit.register(shutil.rmtree, folder, True)
    train_set = toy.emt_clusters(60, seed=0, rattle=(0.02, 0.08))
    model = toy.train(
        train_set,
        [a.get_potential_energy() for a in train_set],
        [a.get_forces() for a in train_set],
        epochs=8,
        batch_size=20,
    )
    model_path = folder / "toy.pt"
    toy.save_model(model, model_path)
    adapter = toy.ToyAdapter([model_path])
    probe_set = toy.emt_clusters(200, seed=1, rattle=(0.02, 0.25), vacancy_fraction=0.3, strain=(0.97, 1.03))
    out = adapter.run(probe_set, compute_forces=False, members=False)
    X = FeatureSet.from_backbone_output(out, probe_set)
    errs = np.abs(out.energies - np.array([a.get_potential_energy() for a in probe_set]))
    label = LabelSpec("energy", None, 0.5).resolved(errs)
    y = label.reliable(errs)
    classifier = ProbeClassifier(hidden=16, heads=2, lr=1e-3, max_epochs=25, patience=8, cv_folds=2, seed=0).fit(X, y)
    probe_path = folder / "toy.probe"
    save_probe(probe_path, classifier, label, adapter.fingerprint(), {"decision_threshold": 0.5})
    _CACHE["toy"] = {
        "folder": folder,
        "model": model_path,
        "probe": probe_path,
        "adapter": adapter,
        "train_set": train_set,
        "probe_set": probe_set,
        "X": X,
        "y": y,
        "classifier": classifier,
    }
    return _CACHE["toy"]
