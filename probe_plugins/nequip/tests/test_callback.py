"""The YAML switch: ``probe_nequip.ProbeCallback`` in a ``nequip-train`` config (the first
training of conftest.py runs ``[train, test]`` with it on a 40-structure test set)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from probe_nequip import NequIPAdapter, NequIPCalculator

from probe_base.artifact import load_probe
from probe_base.store import FeatureSet


@pytest.fixture(scope="module")
def report(trained):
    folder = trained["run1"] / "probe"
    assert (folder / "test0_metrics.json").exists(), "the callback wrote no report"
    return json.loads((folder / "test0_metrics.json").read_text()), folder / "test0.probe"


def test_metrics_are_reported_with_nequips_test_metrics(trained, report):
    payload, _ = report
    assert payload["n_fit"] + payload["n_eval"] == 40 and payload["n_eval"] == 20
    assert set(payload["metrics"]) == {"PROBE", "LLPR", "GMM NLL", "latent distance", "random"}
    for name in ("auroc", "aurc", "ece", "spearman"):
        value, low, high = payload["metrics"]["PROBE"][name]
        assert np.isfinite(value) and low <= value <= high
    log = (trained["run1"].parent / "train.log").read_text()
    assert "probe/test0_auroc" in log and "test0_epoch/forces_mae" in log
    assert "PROBE on test set 0" in log


def test_in_training_capture_matches_the_adapter_offline(adapter, data_files, report):
    """The probe file fits the packaged model of that training (the EMA weights were hooked),
    and scoring the held-out test structures offline gives the callback's values: features
    captured during nequip's test passes = features of the adapter's own pass."""
    payload, probe_path = report
    artifact = load_probe(probe_path)
    backbone = NequIPAdapter.from_models(adapter.models[:1])  # the package of that training
    artifact.check_backbone(backbone.fingerprint())
    frames = [ase.io.read(data_files["test"], ":")[i] for i in payload["eval_indices"]]
    out = backbone.run(frames, members=False)
    p = artifact.classifier.predict_proba(FeatureSet.from_backbone_output(out, frames))[:, 1]
    np.testing.assert_allclose(p, payload["eval_p_reliable"], atol=1e-5)
    errors = np.abs(out.energies - np.array([a.get_potential_energy() for a in frames]))
    np.testing.assert_allclose(errors, payload["eval_errors"], atol=1e-4)


def test_callback_probe_drives_the_calculator(trained, structures, report):
    _, probe_path = report
    calc = NequIPCalculator.from_saved_model(
        str(trained["package"]),
        device="cpu",
        chemical_species_to_atom_type_map=True,
        probe=str(probe_path),
        probe_policy="ignore",
    )
    atoms = structures[2].copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    assert 0.0 <= calc.results["reliability"] <= 1.0
