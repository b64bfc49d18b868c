"""MACE-specific checks of the adapter: layers, hooks, ensembles, calculators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from probe_mace import MACEAdapter

from probe_base.errors import InputError


def _mace_calculator(paths):
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=[str(p) for p in paths], device="cpu", default_dtype="float64")


def _node_feats(model, adapter, atoms_list):
    """mace's own ``node_feats`` for the batch, through the adapter's data pipeline."""
    captured = {}
    handle = model.register_forward_hook(lambda m, i, out: captured.update(out))
    try:
        adapter.predict(model, atoms_list, compute_forces=True)
    finally:
        handle.remove()
    return captured["node_feats"].detach()


def test_layers_and_widths(model_paths):
    adapter = MACEAdapter(model_paths[:1])
    layers = adapter.feature_layers()
    assert [layer.name for layer in layers] == ["products.0", "products.1"]
    assert [layer.width for layer in layers] == [8, 8]
    assert adapter.layers == ["products.1"] and adapter.widths == [8]
    assert adapter.supported_elements() == {1, 6, 8}


def test_unknown_layer_and_bad_file(model_paths, tmp_path):
    with pytest.raises(InputError, match="products.0"):
        MACEAdapter(model_paths[:1], layers=["interactions.0"])
    bad = tmp_path / "not_a_model.model"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="not a MACE model"):
        MACEAdapter([bad])
    with pytest.raises(InputError, match="element"):
        MACEAdapter(model_paths[:1]).run([molecule("NH3")])


def test_captured_features_are_node_feats_invariants(model_paths, structures):
    adapter = MACEAdapter(model_paths[:1], layers=["products.0", "products.1"])
    out = adapter.run(structures)
    features = np.concatenate(out.features)
    node_feats = _node_feats(adapter.models[0], adapter, structures).numpy()
    # node_feats = [products.0 (8x0e+8x1o = 32 columns) | products.1 (8x0e)]
    assert node_feats.shape[1] == 32 + 8
    expected = np.concatenate([node_feats[:, :8], node_feats[:, 32:40]], axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_features_match_get_descriptors(model_paths, structures):
    adapter = MACEAdapter(model_paths[:1], layers=["products.0", "products.1"])
    calc = _mace_calculator(model_paths[:1])
    out = adapter.run(structures)
    for atoms, features in zip(structures, out.features):
        descriptors = calc.get_descriptors(atoms, invariants_only=True)
        np.testing.assert_allclose(features, descriptors, rtol=1e-5, atol=1e-6)


def test_scalar_model_default_layer(scalar_model_path, structures):
    adapter = MACEAdapter([scalar_model_path])
    assert [layer.width for layer in adapter.feature_layers()] == [8, 8]
    out = adapter.run(structures[:3])
    node_feats = _node_feats(adapter.models[0], adapter, structures[:3]).numpy()
    np.testing.assert_allclose(np.concatenate(out.features), node_feats[:, 8:16], rtol=1e-5, atol=1e-6)


def test_hooks_change_nothing_and_are_removed(model_paths, structures):
    adapter = MACEAdapter(model_paths[:1], layers=["products.0", "products.1"])
    model = adapter.models[0]
    plain_e, plain_f = adapter.predict(model, structures, compute_forces=True)
    out = adapter.run(structures)
    np.testing.assert_array_equal(out.energies, plain_e.numpy())
    np.testing.assert_array_equal(np.concatenate(out.forces), plain_f.numpy())
    assert out.energies.dtype == np.float64
    assert all(not product._forward_hooks for product in model.products)
    # and the batched pipeline agrees with mace's own calculator
    calc = _mace_calculator(model_paths[:1])
    for atoms, energy, forces in zip(structures, out.energies, out.forces):
        atoms = atoms.copy()
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-8)


def test_ensemble_members(adapter, model_paths, structures):
    out = adapter.run(structures)
    assert out.member_energies.shape == (len(structures), len(model_paths))
    np.testing.assert_array_equal(out.member_energies[:, 0], out.energies)
    assert np.all(np.std(out.member_energies, axis=1) > 0)  # different seeds differ
    assert [f.shape for f in out.member_forces] == [(3, len(a), 3) for a in structures]
    calc = _mace_calculator(model_paths)
    atoms = structures[0].copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    np.testing.assert_allclose(calc.results["energy_comm"], out.member_energies[0], atol=1e-8)


def test_features_permute_with_atoms(model_paths, structures):
    adapter = MACEAdapter(model_paths[:1])
    atoms = structures[0]
    order = np.random.default_rng(3).permutation(len(atoms))
    a = adapter.run([atoms]).features[0]
    b = adapter.run([atoms[order]]).features[0]
    np.testing.assert_allclose(b, a[order], rtol=1e-5, atol=1e-6)


def test_batch_independence(model_paths, structures):
    adapter = MACEAdapter(model_paths[:1])
    together = adapter.run(structures)
    alone = adapter.run(structures[2:3])
    np.testing.assert_allclose(alone.features[0], together.features[2], rtol=1e-5, atol=1e-6)
    assert alone.energies[0] == pytest.approx(together.energies[2], abs=1e-8)


def test_from_calculator_models(model_paths, structures):
    calc = _mace_calculator(model_paths[:2])
    models = MACEAdapter.models_of_calculator(calc)
    assert len(models) == 2 and all(a is b for a, b in zip(models, calc.models))
    assert MACEAdapter.models_of_calculator(object()) is None
    adapter = MACEAdapter.from_models(models)
    # the hook on the calculator's primary model reads the same features
    atoms = structures[1].copy()
    atoms.calc = calc
    with adapter.capture() as captured:
        atoms.get_potential_energy()
    expected = MACEAdapter(model_paths[:1]).run([structures[1]]).features[0]
    np.testing.assert_allclose(captured["products.1"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert all(not p._forward_hooks for p in models[0].products)


def test_plugin_registration():
    from probe_base.plugins import available_adapters

    info = available_adapters()["mace"]
    assert info.adapter_class is MACEAdapter and info.distribution == "probe-mace"


def test_drop_in_calculator_without_probe(model_paths):
    from mace.calculators import MACECalculator as Original
    from probe_mace import MACECalculator

    calc = MACECalculator(model_paths=str(model_paths[0]), device="cpu")
    assert type(calc) is Original
