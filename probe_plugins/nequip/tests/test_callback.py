"""The YAML switch: ``probe_nequip.ProbeCallback`` in a ``nequip-train`` config (the first
training of conftest.py runs ``[train, test]`` with it on a 40-structure test set)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from probe_nequip import NequIPAdapter, NequIPCalculator

from probe_base.artifact import load_probe
from probe_base.scoring import score
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
        # a percentile interval need not hold its point (AURC near its floor): near it, though
        assert np.isfinite(value) and low <= high and low - (high - low) <= value <= high + (high - low)
    decision = payload["decision"]
    assert decision["method"] == "conformal" and decision["false_alarm"] == 0.25
    reliable = np.array(payload["eval_errors"]) <= payload["label"]["threshold"]
    assert decision["held_out_false_alarm"] == np.mean(np.array(payload["eval_flagged"])[reliable])
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
    X = FeatureSet.from_backbone_output(out, frames)
    np.testing.assert_allclose(artifact.classifier.predict_proba(X)[:, 1], payload["eval_p_network"], atol=1e-5)
    np.testing.assert_allclose(score(artifact, X).p_reliable, payload["eval_p_reliable"], atol=1e-5)
    # the label's errors: after the constant energy offset the fitting part measured
    signed = out.energies - np.array([a.get_potential_energy() for a in frames])
    np.testing.assert_allclose(np.abs(signed - artifact.label.offset), payload["eval_errors"], atol=1e-4)


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
