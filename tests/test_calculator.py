import gc

import ase.io
import numpy as np
import pytest
from ase import units
from ase.md.langevin import Langevin

from probe_base import attach
from probe_base.errors import FingerprintMismatch, ProbeError, UnreliablePrediction
from probe_base.integrations.calculator import UnreliableWarning
from probe_base.toy import ToyCalculator


def test_attach_adds_reliability_from_the_same_pass(toy_files, fitted_probe):
    atoms = ase.io.read(toy_files["heldout"], 3)
    plain = ToyCalculator(toy_files["models"][0])
    atoms.calc = plain
    e_plain, f_plain = atoms.get_potential_energy(), atoms.get_forces()
    calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(e_plain)
    np.testing.assert_allclose(atoms.get_forces(), f_plain)
    p = calc.results["reliability"]
    imp = calc.results["atom_importance"]
    assert 0 <= p <= 1 and imp.shape == (len(atoms),) and imp.sum() == pytest.approx(1)
    model = calc.calculator.model
    hooks = lambda: sum(len(m._forward_hooks) for m in model.modules())  # noqa: E731
    assert hooks() == len(calc.adapter.layers)  # kept across steps, one per read layer
    assert atoms.info["probe_reliability"] == p and "probe_importance" in atoms.arrays
    # matches scoring the structure through the adapter
    from probe_base.artifact import load_probe
    from probe_base.store import FeatureSet
    from probe_base.toy import ToyAdapter

    adapter = ToyAdapter(toy_files["models"][:1])
    out = adapter.run([atoms], members=False)
    p_ref = load_probe(fitted_probe).classifier.predict_proba(FeatureSet.from_backbone_output(out, [atoms]))[0, 1]
    assert p == pytest.approx(p_ref, abs=1e-5)
    atoms.calc = None
    del calc
    gc.collect()
    assert hooks() == 0  # a calculator that is gone leaves no hook on the model


def test_a_pass_that_does_not_reach_the_features_is_refused_not_served_stale(toy_files, fitted_probe):
    """The hooks stay between steps: a step whose pass skips the hooked layer must fail,
    not reuse the previous step's features."""
    atoms = ase.io.read(toy_files["heldout"], 3)
    calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    atoms.calc = calc
    atoms.get_potential_energy()
    calc._hooks.remove()  # as if the layer were not reached
    atoms.positions[0] += 0.05
    with pytest.raises(ProbeError, match="not reached"):
        atoms.get_potential_energy()


def test_probe_for_another_model_is_refused(toy_files, fitted_probe):
    with pytest.raises(FingerprintMismatch):
        attach(ToyCalculator(toy_files["models"][1]), fitted_probe)


def test_md_run_records_reliability_and_raise_policy_stops_it(toy_files, fitted_probe, tmp_path):
    atoms = ase.io.read(toy_files["heldout"], 0)
    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02)
    seen = []
    traj = tmp_path / "md.xyz"
    dyn.attach(lambda: seen.append(atoms.calc.results["reliability"]), interval=1)
    dyn.attach(lambda: ase.io.write(traj, atoms, append=True), interval=5)
    dyn.run(20)
    assert len(seen) == 21 and all(0 <= p <= 1 for p in seen)
    frames = ase.io.read(traj, ":")
    assert "probe_reliability" in frames[0].info and frames[0].arrays["probe_importance"].shape == (len(atoms),)

    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="raise", threshold=1.01)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02)
    with pytest.raises(UnreliablePrediction, match="atoms of largest predicted force error: Cu") as info:
        dyn.run(10)
    assert info.value.atom_importance.shape == (len(atoms),)


def test_raise_policy_raises_again_for_the_same_atoms(toy_files, fitted_probe):
    """ASE caches results per atoms: a rejected prediction must not be served from the
    cache on the next call (it would return the energy without raising)."""
    atoms = ase.io.read(toy_files["heldout"], 0)
    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="raise", threshold=1.01)
    for _ in range(2):
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()
    assert "energy" not in atoms.calc.results


def test_warn_policy_warns(toy_files, fitted_probe):
    atoms = ase.io.read(toy_files["heldout"], 0)
    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="warn", threshold=1.01)
    with pytest.warns(UnreliableWarning, match="unreliable"):
        atoms.get_potential_energy()


def test_outside_the_domain_is_unreliable_and_the_novel_atom_is_named(toy_files, fitted_probe):
    """One Cu atom pulled 3 Å out of a cluster: the domain test (on by default) flags the
    structure whatever the network says, results say why, and the raise policy names
    the pulled atom first."""
    atoms = ase.io.read(toy_files["heldout"], 0)
    calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    atoms.calc = calc
    atoms.get_potential_energy()
    assert calc.results["in_domain"] and calc.results["novelty"] <= 1
    assert calc.results["reliability"] == calc.results["reliability_network"]
    assert calc.results["atom_error"].shape == (len(atoms),)

    pulled = atoms.copy()
    centre = pulled.positions.mean(0)
    far = int(np.argmax(np.linalg.norm(pulled.positions - centre, axis=1)))
    direction = pulled.positions[far] - centre
    pulled.positions[far] += 3.0 * direction / np.linalg.norm(direction)
    pulled.calc = calc
    pulled.get_potential_energy()
    assert not calc.results["in_domain"] and calc.results["novelty"] > 1
    assert calc.results["reliability"] == 0.0
    assert int(np.argmax(calc.results["atom_novelty"])) == far
    assert pulled.info["probe_in_domain"] is False and "probe_atom_novelty" in pulled.arrays

    pulled.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="raise")
    with pytest.raises(UnreliablePrediction, match=f"novel atoms Cu{far} "):
        pulled.get_potential_energy()


def test_policy_and_threshold_are_ase_parameters(toy_files, fitted_probe):
    """ASE's contract: the probe's options live in ``parameters`` and ``set`` changes them,
    so ``calc.set(policy="raise")`` acts on the next step."""
    from probe_base.artifact import load_probe

    calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    assert calc.parameters["policy"] == "ignore" and calc.parameters["threshold"] is None
    assert calc.rule.cut == load_probe(fitted_probe).decision.cut
    calc.set(policy="raise", threshold=1.0)  # every prediction below P = 1 raises now
    assert calc.policy == "raise" and calc.threshold == 1.0
    atoms = ase.io.read(toy_files["heldout"], "0")
    atoms.calc = calc
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
    calc.policy = "ignore"
    assert calc.parameters["policy"] == "ignore"
    atoms.get_potential_energy()
    with pytest.raises(ValueError, match="policy must be one of"):
        calc.set(policy="explode")
    assert calc.parameters["policy"] == "ignore" and calc.policy == "ignore"


def test_set_acts_on_the_structure_already_computed(toy_files, fitted_probe):
    """``set`` discards the cached results: their flag and the policy's verdict on them
    belong to the old parameters, so the same atoms are judged again."""
    atoms = ase.io.read(toy_files["heldout"], "0")
    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    atoms.get_potential_energy()
    assert atoms.calc.set(policy="ignore") == {}  # nothing changed: results kept
    assert "reliability" in atoms.calc.results
    atoms.calc.set(policy="raise", threshold=1.01)  # no P reaches 1.01
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
    atoms.calc.set(policy="ignore", threshold=0.0)
    atoms.get_potential_energy()
    # a cut of 0 flags only what is outside the domain: the flag was recomputed
    assert atoms.calc.results["unreliable"] == (not atoms.calc.results["in_domain"])


def test_drop_in_is_the_frameworks_calculator_without_probe_and_probed_with_one(toy_files, fitted_probe):
    """``DropInCalculator`` (what every plugin's calculator class is), on the toy backbone:
    one class for both forms under ``isinstance``; without a probe, exactly the framework's
    calculator; with one, a ``ProbedCalculator`` whose options are ASE parameters."""
    import copy

    from probe_base.integrations.calculator import DropInCalculator, ProbedCalculator
    from probe_base.toy import ToyAdapter

    class ToyDropIn(DropInCalculator):
        adapter = ToyAdapter

        @classmethod
        def framework_types(cls):
            return (ToyCalculator,)

    model = toy_files["models"][0]
    plain = ToyDropIn(model, probe_policy="raise")  # the probe's keywords do nothing without a probe
    assert type(plain) is ToyCalculator and isinstance(plain, ToyDropIn)
    assert not isinstance(plain, ProbedCalculator) and not issubclass(ToyCalculator, ToyDropIn)
    assert not isinstance(attach(ToyCalculator(model), fitted_probe), ToyDropIn)  # another class's wrapper
    with pytest.raises(TypeError):
        ToyDropIn(model, "extra")  # the framework's signature, with or without a probe
    with pytest.raises(TypeError):
        ToyDropIn(model, "extra", probe=fitted_probe)
    with pytest.raises(FingerprintMismatch):
        ToyDropIn(toy_files["models"][1], probe=fitted_probe)

    probed = ToyDropIn(model, probe=fitted_probe, probe_policy="ignore")
    assert type(probed) is ToyDropIn and isinstance(probed, ProbedCalculator)
    assert isinstance(probed.calculator, ToyCalculator)
    assert probed.parameters["policy"] == "ignore" and probed.parameters["threshold"] is None
    atoms = ase.io.read(toy_files["heldout"], "0")
    atoms.calc = probed
    energy = atoms.get_potential_energy()
    atoms.calc = ToyCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(energy)
    twin = copy.copy(probed)  # made through __new__ alone: the probed form again
    assert type(twin) is ToyDropIn and twin.calculator is probed.calculator
    probed.set(policy="raise", threshold=1.01)
    atoms.calc = probed
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
