"""The drop-in ``probe_nequip.NequIPCalculator.from_saved_model(..., probe=...)`` and ``probe_base.attach`` on
nequip's own calculator, with a small probe fitted here on 40 ethanol configurations
(labels: the packaged model's total-energy error, above the median = unreliable)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from probe_nequip import NequIPAdapter, NequIPCalculator

from probe_base import UnreliablePrediction, attach
from probe_base.errors import FingerprintMismatch, InputError
from probe_base.integrations.calculator import ProbedCalculator
from probe_base.store import FeatureSet


@pytest.fixture(scope="module")
def probe_file(adapter, ethanol, tmp_path_factory):
    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier

    frames = ethanol(40, start=200)
    backbone = NequIPAdapter.from_models(adapter.models[:1])  # the package
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


def _calculator(path, **kwargs):
    return NequIPCalculator.from_saved_model(str(path), device="cpu", chemical_species_to_atom_type_map=True, **kwargs)


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_without_probe_it_is_nequips_calculator(adapter, trained, structures):
    from nequip.integrations.ase import NequIPCalculator as Original

    calc = _calculator(trained["package"])
    assert isinstance(calc, Original) and not isinstance(calc, ProbedCalculator)
    atoms = structures[0].copy()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    out = adapter.run([structures[0]], members=False)
    assert energy == pytest.approx(out.energies[0], abs=1e-9)
    assert "reliability" not in calc.results


def test_probe_results_from_the_same_pass(trained, structures, probe_file):
    paths, clf, backbone = probe_file
    plain = _calculator(trained["package"])
    probed = _calculator(trained["package"], probe=paths["plain"], probe_policy="ignore")
    atoms, reference = structures[0].copy(), structures[0].copy()
    atoms.calc, reference.calc = probed, plain
    assert atoms.get_potential_energy() == reference.get_potential_energy()  # bit for bit
    np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())
    results = probed.results
    assert 0.0 <= results["reliability"] <= 1.0
    assert results["atom_importance"].shape == (len(atoms),)
    assert results["atom_importance"].sum() == pytest.approx(1.0, abs=1e-5)
    assert atoms.info["probe_reliability"] == results["reliability"]
    assert atoms.calc.get_property("reliability", atoms) == results["reliability"]
    offline = backbone.run([structures[0]], members=False)
    X = FeatureSet.from_backbone_output(offline, [structures[0]])
    assert results["reliability"] == pytest.approx(float(clf.predict_proba(X)[0, 1]), abs=1e-5)
    assert _hooks(probed.calculator.model) == len(probed.adapter.layers)  # kept across steps, one per read layer


def test_attach_on_nequips_own_calculator(trained, structures, probe_file):
    from nequip.integrations.ase import NequIPCalculator as Original

    paths, _, _ = probe_file
    calc = Original._from_saved_model(str(trained["package"]), device="cpu", chemical_species_to_atom_type_map=True)
    probed = attach(calc, paths["plain"], policy="ignore")  # adapter found from the probe file
    atoms = structures[1].copy()
    atoms.calc = probed
    atoms.get_potential_energy()
    assert 0.0 <= probed.results["reliability"] <= 1.0
    assert NequIPAdapter.models_of_calculator(calc)[0] is calc.model
    assert NequIPAdapter.models_of_calculator(object()) is None


def test_probe_refuses_another_backbone_and_accepts_the_checkpoint(trained, probe_file):
    paths, _, _ = probe_file
    with pytest.raises(FingerprintMismatch):
        _calculator(trained["ckpt2"], probe=paths["plain"])
    # the checkpoint the package was built from is the same backbone
    assert isinstance(_calculator(trained["ckpt1"], probe=paths["plain"]), ProbedCalculator)


def test_compiled_model_cannot_carry_a_probe(probe_file, tmp_path):
    paths, _, _ = probe_file
    with pytest.raises(InputError, match=r"opaque.*from_saved_model"):
        NequIPCalculator.from_compiled_model(str(tmp_path / "model.nequip.pt2"), probe=paths["plain"])


def test_probe_policies(trained, structures, probe_file):
    paths, _, _ = probe_file
    calc = _calculator(trained["package"], probe=paths["strict"], probe_policy="raise")
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


def test_md_run_with_probe_flag_records_reliability_and_raise_stops_it(trained, structures, probe_file):
    from ase import units
    from ase.md.langevin import Langevin

    paths, _, _ = probe_file
    atoms = structures[0].copy()
    atoms.calc = _calculator(trained["package"], probe=paths["plain"], probe_policy="ignore")
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(0))
    seen = []
    dyn.attach(lambda: seen.append(atoms.calc.results["reliability"]), interval=1)
    dyn.run(20)
    assert len(seen) == 21 and all(0.0 <= p <= 1.0 for p in seen)
    assert len(set(np.round(seen, 12))) > 1, "reliability must follow the trajectory"
    atoms.calc = _calculator(trained["package"], probe=paths["strict"], probe_policy="raise")
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(0))
    with pytest.raises(UnreliablePrediction, match="most attended atoms"):
        dyn.run(20)
