"""The MACE adapter: PROBE reads the invariant (0e) channels of MACE's product blocks.

Layer ``products.<i>`` is the output of ``model.products[i]`` (the i-th message-passing
layer after its symmetric contraction and linear update); its first block holds the
scalar (0e) channels, the ones ``MACECalculator.get_descriptors(invariants_only=True)``
returns. The default is the last product block, the layer the PROBE paper reads.

``mace`` is imported lazily: listing adapters does not import it (importing mace sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process).
"""

from __future__ import annotations

from pathlib import Path

import torch

from probe_base import Adapter, FeatureLayer, hookimpl
from probe_base.errors import InputError, ProbeError


def _mace_modules():
    """Import mace before e3nn (the other order fails on recent torch)."""
    import mace  # noqa: F401
    from e3nn import o3
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools, utils

    return mace_data, torch_geometric, torch_tools, utils, o3


class MACEAdapter(Adapter):
    """MACE / ScaleShiftMACE ``.model`` files (the file ``mace_run_train`` writes at the
    end of training). Several files form an ensemble; the first is the probed backbone.

    ``head``: for multi-head models, the readout head used for energies (default: the
    only head, else the one named "default", else the last one).
    """

    name = "mace"
    version = "1"
    default_parameters = {"head": None}
    ase_calculator = "mace.calculators:MACECalculator"

    def load_model(self, path: Path) -> torch.nn.Module:
        _mace_modules()
        try:
            # mace's own format is a pickled nn.Module: only ever used on the user's
            # own model files, never on probe files or anything downloaded by us.
            model = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise InputError(
                f"{path}: cannot be loaded as a MACE model ({type(exc).__name__}: {exc}); "
                "pass the non-compiled `.model` file written at the end of "
                "`mace_run_train` (not a `_compiled.model` or a checkpoint `.pt`)"
            ) from exc
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "products"):
            raise InputError(
                f"{path}: holds a {type(model).__name__}, not a MACE model with product "
                "blocks; pass the `.model` file written at the end of `mace_run_train`"
            )
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    # ---- layers -----------------------------------------------------------------
    def feature_layers(self) -> list[FeatureLayer]:
        o3 = _mace_modules()[-1]
        layers = []
        for index, product in enumerate(self.models[0].products):
            irreps = o3.Irreps(str(product.linear.irreps_out))
            mul, irrep = irreps[0]
            if irrep != o3.Irrep("0e"):
                raise ProbeError(
                    f"mace: products.{index} output {irreps} does not start with scalar "
                    "(0e) channels; this MACE variant is not supported by the adapter"
                )
            layers.append(
                FeatureLayer(
                    f"products.{index}",
                    int(mul),
                    f"0e channels of product block {index} ({irreps})",
                )
            )
        self._layer_widths = {layer.name: layer.width for layer in layers}
        return layers

    def layer_module(self, model: torch.nn.Module, layer: str) -> torch.nn.Module:
        return model.products[int(layer.split(".", 1)[1])]

    def invariant_features(self, layer: str, output) -> torch.Tensor:
        return output[:, : self._layer_widths[layer]]

    def supported_elements(self) -> set[int] | None:
        supported = None
        for model in self.models:
            zs = {int(z) for z in model.atomic_numbers}
            supported = zs if supported is None else supported & zs
        return supported

    # ---- forward ----------------------------------------------------------------
    def _head(self, model) -> str:
        heads = list(getattr(model, "heads", None) or ["Default"])
        head = self.parameters["head"]
        if head is not None:
            if head not in heads:
                raise InputError(
                    f"mace: head {head!r} not in the model's heads {heads}; pass --adapter-option head=<one>"
                )
            return head
        if len(heads) == 1:
            return heads[0]
        named_default = [h for h in heads if h.lower() == "default"]
        return named_default[0] if named_default else heads[-1]

    def predict(self, model, atoms_list, compute_forces: bool):
        mace_data, torch_geometric, torch_tools, utils, _ = _mace_modules()
        dtype = next(model.parameters()).dtype
        device = next(model.parameters()).device
        heads = list(getattr(model, "heads", None) or ["Default"])
        head = self._head(model)
        z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        cutoff = float(model.r_max)
        # No reference labels are read: an empty key specification.
        keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={})
        with torch_tools.default_dtype(dtype):
            graphs = [
                mace_data.AtomicData.from_config(
                    mace_data.config_from_atoms(atoms, key_specification=keyspec, head_name=head),
                    z_table=z_table,
                    cutoff=cutoff,
                    heads=heads,
                )
                for atoms in atoms_list
            ]
        batch = torch_geometric.Batch.from_data_list(graphs).to(device)
        with torch.set_grad_enabled(compute_forces):
            out = model(batch.to_dict(), training=False, compute_force=compute_forces)
        energies = out["energy"].detach().to(torch.float64).reshape(-1)
        forces = None
        if compute_forces:
            forces = out["forces"].detach().to(torch.float64)
        return energies, forces

    # ---- ASE ----------------------------------------------------------------------
    def primary_energy(self, results: dict) -> float:
        """A committee ``MACECalculator`` reports the committee mean as ``energy``; the
        probe reads the first model, whose energy is ``energy_comm[0]``."""
        if "energy_comm" in results:
            return float(results["energy_comm"][0])
        return float(results["energy"])

    # ---- probe demo -----------------------------------------------------------------
    @classmethod
    def example_models(cls, train_file, workdir, n_members: int, retrain=False) -> list[Path]:
        """``probe demo``'s ensemble: small ScaleShiftMACE models (``mace_run_train``) on
        the demo's EMT copper clusters. The package ships 4 members trained on exactly the
        demo's training set: they are copied (members beyond them are trained); with
        ``retrain`` every member is trained anew (about a minute each on one CPU thread).
        See ``probe_mace.example``."""
        from .example import example_models

        return example_models(train_file, workdir, n_members, retrain=retrain)

    @classmethod
    def calculator_models(cls, calculator):
        return list(calculator.models)  # a committee: the first is the probed one


@hookimpl
def register_adapters(register):
    register(MACEAdapter)


__all__ = ["MACEAdapter", "register_adapters"]
