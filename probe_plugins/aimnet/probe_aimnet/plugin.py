"""The AIMNet2 adapter: PROBE reads AIMNet2's per-atom pass outputs, ``aim`` by default.

Model files: aimnet's own formats, loaded by ``AIMNet2Calculator`` (v2 ``.pt`` as written
by ``aimnet export``, or a registry name available offline). Several files = an ensemble;
the first is the probed backbone. Legacy TorchScript ``.jpt`` files cannot carry forward
hooks: convert them first (``aimnet convert model.jpt config.yaml model.pt``).

Energies and forces come from the model's ``AIMNet2Calculator`` (which adds the external
long-range Coulomb of v2 files back: the bare module's energy is not the model's energy);
the hooks fire in that same pass. Layers, in the order the model computes them:
``afv`` (element embedding), ``mlps.<i>`` (output of pass i's MLP: charge update and
feature update), ``charges`` (partial charges after the last charge update), ``conv_a``
(the last pass's AEV convolution of the atomic features, the input of ``aim``) and
``aim`` (the last pass's output, the features the energy head reads; the default).
Hooks sit on ``Sequential``/``Embedding``/``ConvSV`` blocks, never on an activation (each
MLP reuses one). On CPU the calculator flattens a batch and appends one padding atom;
``invariant_features`` drops it (dense ``(B, N, W)`` outputs, CUDA's layout for small
molecules, are reshaped). On CUDA with ``inference_kernels=True`` aimnet skips its fused
dense path while any hook is registered (the same equations, module by module).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import torch

from probe_base import Adapter, FeatureLayer, hookimpl
from probe_base.errors import InputError, ProbeError

# model -> the AIMNet2Calculator that runs it (a calculator's own, when known)
_CALCULATORS: "weakref.WeakKeyDictionary[torch.nn.Module, object]" = weakref.WeakKeyDictionary()


def calculator_of(model, device=None):
    """The ``AIMNet2Calculator`` running ``model`` (made once per model if none is known)."""
    calc = _CALCULATORS.get(model)
    if calc is None:
        from aimnet.calculators import AIMNet2Calculator

        device = device or str(next(model.parameters()).device)
        calc = _CALCULATORS[model] = AIMNet2Calculator(model, device=device)
    return calc


class AIMNet2Adapter(Adapter):
    """AIMNet2 v2 model files. ``charge``: total charge of structures without
    ``atoms.info["charge"]``; ``mult``: spin multiplicity for NSE models."""

    name = "aimnet"
    version = "1"
    default_parameters = {"charge": 0.0, "mult": 1.0}
    ase_calculator = "aimnet.calculators.aimnet2ase:AIMNet2ASE"

    def load_model(self, path: Path) -> torch.nn.Module:
        if path.suffix.lower() == ".jpt":
            raise InputError(
                f"{path}: legacy TorchScript AIMNet2 models cannot be hooked; convert "
                "it with `aimnet convert model.jpt config.yaml model.pt` and pass the .pt"
            )
        from aimnet.calculators import AIMNet2Calculator

        try:
            calc = AIMNet2Calculator(str(path), device=str(self.device))
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise InputError(
                f"{path}: cannot be loaded as an AIMNet2 model ({type(exc).__name__}: "
                f"{exc}); pass a v2 .pt file written by `aimnet export`"
            ) from exc
        if not hasattr(calc.model, "mlps"):
            raise InputError(f"{path}: holds a {type(calc.model).__name__}, not an AIMNet2 model")
        _CALCULATORS[calc.model] = calc
        return calc.model

    # ---- layers -----------------------------------------------------------------
    def feature_layers(self) -> list[FeatureLayer]:
        model = self.models[0]
        if not hasattr(model, "mlps"):
            raise ProbeError(f"aimnet: {type(model).__name__} is not an AIMNet2 model")
        widths = [[m for m in mlp if isinstance(m, torch.nn.Linear)][-1].out_features for mlp in model.mlps]
        last = len(widths) - 1
        return [
            FeatureLayer("afv", model.afv.weight.shape[1], "element embedding (initial atomic features)"),
            *(
                FeatureLayer(f"mlps.{i}", widths[i], f"output of pass {i} (charge and feature update)")
                for i in range(last)
            ),
            FeatureLayer("charges", 1, "partial charges (after the last charge update)"),
            FeatureLayer("conv_a", model.conv_a.output_size(), f"AEV convolution of pass {last}"),
            FeatureLayer("aim", widths[last], f"aim: output of pass {last} (mlps.{last})"),
        ]

    def layer_module(self, model, layer):
        if layer == "charges":
            return model
        if layer == "aim":
            return model.mlps[len(model.mlps) - 1]
        return model.get_submodule(layer)

    def invariant_features(self, layer, output) -> torch.Tensor:
        if layer == "charges":
            output = output["charges"]
            return output.reshape(-1, 1) if output.ndim == 2 else output[:-1].reshape(-1, 1)
        if output.ndim == 3:  # dense (B, N, W) batches (CUDA, small molecules)
            return output.reshape(-1, output.shape[-1])
        return output[:-1]  # flat batches end with one padding atom

    def supported_elements(self) -> set[int] | None:
        supported = None
        for model in self.models:
            species = (getattr(model, "_metadata", None) or {}).get("implemented_species")
            if not species:
                weight = model.afv.weight.detach()
                finite = torch.isfinite(weight).all(dim=1).nonzero().flatten().tolist()
                species = [z for z in finite if z > 0]
                if len(species) == weight.shape[0] - 1:
                    continue  # an unexported module: every row is defined
            supported = set(species) if supported is None else supported & set(species)
        return supported

    # ---- forward ----------------------------------------------------------------
    def predict(self, model, atoms_list, compute_forces: bool):
        calc = calculator_of(model)
        if any(atoms.pbc.any() for atoms in atoms_list) and len(atoms_list) > 1:
            raise InputError("aimnet: periodic structures are evaluated one per batch; use a batch size of 1")
        counts = [len(atoms) for atoms in atoms_list]
        data = {
            "coord": torch.as_tensor(np.concatenate([a.positions for a in atoms_list]), dtype=torch.float32),
            "numbers": torch.as_tensor(np.concatenate([a.numbers for a in atoms_list]), dtype=torch.int64),
            "charge": torch.tensor([float(a.info.get("charge", self.parameters["charge"])) for a in atoms_list]),
            "mol_idx": torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)),
        }
        if calc.is_nse:
            data["mult"] = torch.tensor([float(a.info.get("mult", self.parameters["mult"])) for a in atoms_list])
        if atoms_list[0].pbc.any():
            data["cell"], data["pbc"] = atoms_list[0].cell.array, atoms_list[0].pbc
        with torch.enable_grad():
            out = calc(data, forces=compute_forces)
        energies = out["energy"].detach().to(torch.float64).reshape(-1)
        forces = out["forces"].detach().to(torch.float64) if compute_forces else None
        return energies, forces

    # ---- ASE ----------------------------------------------------------------------
    def primary_energy(self, results: dict) -> float:
        """An ensemble reports the mean as ``energy``; the probe reads the first member."""
        if "energy_members" in results:
            return float(np.ravel(results["energy_members"])[0])
        return float(results["energy"])

    @classmethod
    def calculator_models(cls, calculator):
        calculators = getattr(calculator.base_calc, "calculators", [calculator.base_calc])
        for calc in calculators:
            _CALCULATORS[calc.model] = calc
        return [calc.model for calc in calculators]


@hookimpl
def register_adapters(register):
    register(AIMNet2Adapter)
