"""AIMNet2-specific checks of the adapter: layers, hooks, the calculator's energies,
ensembles, files and elements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import WIDTHS
from probe_aimnet import AIMNet2Adapter

from probe_base.errors import InputError

ALL = list(WIDTHS)


def _calculator(path):
    from aimnet.calculators import AIMNet2Calculator

    return AIMNet2Calculator(str(path), device="cpu")


def _batch(structures):
    counts = [len(a) for a in structures]
    return {
        "coord": np.concatenate([a.positions for a in structures]).astype(np.float32),
        "numbers": np.concatenate([a.numbers for a in structures]),
        "charge": np.zeros(len(structures), dtype=np.float32),
        "mol_idx": np.repeat(np.arange(len(structures)), counts),
    }


def test_layers_and_declared_widths(model_paths, structures):
    adapter = AIMNet2Adapter(model_paths[:1], layers=ALL)
    assert [(layer.name, layer.width) for layer in adapter.feature_layers()] == list(WIDTHS.items())
    assert AIMNet2Adapter(model_paths[:1]).layers == ["aim"]
    out = adapter.run(structures, members=False)
    n_total = sum(len(a) for a in structures)
    features = np.concatenate(out.features)
    assert features.shape == (n_total, sum(WIDTHS.values()))
    # every declared block is the width the hook delivers (no silent truncation)
    with adapter.capture() as captured:
        adapter.predict(adapter.models[0], structures, True)
    assert {k: tuple(v.shape) for k, v in captured.items()} == {k: (n_total, w) for k, w in WIDTHS.items()}
    assert adapter.supported_elements() == {1, 6, 8}


def test_captured_aim_and_charges_are_the_models_own(model_paths, structures):
    """`aim` is the model's data["aim"] and `charges` the calculator's output charges."""
    adapter = AIMNet2Adapter(model_paths[:1], layers=["charges", "aim"])
    out = adapter.run(structures, members=False)
    features = np.concatenate(out.features)
    calc = _calculator(model_paths[0])
    seen = {}
    handle = calc.model.register_forward_hook(lambda m, i, o: seen.update(aim=o["aim"].detach()))
    try:
        reference = calc(_batch(structures), forces=True)
    finally:
        handle.remove()
    np.testing.assert_allclose(features[:, 0], reference["charges"].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(features[:, 1:], seen["aim"][:-1].numpy(), atol=1e-6)  # + 1 padding row
    assert np.all(seen["aim"][-1].numpy() == 0)  # that padding row is what the adapter drops


def test_hooks_leave_energies_and_forces_unchanged(model_paths, structures):
    adapter = AIMNet2Adapter(model_paths[:1], layers=ALL)
    model = adapter.models[0]
    plain_e, plain_f = adapter.predict(model, structures, compute_forces=True)
    out = adapter.run(structures, members=False)
    np.testing.assert_array_equal(out.energies, plain_e.numpy())
    np.testing.assert_array_equal(np.concatenate(out.forces), plain_f.numpy())
    assert out.energies.dtype == np.float64
    assert all(not m._forward_hooks for m in model.modules())
    # the same numbers as aimnet's own calculator, structure by structure (ASE interface)
    from aimnet.calculators.aimnet2ase import AIMNet2ASE

    calc = AIMNet2ASE(_calculator(model_paths[0]))
    for atoms, energy, forces in zip(structures, out.energies, out.forces):
        atoms = atoms.copy()
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-5)


def test_energies_are_the_calculators_not_the_bare_modules(model_paths, structures):
    """v2 files keep only short-range Coulomb in the module; the calculator adds the full
    Coulomb back. The adapter must report the calculator's energy."""
    adapter = AIMNet2Adapter(model_paths[:1])
    calc = _calculator(model_paths[0])
    assert calc.external_coulomb is not None
    data = _batch(structures[:1])
    full = calc(dict(data), forces=False)["energy"].detach().double().numpy()
    bare = calc.model(calc.prepare_input(dict(data)))["energy"].detach().double().numpy()
    energies = adapter.run(structures[:1], members=False).energies
    np.testing.assert_allclose(energies, full, atol=1e-6)
    assert np.abs(energies - bare).max() > 1e-4


def test_ensemble_members_and_disagreement(model_paths, structures):
    from probe_aimnet import AIMNet2ASE, AIMNet2Ensemble

    adapter = AIMNet2Adapter(model_paths)
    out = adapter.run(structures)
    assert out.member_energies.shape == (len(structures), 3)
    assert np.all(np.std(out.member_energies, axis=1) > 0)
    ensemble = AIMNet2Ensemble([str(p) for p in model_paths], device="cpu")
    result = ensemble(_batch(structures), forces=True)
    np.testing.assert_allclose(result["energy_members"].numpy(), out.member_energies, atol=1e-6)
    np.testing.assert_allclose(result["energy"].numpy(), out.member_energies.mean(1), atol=1e-6)
    np.testing.assert_allclose(result["energy_std"].numpy(), np.std(out.member_energies, axis=1, ddof=1), atol=1e-6)
    member_forces = np.concatenate(out.member_forces, axis=1)  # (members, atoms, 3)
    np.testing.assert_allclose(result["forces_std"].numpy(), np.std(member_forces, axis=0, ddof=1), atol=1e-5)
    assert result["charges_std"].shape == result["charges"].shape
    # the ASE drop-in with several files is that ensemble
    atoms = structures[0].copy()
    atoms.calc = AIMNet2ASE([str(p) for p in model_paths])
    forces = atoms.get_forces()
    results = atoms.calc.results
    assert results["energy"] == pytest.approx(out.member_energies[0].mean(), abs=1e-6)
    assert results["energy_std"] == pytest.approx(np.std(out.member_energies[0], ddof=1), abs=1e-6)
    np.testing.assert_allclose(results["energy_members"], out.member_energies[0], atol=1e-6)
    assert results["forces_std"].shape == forces.shape == (len(atoms), 3)
    np.testing.assert_allclose(forces, out.member_forces[0].mean(0), atol=1e-5)


def test_unknown_element_and_bad_files(model_paths, tmp_path):
    adapter = AIMNet2Adapter(model_paths[:1])
    with pytest.raises(InputError, match=r"element\(s\) N not known to the aimnet backbone"):
        adapter.run([molecule("NH3")])
    with pytest.raises(InputError, match="unknown feature layer"):
        AIMNet2Adapter(model_paths[:1], layers=["mlps.2"])
    jpt = tmp_path / "legacy.jpt"
    jpt.write_bytes(b"x")
    with pytest.raises(InputError, match="aimnet convert"):
        AIMNet2Adapter([jpt])
    bad = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="cannot be loaded as an AIMNet2 model"):
        AIMNet2Adapter([bad])


def test_calculator_models_and_capture(model_paths, structures):
    from aimnet.calculators.aimnet2ase import AIMNet2ASE

    calc = AIMNet2ASE(_calculator(model_paths[0]))
    models = AIMNet2Adapter.models_of_calculator(calc)
    assert models == [calc.base_calc.model]
    assert AIMNet2Adapter.models_of_calculator(object()) is None
    adapter = AIMNet2Adapter.from_models(models)
    assert adapter.fingerprint()["weights_sha256"] == AIMNet2Adapter(model_paths[:1]).fingerprint()["weights_sha256"]
    atoms = structures[1].copy()
    atoms.calc = calc
    with adapter.capture() as captured:
        atoms.get_potential_energy()
    expected = AIMNet2Adapter(model_paths[:1]).run([structures[1]]).features[0]
    np.testing.assert_allclose(adapter.features_from_capture(captured, len(atoms)), expected, atol=1e-5)
    assert all(not m._forward_hooks for m in models[0].modules())


def test_plugin_registration_and_cli(model_paths, structures, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from probe_base.cli import main
    from probe_base.plugins import available_adapters
    from probe_base.store import load_store

    info = available_adapters()["aimnet"]
    assert info.adapter_class is AIMNet2Adapter and info.distribution == "probe-aimnet"
    frames = []
    for atoms in structures[:5]:
        atoms = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=-4200.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    write(tmp_path / "in.xyz", frames)
    rc = main(
        [
            "extract",
            "--adapter",
            "aimnet",
            "--model",
            *map(str, model_paths[:2]),
            "--layers",
            "charges",
            "aim",
            "--input",
            str(tmp_path / "in.xyz"),
            "--output",
            str(tmp_path / "s.h5"),
        ]
    )
    assert rc == 0
    data = load_store(tmp_path / "s.h5")
    assert data.features.shape == (45, 33)
    direct = AIMNet2Adapter(model_paths[:2], layers=["charges", "aim"]).run(frames)
    np.testing.assert_allclose(data.features, np.concatenate(direct.features), atol=1e-6)
