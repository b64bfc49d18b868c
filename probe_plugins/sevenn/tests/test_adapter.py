"""SevenNet-specific checks: bundled names, layers from irreps, features and predictions
against sevenn's own calculator, hooks, dtype state, registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_sevenn import SevenNetAdapter

from probe_base.errors import InputError


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_names_resolve_to_bundled_checkpoints(adapter):
    import sevenn

    package = sevenn.__path__[0]
    assert all(p.is_file() and str(p).startswith(package) for p in adapter.model_paths)
    assert adapter.model_paths[0].parent.name == "SevenNet_0__11Jul2024"
    assert len(set(adapter.fingerprint()["model_files_sha256"])) == 2
    with pytest.raises(InputError, match="7net-l3i5"):
        SevenNetAdapter(["not-a-sevennet-model"])


def test_layers_come_from_the_model(adapter):
    layers = {layer.name: layer.width for layer in adapter.feature_layers()}
    assert layers == {**{f"{i}_equivariant_gate": 128 for i in range(5)}, "reduce_input_to_hidden": 64}
    assert adapter.layers == ["4_equivariant_gate"] and adapter.widths == [128]
    assert len(adapter.supported_elements()) == 89


def test_features_and_predictions_match_the_calculator(adapter, calculator, structures):
    """Batched pass with hooks on every layer vs sevenn's own single-structure pass."""
    every = SevenNetAdapter.from_models(adapter.models[:1], layers=[layer.name for layer in adapter.feature_layers()])
    out = every.run(structures)
    module = calculator.model._modules["2_equivariant_gate"]
    for atoms, energy, forces, features in zip(structures, out.energies, out.forces, out.features):
        captured = []
        handle = module.register_forward_hook(
            lambda m, i, o, captured=captured: captured.append(o["x"].detach().clone())
        )
        try:
            atoms = atoms.copy()
            atoms.calc = calculator
            assert atoms.get_potential_energy() == pytest.approx(energy, abs=2e-5)
            np.testing.assert_allclose(atoms.get_forces(), forces, atol=2e-5)
        finally:
            handle.remove()
        # layer 2's scalars are columns 256:384 of [0, 1, 2, 3, 4 gates | readout]
        np.testing.assert_allclose(features[:, 256:384], captured[0][:, :128].numpy(), atol=2e-5, rtol=1e-4)
    assert _hooks(calculator.model) == 0 and _hooks(adapter.models[0]) == 0


def test_batch_mode_of_a_calculator_model_is_restored(calculator, structures):
    adapter = SevenNetAdapter.from_models([calculator.model])
    assert calculator.model.is_batch_data is False
    adapter.run(structures[:2])
    assert calculator.model.is_batch_data is False


def test_default_dtype_state_is_kept(adapter, structures):
    """nequip switches torch's default dtype to float64; SevenNet must still run."""
    expected = adapter.run(structures[:2], members=False).energies
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = adapter.run(structures[:2], members=False)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_allclose(out.energies, expected, atol=1e-8)


def test_models_of_calculator(adapter, calculator):
    assert SevenNetAdapter.models_of_calculator(calculator) == [calculator.model]
    assert SevenNetAdapter.models_of_calculator(object()) is None
    from_calc = SevenNetAdapter.from_models(SevenNetAdapter.models_of_calculator(calculator))
    assert from_calc.fingerprint()["weights_sha256"] == adapter.fingerprint()["weights_sha256"]


def test_plugin_registration():
    from probe_base.plugins import available_adapters

    info = available_adapters()["sevenn"]
    assert info.adapter_class is SevenNetAdapter and info.distribution == "probe-sevenn"


def test_drop_in_calculator_without_probe():
    from probe_sevenn import SevenNetCalculator
    from sevenn.calculator import SevenNetCalculator as Original

    assert type(SevenNetCalculator("7net-0", device="cpu")) is Original


def test_multi_fidelity_model_needs_a_modal(structures):
    from sevenn.calculator import SevenNetCalculator as Original

    adapter = SevenNetAdapter("7net-mf-0")  # SevenNet_MF_0, bundled with sevenn
    with pytest.raises(InputError, match="modal"):
        adapter.run(structures[:1])
    modal = sorted(adapter.models[0].modal_map)[0]
    adapter = SevenNetAdapter("7net-mf-0", modal=modal)  # or --adapter-option modal=...
    assert adapter.fingerprint()["parameters"] == {"modal": modal}
    out = adapter.run(structures[:2])
    calc = Original("7net-mf-0", device="cpu", modal=modal)
    for atoms, energy in zip(structures[:2], out.energies):
        atoms = atoms.copy()
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=2e-5)
