"""The drop-in ``probe_mace.MACECalculator`` with a probe attached."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from probe_mace import MACEAdapter, MACECalculator

from probe_base import UnreliablePrediction


def test_probe_results_from_the_same_pass(model_paths, structures, probe_file):
    paths, clf, _ = probe_file
    plain = MACECalculator(model_paths=[str(p) for p in model_paths[:2]], device="cpu")
    probed = MACECalculator(
        model_paths=[str(p) for p in model_paths[:2]], device="cpu", probe=paths["plain"], probe_policy="ignore"
    )
    atoms = structures[0].copy()
    atoms.calc = probed
    energy = atoms.get_potential_energy()
    reference = structures[0].copy()
    reference.calc = plain
    assert energy == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)
    results = probed.results
    assert 0.0 <= results["reliability"] <= 1.0
    assert results["atom_importance"].shape == (len(atoms),)
    assert "energy_var" in results  # mace's committee results are kept
    # same value as scoring the primary model's features offline
    from probe_base.store import FeatureSet

    out = MACEAdapter(model_paths[:1]).run([structures[0]], members=False)
    X = FeatureSet(out.features[0], structures[0].numbers, np.array([0, len(atoms)]), out.energies)
    assert results["reliability"] == pytest.approx(float(clf.predict_proba(X)[0, 1]), abs=1e-5)
    assert all(not p._forward_hooks for m in plain.models for p in m.products)


def test_probe_policies(model_paths, structures, probe_file):
    paths, _, _ = probe_file
    strict = MACECalculator(model_paths=str(model_paths[0]), device="cpu", probe=paths["strict"], probe_policy="raise")
    atoms = structures[1].copy()
    atoms.calc = strict
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
    warn = MACECalculator(model_paths=str(model_paths[0]), device="cpu", probe=paths["strict"])
    atoms.calc = warn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    assert any("unreliable" in str(w.message) for w in caught)


def test_probe_refuses_another_backbone(model_paths, probe_file):
    from probe_base.errors import FingerprintMismatch

    paths, _, _ = probe_file
    with pytest.raises(FingerprintMismatch):
        MACECalculator(model_paths=str(model_paths[2]), device="cpu", probe=paths["plain"])


def test_md_run_with_probe_flag_records_reliability_and_raise_stops_it(model_paths, structures, probe_file):
    from ase import units
    from ase.md.langevin import Langevin

    paths, _, _ = probe_file
    atoms = structures[0].copy()
    atoms.calc = MACECalculator(
        model_paths=str(model_paths[0]), device="cpu", probe=paths["plain"], probe_policy="ignore"
    )
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02)
    seen = []
    dyn.attach(lambda: seen.append(atoms.calc.results["reliability"]), interval=1)
    dyn.run(30)
    assert len(seen) == 31 and all(0.0 <= p <= 1.0 for p in seen)
    assert len(set(np.round(seen, 12))) > 1, "reliability must follow the trajectory"
    atoms.calc = MACECalculator(
        model_paths=str(model_paths[0]), device="cpu", probe=paths["strict"], probe_policy="raise"
    )
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02)
    with pytest.raises(UnreliablePrediction, match="most attended atoms"):
        dyn.run(30)
