"""NequIP-specific checks of the adapter: layers from irreps, hooks, formats, ensembles,
compiled models, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from e3nn.o3 import Irrep, Irreps
from probe_nequip import NequIPAdapter
from probe_nequip.plugin import convnets

from probe_base.errors import InputError, ProbeError


def _scalar_columns(irreps: Irreps) -> list[int]:
    """0e columns of a feature vector with these irreps, from e3nn's own slices."""
    return [
        c for (mul, irrep), sl in zip(irreps, irreps.slices()) if irrep == Irrep("0e") for c in range(sl.start, sl.stop)
    ]


def _node_features(model, adapter, atoms_list):
    """Every convnet layer's full ``node_features`` and the readout's input, by our own hooks."""
    seen, handles = {}, []
    for name, module in convnets(model).items():
        handles.append(
            module.register_forward_hook(
                lambda m, i, out, name=name: seen.__setitem__(name, out["node_features"].detach().clone())
            )
        )
    readout = dict(model.named_modules())["model.func.per_atom_energy_readout"]
    handles.append(
        readout.register_forward_pre_hook(
            lambda m, i: seen.__setitem__("readout_input", i[0]["node_features"].detach().clone())
        )
    )
    try:
        adapter.predict(model, atoms_list, compute_forces=True)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_layers_and_widths_from_irreps(trained, structures):
    adapter = NequIPAdapter([trained["package"]])
    layers = adapter.feature_layers()
    assert [layer.name for layer in layers] == ["layer0_convnet", "layer1_convnet", "layer2_convnet"]
    model = adapter.models[0]
    irreps = {name: Irreps(str(m.irreps_out["node_features"])) for name, m in convnets(model).items()}
    # hidden layers carry vectors and pseudovectors: only the 0e channels are invariants
    assert Irrep("1o") in [ir for _, ir in irreps["layer0_convnet"]]
    assert irreps["layer1_convnet"].dim > 6 and Irrep("1e") in [ir for _, ir in irreps["layer1_convnet"]]
    assert [layer.width for layer in layers] == [len(_scalar_columns(irreps[n])) for n in irreps]
    assert layers[-1].width == 6 and irreps["layer2_convnet"] == Irreps("6x0e")
    assert adapter.layers == ["layer2_convnet"] and adapter.widths == [6]
    assert adapter.supported_elements() == {1, 6, 8}


ALL = ["layer0_convnet", "layer1_convnet", "layer2_convnet"]


def test_captured_features_are_the_scalar_node_features(adapter, structures):
    adapter = NequIPAdapter.from_models(adapter.models[:1], layers=ALL)
    model = adapter.models[0]
    out = adapter.run(structures)
    features = np.concatenate(out.features)
    full = _node_features(model, adapter, structures)
    expected = []
    for name in adapter.layers:
        irreps = Irreps(str(convnets(model)[name].irreps_out["node_features"]))
        assert full[name].shape[1] == irreps.dim
        expected.append(full[name][:, _scalar_columns(irreps)].numpy())
    np.testing.assert_array_equal(features, np.concatenate(expected, axis=1).astype(np.float32))
    # the default (last) layer is exactly what the energy readout reads
    last = NequIPAdapter.from_models([model]).run(structures).features
    np.testing.assert_array_equal(np.concatenate(last), full["readout_input"].numpy())


def test_features_are_invariant_under_rotation(adapter, structures):
    adapter = NequIPAdapter.from_models(adapter.models[:1], layers=ALL)
    atoms = structures[0]
    rotated = atoms.copy()
    rotated.rotate(73, (1, 2, 3), center="COM")
    a, b = (adapter.run([x], members=False).features[0] for x in (atoms, rotated))
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_hooks_change_nothing_and_match_nequips_calculator(adapter, trained, structures):
    from nequip.integrations.ase import NequIPCalculator

    adapter = NequIPAdapter.from_models(adapter.models[:1], layers=["layer0_convnet", "layer2_convnet"])
    model = adapter.models[0]
    plain_e, plain_f = adapter.predict(model, structures, compute_forces=True)
    out = adapter.run(structures)
    np.testing.assert_array_equal(out.energies, plain_e.numpy())
    np.testing.assert_array_equal(np.concatenate(out.forces), plain_f.numpy())
    assert out.energies.dtype == np.float64
    assert all(not m._forward_hooks for m in model.modules())
    calc = NequIPCalculator._from_saved_model(
        str(trained["package"]), device="cpu", chemical_species_to_atom_type_map=True
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # what nequip's factory sets for its calculators
    try:
        for atoms in structures:  # one structure per pass, as the calculator runs
            alone = adapter.run([atoms], members=False)
            atoms = atoms.copy()
            atoms.calc = calc
            assert atoms.get_potential_energy() == pytest.approx(alone.energies[0], abs=1e-9)
            np.testing.assert_allclose(atoms.get_forces(), alone.forces[0], atol=1e-9)
    finally:
        torch.set_default_dtype(previous)


def test_package_and_checkpoint_are_the_same_backbone(adapter, trained, structures):
    package = NequIPAdapter.from_models(adapter.models[:1])
    checkpoint = NequIPAdapter([trained["ckpt1"]])
    assert package.fingerprint()["weights_sha256"] == checkpoint.fingerprint()["weights_sha256"]
    a, b = package.run(structures), checkpoint.run(structures)
    np.testing.assert_array_equal(a.energies, b.energies)
    np.testing.assert_array_equal(np.concatenate(a.features), np.concatenate(b.features))
    other = NequIPAdapter.from_models(adapter.models[1:2])  # loaded from the epoch-1 .ckpt
    assert other.fingerprint()["weights_sha256"] != package.fingerprint()["weights_sha256"]


def test_ensemble_of_package_and_checkpoint(adapter, trained, structures):
    out = adapter.run(structures)
    assert out.member_energies.shape == (len(structures), 2)
    np.testing.assert_array_equal(out.member_energies[:, 0], out.energies)
    second = NequIPAdapter.from_models(adapter.models[1:2]).run(structures)
    np.testing.assert_array_equal(out.member_energies[:, 1], second.energies)
    for member_forces, forces in zip(out.member_forces, second.forces):
        np.testing.assert_array_equal(member_forces[1], forces)
    assert np.all(np.std(out.member_energies, axis=1) > 0)
    # features come from the first (probed) model only
    first = NequIPAdapter.from_models(adapter.models[:1]).run(structures)
    np.testing.assert_array_equal(np.concatenate(out.features), np.concatenate(first.features))


def test_torch_state_of_the_process_is_left_alone(trained):
    """nequip's set_global_state sets float64 and reseeds everything; loading must not."""
    from nequip.utils import global_state

    was = global_state._GLOBAL_STATE_INITIALIZED
    previous = torch.get_default_dtype()
    global_state._GLOBAL_STATE_INITIALIZED = False
    torch.set_default_dtype(torch.float32)
    try:
        torch.manual_seed(7)
        expected = torch.rand(3)
        torch.manual_seed(7)
        NequIPAdapter([trained["package"]])
        assert torch.get_default_dtype() == torch.float32
        np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())
        assert not global_state.global_state_initialized(), (
            "nequip's own entry points must still set their global state later"
        )
    finally:
        global_state._GLOBAL_STATE_INITIALIZED = was
        torch.set_default_dtype(previous)


def test_refuses_compiled_models_with_the_fix(adapter, trained, tmp_path):
    compiled = tmp_path / "model.nequip.pt2"
    compiled.write_bytes(trained["package"].read_bytes()[:1000])
    with pytest.raises(InputError, match=r"opaque.*\.nequip\.zip.*\.ckpt"):
        NequIPAdapter([trained["package"], compiled])
    # what nequip's from_compiled_model holds: a DictInputOutputWrapper around an AOTInductor
    # runner (a callable, no submodules); here the runner is the eager model's forward
    from nequip.nn.compile import DictInputOutputWrapper

    eager = adapter.models[0]
    opaque = DictInputOutputWrapper(lambda inputs: eager(inputs), ["pos"], ["total_energy"])
    with pytest.raises(ProbeError, match="no convnet layers to hook.*opaque"):
        NequIPAdapter.from_models([opaque])


@pytest.mark.skipif(
    os.environ.get("PROBE_NEQUIP_COMPILE") != "1",
    reason="nequip-compile --mode aotinductor takes > 5 min on one CPU thread; PROBE_NEQUIP_COMPILE=1 runs it",
)
def test_real_aotinductor_model_is_refused(trained, tmp_path):
    from probe_nequip import NequIPCalculator

    compiled = tmp_path / "model.nequip.pt2"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "nequip-compile"),
            str(trained["package"]),
            str(compiled),
            "--mode",
            "aotinductor",
            "--device",
            "cpu",
            "--target",
            "ase",
        ],
        check=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    with pytest.raises(InputError, match="opaque"):
        NequIPAdapter([compiled])
    calc = NequIPCalculator.from_compiled_model(str(compiled), chemical_species_to_atom_type_map=True)
    with pytest.raises(ProbeError, match="no convnet layers to hook"):
        NequIPAdapter.from_models([calc.model])


def test_unknown_layer_bad_file_and_unknown_element(adapter, trained, tmp_path):
    with pytest.raises(InputError, match="layer2_convnet"):
        NequIPAdapter.from_models(adapter.models[:1], layers=["products.0"])
    bad = tmp_path / "not_a_model.ckpt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="cannot be loaded as a NequIP"):
        NequIPAdapter([bad])
    from ase.build import molecule

    with pytest.raises(InputError, match="element"):
        adapter.run([molecule("NH3")])


def test_plugin_registration():
    from probe_base.plugins import available_adapters, get_adapter_class

    info = available_adapters()["nequip"]
    assert info.adapter_class is NequIPAdapter and info.distribution == "probe-nequip"
    assert get_adapter_class("nequip") is NequIPAdapter


def test_cli_extract_with_adapter_nequip(adapter, model_paths, data_files, tmp_path):
    from probe_base.cli import main
    from probe_base.store import load_store

    store = tmp_path / "test.h5"
    rc = main(
        [
            "extract",
            "--adapter",
            "nequip",
            "--model",
            *map(str, model_paths),
            "--input",
            str(data_files["test"]),
            "--output",
            str(store),
        ]
    )
    assert rc == 0
    data = load_store(store)
    assert len(data) == 40 and data.features.shape == (40 * 9, 6)
    assert data.member_energies.shape == (40, 2)
    assert data.fingerprint["adapter"] == "nequip"
    reference = NequIPAdapter.from_models(adapter.models[:1]).run(ase.io.read(data_files["test"], ":5"))
    # batches of 32 vs 5 in a float32 model: equal to float32 precision
    np.testing.assert_allclose(data.energy_pred[:5], reference.energies, rtol=0, atol=1e-6)
    np.testing.assert_allclose(data.features[:45], np.concatenate(reference.features), atol=1e-5)
