"""One flag: the drop-in ``AIMNet2ASE`` / ``AIMNet2Calculator`` with ``probe=``, on
models trained on the fly by ``aimnet train``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import rattled_ethanols
from probe_aimnet import AIMNet2Adapter, AIMNet2ASE, AIMNet2Calculator

from probe_base import UnreliablePrediction


def _features(adapter, structures):
    from probe_base.store import FeatureSet

    out = adapter.run(structures, members=False)
    return FeatureSet.from_backbone_output(out, structures)


@pytest.fixture(scope="module")
def probe_file(trained_paths, tmp_path_factory):
    """A small probe on the first trained model's `aim` + charges of rattled ethanols."""
    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier

    structures = rattled_ethanols(48, seed=5, scale=np.linspace(0.0, 0.25, 48))
    adapter = AIMNet2Adapter(trained_paths[:1], layers=["charges", "aim"])
    X = _features(adapter, structures)
    y = (np.arange(len(structures)) < 24).astype(int)  # small rattles are "reliable"
    clf = ProbeClassifier(hidden=16, heads=2, max_epochs=5, patience=5, seed=0).fit(X, y)
    paths = {}
    for name, threshold in (("plain", 0.5), ("strict", 1.01)):
        path = tmp_path_factory.mktemp("probe") / f"{name}.probe"
        save_probe(
            path, clf, LabelSpec("energy", threshold=0.1), adapter.fingerprint(), {"decision_threshold": threshold}
        )
        paths[name] = path
    return paths, clf, adapter


def test_ase_probe_results_from_the_same_pass(trained_paths, structures, probe_file):
    paths, clf, adapter = probe_file
    models = [str(p) for p in trained_paths]
    plain = AIMNet2ASE(models)
    probed = AIMNet2ASE(models, probe=paths["plain"], probe_policy="ignore")
    atoms, reference = structures[0].copy(), structures[0].copy()
    atoms.calc, reference.calc = probed, plain
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)
    results = probed.results
    assert 0.0 <= results["reliability"] <= 1.0
    assert results["atom_importance"].shape == (len(atoms),)
    assert results["atom_importance"].sum() == pytest.approx(1.0, abs=1e-5)
    assert results["energy_std"] > 0  # the ensemble's disagreement is kept next to it
    # the probe read the first model (its features and its energy, not the ensemble mean)
    expected = clf.predict_proba(_features(adapter, [structures[0]]))[0, 1]
    assert results["reliability"] == pytest.approx(float(expected), abs=1e-5)
    assert atoms.info["probe_reliability"] == results["reliability"]
    # the hooks stay on the model while the calculator lives: one per read layer
    model = probed.calculator.base_calc.models[0]
    assert sum(len(m._forward_hooks) for m in model.modules()) == len(probed.adapter.layers)


def test_dict_calculator_with_probe(trained_paths, structures, probe_file):
    paths, clf, adapter = probe_file
    calc = AIMNet2Calculator(str(trained_paths[0]), probe=paths["plain"], probe_policy="ignore")
    batch = structures[:5]
    data = {
        "coord": np.concatenate([a.positions for a in batch]),
        "numbers": np.concatenate([a.numbers for a in batch]),
        "charge": np.zeros(len(batch)),
        "mol_idx": np.repeat(np.arange(len(batch)), [len(a) for a in batch]),
    }
    out = calc(data, forces=True)
    np.testing.assert_allclose(
        out["reliability"].numpy(), clf.predict_proba(_features(adapter, batch))[:, 1], atol=1e-5
    )
    assert out["atom_importance"].shape == (sum(len(a) for a in batch),)
    assert out["forces"].shape == (sum(len(a) for a in batch), 3)
    plain = AIMNet2Calculator(str(trained_paths[0]))(data, forces=True)
    np.testing.assert_array_equal(out["energy"].detach().numpy(), plain["energy"].detach().numpy())
    strict = AIMNet2Calculator(str(trained_paths[0]), probe=paths["strict"], probe_policy="raise")
    with pytest.raises(UnreliablePrediction, match="unreliable"):
        strict(data, forces=True)


def test_probe_policies_and_unknown_element(trained_paths, structures, probe_file):
    from ase.build import molecule

    from probe_base.errors import InputError

    paths, _, _ = probe_file
    atoms = structures[1].copy()
    atoms.calc = AIMNet2ASE(str(trained_paths[0]), probe=paths["strict"], probe_policy="raise")
    with pytest.raises(UnreliablePrediction, match="most attended atoms"):
        atoms.get_potential_energy()
    atoms.calc = AIMNet2ASE(str(trained_paths[0]), probe=paths["strict"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    assert any("unreliable" in str(w.message) for w in caught)
    ammonia = molecule("NH3")
    ammonia.calc = AIMNet2ASE(str(trained_paths[0]), probe=paths["plain"])
    with pytest.raises(InputError, match=r"element\(s\) N not known"):
        ammonia.get_potential_energy()


def test_probe_refuses_another_backbone(trained_paths, model_paths, probe_file):
    from probe_base.errors import FingerprintMismatch

    paths, _, _ = probe_file
    with pytest.raises(FingerprintMismatch):
        AIMNet2ASE(str(trained_paths[1]), probe=paths["plain"])
    with pytest.raises(FingerprintMismatch):  # another seed first in an ensemble
        AIMNet2ASE([str(trained_paths[1]), str(trained_paths[0])], probe=paths["plain"])
    with pytest.raises(FingerprintMismatch):
        AIMNet2Calculator(str(model_paths[1]), probe=paths["plain"])


def test_drop_ins_without_probe_are_aimnets_own(trained_paths):
    from aimnet.calculators import AIMNet2Calculator as Original
    from aimnet.calculators.aimnet2ase import AIMNet2ASE as OriginalASE

    assert type(AIMNet2Calculator(str(trained_paths[0]))) is Original
    assert type(AIMNet2ASE(str(trained_paths[0]))) is OriginalASE


def test_md_run_with_probe_flag_records_reliability_and_raise_stops_it(trained_paths, structures, probe_file):
    from ase import units
    from ase.md.langevin import Langevin

    paths, _, _ = probe_file
    atoms = structures[0].copy()
    atoms.calc = AIMNet2ASE(str(trained_paths[0]), probe=paths["plain"], probe_policy="ignore")
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, fixcm=False)
    seen = []
    dyn.attach(lambda: seen.append(atoms.calc.results["reliability"]), interval=1)
    dyn.run(20)
    assert len(seen) == 21 and all(0.0 <= p <= 1.0 for p in seen)
    assert len(set(np.round(seen, 12))) > 1, "reliability must follow the trajectory"
    atoms.calc = AIMNet2ASE(str(trained_paths[0]), probe=paths["strict"], probe_policy="raise")
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02, fixcm=False)
    with pytest.raises(UnreliablePrediction, match="most attended atoms"):
        dyn.run(20)


def test_one_class_with_and_without_probe(trained_paths, structures, probe_file):
    """Issue 27: ``isinstance`` holds for both forms of both drop-ins, and the probe's
    options are ``parameters`` that ``set`` changes."""
    from probe_aimnet import ProbedAIMNet2Calculator

    from probe_base.integrations.calculator import ProbedCalculator

    paths, _, _ = probe_file
    model = str(trained_paths[0])
    plain_ase, plain = AIMNet2ASE(model), AIMNet2Calculator(model)
    assert isinstance(plain_ase, AIMNet2ASE) and isinstance(plain, AIMNet2Calculator)
    assert not isinstance(plain, AIMNet2ASE) and not isinstance(plain_ase, AIMNet2Calculator)
    assert not isinstance(plain_ase, ProbedCalculator)
    assert isinstance(AIMNet2Calculator([model, str(trained_paths[1])]), AIMNet2Calculator)  # an ensemble
    probed_ase = AIMNet2ASE(model, probe=paths["plain"], probe_policy="ignore")
    assert isinstance(probed_ase, AIMNet2ASE) and isinstance(probed_ase, ProbedCalculator)
    atoms = structures[0].copy()
    atoms.calc = probed_ase
    atoms.get_potential_energy()
    probed_ase.set(policy="raise", threshold=1.01)  # no P reaches 1.01: the same atoms raise now
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()

    probed = AIMNet2Calculator(model, probe=paths["plain"], probe_policy="ignore")
    assert isinstance(probed, AIMNet2Calculator) and isinstance(probed, ProbedAIMNet2Calculator)
    assert probed.parameters == {"policy": "ignore", "threshold": None}
    data = {
        "coord": atoms.positions,
        "numbers": atoms.numbers,
        "charge": np.zeros(1),
        "mol_idx": np.zeros(len(atoms), dtype=int),
    }
    probed(data, forces=True)
    assert probed.set(policy="raise", threshold=1.01) == {"policy": "raise", "threshold": 1.01}
    assert probed.policy == "raise" and probed.threshold == 1.01
    with pytest.raises(UnreliablePrediction):
        probed(data, forces=True)
    with pytest.raises(ValueError, match="policy must be one of"):
        probed.set(policy="explode")
    with pytest.raises(ValueError, match="unknown parameter"):
        probed.set(use_domain=False)
    assert probed.parameters["policy"] == "raise"
