"""PROBE inside TorchSim batched MD (``probe_mace.torchsim``): features from TorchSim's own
pass, energies and forces unchanged, and the ignore / warn / stop policies per system."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("torch_sim", reason="the mace nox session installs probe-mace[torchsim]")

import ase.io  # noqa: E402
from ase.build import molecule  # noqa: E402
from probe_mace import MACEAdapter  # noqa: E402
from probe_mace.torchsim import run_torchsim  # noqa: E402
from probe_mace.torchsim_model import ProbedMaceModel, load_torch_sim  # noqa: E402

from probe_base.errors import FingerprintMismatch, ProbeError  # noqa: E402
from probe_base.integrations.watchdog import UnreliableTrajectoryWarning  # noqa: E402
from probe_base.scoring import score  # noqa: E402
from probe_base.store import FeatureSet  # noqa: E402

CUT = 0.3  # the probe's decision cut: its tiny network gives P(reliable) ~0.45 in the domain


@pytest.fixture(scope="module")
def probe(model_paths, tmp_path_factory):
    """A probe with a domain and a per-atom error head, fitted on the first member's
    features of rattled ethanols (small rattles reliable); members 1-2 disagree for errors."""
    from sklearn.exceptions import ConvergenceWarning

    from probe_base.artifact import save_probe
    from probe_base.domain.model import DomainModel
    from probe_base.labels import LabelSpec
    from probe_base.net.atom_errors import AtomErrorModel
    from probe_base.net.classifier import ProbeClassifier

    rng = np.random.default_rng(5)
    scales = np.linspace(0.0, 0.25, 48)
    structures = []
    for scale in scales:
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        structures.append(atoms)
    pair = MACEAdapter(model_paths[:2])
    out = pair.run(structures, members=True)
    X = FeatureSet.from_backbone_output(out, structures)
    y = (scales < 0.12).astype(int)
    classifier = ProbeClassifier(hidden=16, heads=2, max_epochs=5, patience=5, seed=0).fit(X, y)
    errors = np.concatenate([np.linalg.norm(f[0] - f[1], axis=1) for f in out.member_forces])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations are enough here
        head = AtomErrorModel(hidden=16, max_iter=50).fit(X, errors)
    domain = DomainModel(alpha=0.05).fit(X.subset(np.flatnonzero(y == 1)))
    path = tmp_path_factory.mktemp("probe") / "ethanol.probe"
    fingerprint = MACEAdapter(model_paths[:1]).fingerprint()
    save_probe(
        path, classifier, LabelSpec("energy", threshold=0.1), fingerprint, {"decision_threshold": CUT}, domain, head
    )
    return path


def _ethanols(n, seed=0, scale=0.03):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        out.append(atoms)
    return out


def _adapter_scores(model_path, probe, frames):
    from probe_base.artifact import load_probe

    out = MACEAdapter([model_path]).run(frames, members=False)
    return out, score(load_probe(probe), FeatureSet.from_backbone_output(out, frames))


def test_features_and_scores_from_the_torchsim_pass_equal_the_adapters(model_paths, probe):
    ts = load_torch_sim()
    water, methane = molecule("H2O"), molecule("CH4")
    water.positions += 0.05
    frames = [_ethanols(1)[0], water, methane]  # 9, 3 and 5 atoms
    model = ProbedMaceModel(model_paths[0], probe, device="cpu")
    state = ts.initialize_state(frames, model.device, model.dtype)
    result = model(state)
    out, expected = _adapter_scores(model_paths[0], probe, frames)
    X = model.last_features
    assert list(np.diff(X.offsets)) == [9, 3, 5]
    for i, reference in enumerate(out.features):
        np.testing.assert_allclose(X.features[X.offsets[i] : X.offsets[i + 1]], reference, rtol=1e-5, atol=1e-6)
    got = model.last_scores
    np.testing.assert_allclose(got.p_reliable, expected.p_reliable, atol=1e-5)
    np.testing.assert_allclose(got.novelty, expected.novelty, rtol=1e-4)
    np.testing.assert_array_equal(got.in_domain, expected.in_domain)
    for a, b in zip(got.atom_error, expected.atom_error):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result["energy"].numpy(), out.energies, atol=1e-8)
    np.testing.assert_allclose(result["forces"].numpy(), np.concatenate(out.forces), atol=1e-8)
    np.testing.assert_array_equal(result["probe_unreliable"].numpy(), model.rule.flags(got.p_reliable, got.in_domain))
    assert model.history[-1].step == 0 and len(model.history) == 1
    model.remove_hooks()
    assert all(not p._forward_hooks for p in model.model.products)


def test_md_is_torchsims_own_and_forces_equal_the_mace_calculator(model_paths, probe):
    from mace.calculators import MACECalculator
    from torch_sim.models.mace import MaceModel

    ts = load_torch_sim()
    frames = _ethanols(2, seed=1) + [molecule("H2O")]
    run = run_torchsim(
        frames, model_paths[0], probe, n_steps=6, timestep_fs=0.5, temperature_K=300, seed=3, policy="ignore"
    )
    assert run.n_steps == 6 and list(run.steps) == list(range(7)) and run.reliability.shape == (7, 3)

    # the same MD as TorchSim's own integrate with the plain MaceModel: the hooks change nothing
    plain = MaceModel(torch.load(model_paths[0], weights_only=False), device=torch.device("cpu"), compute_stress=False)
    torch.manual_seed(3)
    final = ts.integrate(
        system=frames, model=plain, n_steps=6, timestep=0.0005, temperature=300, integrator=ts.nvt_langevin, seed=3
    )
    np.testing.assert_allclose(run.state.positions.detach().numpy(), final.positions.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(run.state.forces.numpy(), final.forces.numpy(), atol=1e-12)

    # energies and forces of the final state: mace's own ASE calculator
    calc = MACECalculator(model_paths=str(model_paths[0]), device="cpu", default_dtype="float64")
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    for i, atoms in enumerate(ts.io.state_to_atoms(run.state)):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(run.state.energy[i]), abs=1e-8)
        forces = run.state.forces[offsets[i] : offsets[i + 1]].numpy()
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-8)

    # ts.integrate with the probed model: one record per model call (call 0: the initial state)
    probed = ProbedMaceModel(model_paths[0], probe, device="cpu")
    ts.integrate(system=frames, model=probed, n_steps=4, timestep=0.0005, temperature=300, integrator=ts.nvt_langevin)
    assert [r.step for r in probed.history] == [0, 1, 2, 3, 4]

    sparse = run_torchsim(frames, model_paths[0], probe, n_steps=5, interval=2, policy="ignore", seed=3)
    assert list(sparse.steps) == [0, 2, 4] and sparse.n_steps == 5


HOT = dict(n_steps=30, timestep_fs=1.0, temperature_K=[30.0, 3000.0, 30.0], seed=0)


def _first_trigger(flags, patience):
    """(step, systems) where a system first has `patience` consecutive flags."""
    for step in range(patience - 1, len(flags)):
        window = flags[step - patience + 1 : step + 1]
        hit = np.flatnonzero(window.all(axis=0))
        if len(hit):
            return step, list(hit)
    return None, []


def test_hot_system_stops_the_run_at_its_step_and_is_written_with_per_atom_maps(model_paths, probe, tmp_path):
    frames = _ethanols(3, seed=2)
    free = run_torchsim(frames, model_paths[0], probe, policy="ignore", **HOT)
    assert free.n_steps == 30 and free.stopped is None and not free.events  # ignore: every step, nothing done
    flags = free.unreliable
    patience = 2
    expected, systems = _first_trigger(flags, patience)
    assert not flags[:3].any() and systems == [1]  # trusted at first, then the hot one leaves
    assert not flags[: expected + 1, [0, 2]].any()

    collect, trusted = tmp_path / "to_label.xyz", tmp_path / "trusted.xyz"
    run = run_torchsim(
        frames,
        model_paths[0],
        probe,
        policy="stop",
        patience=patience,
        collect_path=collect,
        trusted_path=trusted,
        **HOT,
    )
    stop = run.stopped
    assert stop["step"] == expected and stop["systems"] == [1] and run.n_steps == expected
    assert list(run.steps) == list(range(expected + 1))
    np.testing.assert_allclose(run.reliability, free.reliability[: expected + 1], atol=1e-9)  # the same MD
    event = stop["events"][0]
    assert event["first_step"] == expected - patience + 1 and "system 1 of the batch" in stop["message"]
    assert f"to step {expected}" in stop["message"]

    written = ase.io.read(collect, ":")
    assert [f.info["probe_step"] for f in written] == [expected - 1, expected]
    assert all(f.info["probe_system"] == 1 for f in written)
    last = written[-1]
    hot_atoms = run.state.positions[9:18].detach().numpy()
    np.testing.assert_allclose(last.positions, hot_atoms, atol=1e-6)  # the stop step's frame of system 1
    # the per-atom maps written equal scoring that frame through the adapter
    _, again = _adapter_scores(model_paths[0], probe, [last])
    for key, values in (
        ("probe_importance", again.importance[0]),
        ("probe_atom_novelty", again.atom_novelty[0]),
        ("probe_atom_error", again.atom_error[0]),
    ):
        assert last.arrays[key].shape == (9,)
        np.testing.assert_allclose(last.arrays[key], values, rtol=1e-3, atol=1e-5)
    assert last.info["probe_reliability"] == pytest.approx(float(again.p_reliable[0]), abs=1e-5)
    # the atoms named: the novel ones, most novel first, else those of largest predicted error
    assert not again.in_domain[0] and not event["in_domain"]
    named = again.novel_atoms(0)[:3]
    named = named if len(named) else np.argsort(again.atom_error[0])[::-1][:3]
    assert [a[0] for a in event["atoms"]] == [int(k) for k in named]

    # each system at its own last trusted step: the hot one before its stretch, the others now
    assert list(run.last_trusted_step) == [expected, expected - patience, expected]
    kept = ase.io.read(trusted, ":")
    assert [f.info["probe_step"] for f in kept] == [expected, expected - patience, expected]
    assert not free.unreliable[expected - patience, 1]
    np.testing.assert_allclose(
        run.last_trusted.positions[:9].detach().numpy(), run.state.positions[:9].detach().numpy()
    )


def test_warn_warns_once_per_stretch_and_runs_every_step(model_paths, probe):
    frames = _ethanols(3, seed=2)
    free = run_torchsim(frames, model_paths[0], probe, policy="ignore", **HOT)
    patience = 2
    expected = []  # (system, first step) of every stretch of >= patience flags
    for system in range(3):
        flags = free.unreliable[:, system]
        start = None
        for step, flagged in enumerate(list(flags) + [False]):
            if flagged and start is None:
                start = step
            elif not flagged and start is not None:
                if step - start >= patience:
                    expected.append((system, start))
                start = None
    assert expected
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_torchsim(frames, model_paths[0], probe, policy="warn", patience=patience, **HOT)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreliableTrajectoryWarning)]
    assert run.stopped is None and run.n_steps == 30 and len(run.records) == 31
    assert sorted((e["system"], e["first_step"]) for e in run.events) == sorted(expected)
    assert messages == [e["message"] for e in run.events] and all("PROBE in TorchSim" in m for m in messages)


def test_missing_torch_sim_and_another_backbone_are_one_line(model_paths, probe, monkeypatch):
    with pytest.raises(FingerprintMismatch) as caught:
        run_torchsim(_ethanols(1), model_paths[2], probe, n_steps=1)
    assert "trained on another backbone" in str(caught.value) and "\n" not in str(caught.value)

    for name in [m for m in sys.modules if m == "torch_sim" or m.startswith("torch_sim.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch_sim", None)  # `import torch_sim` fails as if not installed
    for call in (load_torch_sim, lambda: run_torchsim(_ethanols(1), model_paths[0], probe, n_steps=1)):
        with pytest.raises(ProbeError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith("TorchSim is not installed here") and "pip install" in message
        assert "torch-sim-atomistic==0.3.0" in message and "\n" not in message
