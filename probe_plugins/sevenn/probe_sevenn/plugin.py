"""The SevenNet adapter (made by copying ``plugin_template/``): PROBE reads the scalar (0e)
channels of SevenNet's per-atom node features ``x``.

Model files: SevenNet checkpoints (``.pth``) or the names of the checkpoints that ship
with sevenn (``7net-0``, ``7net-0_22May2024``, ``7net-l3i5``), resolved by sevenn's own
``pretrained_name_to_path`` to the file inside the installed package, so the
fingerprint hashes it. Several = an ensemble; the first is the probed backbone.
sevenn unpickles checkpoints (``weights_only=False``): load only files you trust.

Layers, found from the model's modules and irreps: ``{i}_equivariant_gate`` (output of
interaction block i; its scalars come first) and ``reduce_input_to_hidden`` (the
readout's hidden layer). Default: the last gate.

torch's default dtype is set to the model's for loading and for each pass, and restored
afterwards: another framework in the process (nequip sets float64) does not break it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from probe_base import Adapter, FeatureLayer, hookimpl
from probe_base.errors import InputError, ProbeError


@contextmanager
def _default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def resolve_model(model) -> Path:
    """A checkpoint path as given, or the bundled checkpoint file of a pretrained name."""
    if Path(model).is_file():
        return Path(model)
    from sevenn.util import pretrained_name_to_path

    try:
        return Path(pretrained_name_to_path(str(model)))
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise InputError(
            f"{model}: neither a SevenNet checkpoint file nor a pretrained model available "
            f"offline ({type(exc).__name__}: {exc}); bundled with sevenn: 7net-0, "
            "7net-0_22May2024, 7net-l3i5"
        ) from exc


class SevenNetAdapter(Adapter):
    """SevenNet checkpoints or bundled pretrained names. ``modal``: the fidelity of a
    multi-fidelity model (e.g. SevenNet_MF_0), as for ``SevenNetCalculator``."""

    name = "sevenn"
    version = "1"
    default_parameters = {"modal": None}
    ase_calculator = "sevenn.calculator:SevenNetCalculator"

    def __init__(self, model_paths, layers=None, device="cpu", **options):
        if isinstance(model_paths, (str, Path)):
            model_paths = [model_paths]
        super().__init__([resolve_model(m) for m in model_paths], layers, device, **options)

    def load_model(self, path: Path) -> torch.nn.Module:
        from sevenn.util import load_checkpoint

        try:
            with _default_dtype(torch.float32):
                model = load_checkpoint(str(path)).build_model()
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise InputError(
                f"{path}: cannot be loaded as a SevenNet checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
        for param in model.parameters():
            param.requires_grad_(False)
        return model.to(self.device).eval()

    def feature_layers(self) -> list[FeatureLayer]:
        from e3nn.o3 import Irrep, Irreps
        from sevenn.nn.equivariant_gate import EquivariantGate

        layers, self._slices = [], {}
        for name, module in self.models[0]._modules.items():
            if isinstance(module, EquivariantGate):
                irreps, key, what = module.gate.irreps_out, module.key_x, "interaction output"
            elif name == "reduce_input_to_hidden":
                irreps, key, what = module.irreps_out, module.key_output, "readout hidden layer"
            else:
                continue
            width = 0
            for mul, irrep in Irreps(irreps):
                if irrep != Irrep("0e"):
                    break
                width += mul
            if width == 0:
                raise ProbeError(
                    f"sevenn: {name} output {irreps} does not start with 0e "
                    "channels; this SevenNet variant is not supported"
                )
            self._slices[name] = (key, width)
            layers.append(FeatureLayer(name, width, f"0e channels of {what} ({irreps})"))
        return layers

    def default_layers(self) -> list[str]:
        return [[n for n in self._slices if n.endswith("_equivariant_gate")][-1]]

    def layer_module(self, model, layer):
        return model._modules[layer]

    def invariant_features(self, layer, output) -> torch.Tensor:
        key, width = self._slices[layer]
        return output[key][:, :width].clone()

    def supported_elements(self) -> set[int]:
        return set.intersection(*({int(z) for z in m.type_map} for m in self.models))

    def predict(self, model, atoms_list, compute_forces: bool):
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.data import Batch

        graphs = []
        for atoms in atoms_list:
            graph = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, float(model.cutoff)))
            if model.modal_map:
                if self.parameters["modal"] not in model.modal_map:
                    raise InputError(
                        f"sevenn: a multi-fidelity model; pass --adapter-option modal=<one of {list(model.modal_map)}>"
                    )
                graph[KEY.DATA_MODALITY] = self.parameters["modal"]
            graphs.append(graph)
        parameter = next(model.parameters())
        batch = Batch.from_data_list(graphs).to(parameter.device)
        was_batched = model.is_batch_data
        model.set_is_batch_data(True)  # a calculator's model is set to single structures
        try:
            with _default_dtype(parameter.dtype), torch.enable_grad():
                out = model(batch)
        finally:
            model.set_is_batch_data(was_batched)
        energies = out[KEY.PRED_TOTAL_ENERGY].detach().to(torch.float64).reshape(-1)
        forces = out[KEY.PRED_FORCE].detach().to(torch.float64) if compute_forces else None
        return energies, forces


@hookimpl
def register_adapters(register):
    register(SevenNetAdapter)
