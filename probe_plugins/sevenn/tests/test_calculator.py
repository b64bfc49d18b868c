"""``probe_base.attach`` and the drop-in ``probe_sevenn.SevenNetCalculator(probe=...)``
with a tiny probe fitted here on 40 ethanol configurations (labels: SevenNet-0's
total-energy error against the data set's energies, above the median = unreliable)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from probe_sevenn import SevenNetAdapter, SevenNetCalculator

from probe_base import UnreliablePrediction, attach
from probe_base.store import FeatureSet


@pytest.fixture(scope="module")
def probe_file(adapter, ethanol, tmp_path_factory):
    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier

    frames = ethanol(40, start=100)
    backbone = SevenNetAdapter.from_models(adapter.models[:1])
    out = backbone.run(frames, members=False)
    errs = np.abs(out.energies - np.array([a.get_potential_energy() for a in frames]))
    label = LabelSpec("energy", quantile=0.5).resolved(errs)
    clf = ProbeClassifier(hidden=16, heads=2, max_epochs=5, patience=5, cv_folds=2, seed=0)
    clf.fit(FeatureSet.from_backbone_output(out, frames), label.reliable(errs))
    paths = {}
    for name, threshold in (("plain", 0.5), ("strict", 1.01)):
        paths[name] = tmp_path_factory.mktemp("probe") / f"{name}.probe"
        save_probe(paths[name], clf, label, backbone.fingerprint(), {"decision_threshold": threshold})
    return paths, clf, backbone


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_attach_adds_reliability_and_changes_nothing(calculator, structures, probe_file):
    paths, clf, backbone = probe_file
    atoms = structures[0].copy()
    atoms.calc = calculator
    energy, forces = atoms.get_potential_energy(), atoms.get_forces().copy()
    probed = attach(calculator, paths["plain"], policy="ignore")  # adapter found from the probe
    atoms.calc = probed
    assert atoms.get_potential_energy() == energy  # the same pass, bit for bit
    np.testing.assert_array_equal(atoms.get_forces(), forces)
    results = probed.results
    assert 0.0 <= results["reliability"] <= 1.0
    assert results["atom_importance"].shape == (len(atoms),)
    assert results["atom_importance"].sum() == pytest.approx(1.0, abs=1e-5)
    assert atoms.info["probe_reliability"] == results["reliability"]
    offline = backbone.run([structures[0]], members=False)
    X = FeatureSet.from_backbone_output(offline, [structures[0]])
    assert results["reliability"] == pytest.approx(float(clf.predict_proba(X)[0, 1]), abs=1e-4)
    assert _hooks(calculator.model) == len(probed.adapter.layers)  # kept across steps, one per read layer


def test_drop_in_flag_and_policies(structures, probe_file):
    paths, _, _ = probe_file
    calc = SevenNetCalculator("7net-0", device="cpu", probe=paths["strict"], probe_policy="raise")
    atoms = structures[1].copy()
    atoms.calc = calc
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
    calc.policy = "warn"
    calc.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    assert any("unreliable" in str(w.message) for w in caught)
    assert 0.0 <= calc.results["reliability"] <= 1.0


def test_probe_refuses_another_backbone(probe_file):
    from probe_base.errors import FingerprintMismatch

    paths, _, _ = probe_file
    with pytest.raises(FingerprintMismatch):
        SevenNetCalculator("7net-0_22May2024", device="cpu", probe=paths["plain"])
