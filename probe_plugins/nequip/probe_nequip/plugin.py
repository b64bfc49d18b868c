"""The NequIP adapter: PROBE reads the scalar (0e) node features of NequIP's convnet layers.

Model files: ``.nequip.zip`` packages (``nequip-package build``) and training checkpoints
(``.ckpt`` from ``nequip-train``), loaded with nequip's own ``load_saved_model`` as the
eager ``GraphModel``. Several files = an ensemble; the first is the probed backbone.
Compiled models (``nequip-compile``: AOTInductor ``.nequip.pt2``, TorchScript
``.nequip.pth``) are refused with the fix: they have no submodules to hook.

Layers ``layer{i}_convnet``: each writes ``node_features``; the adapter reads its 0e
columns, found from the layer's ``irreps_out`` (e.g. the 32 of ``32x0e+32x1o``; the last
layer is all 0e). Default: the last convnet layer, the one the energy readout reads.

nequip's global state (``set_global_state``) is set once, as ``nequip-train`` and its
calculators do, but torch's default dtype and the random generators it touches are given
back to the process; each pass runs under nequip's float64 default dtype.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from probe_base import Adapter, FeatureLayer, hookimpl
from probe_base.errors import InputError, ProbeError

NODE_FEATURES = "node_features"
COMPILED_SUFFIXES = (".nequip.pt2", ".nequip.pth")
OPAQUE = (
    "compiled NequIP models (nequip-compile: AOTInductor .nequip.pt2, TorchScript "
    ".nequip.pth) are opaque: they keep no submodules, so PROBE cannot hook the convnet "
    "layers. Use the eager model it was compiled from: the .nequip.zip package "
    "(nequip-package build) or the nequip-train checkpoint (.ckpt)"
)


@contextmanager
def _default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def nequip_state():
    """nequip's global state for loading a model (nequip's model builders assert it), without
    changing torch's default dtype or the random generators for the rest of the process.

    When nequip had not set it yet, it is marked unset again afterwards, so that nequip's
    own entry points (``NequIPCalculator`` factories, ``nequip-train``) still set their
    float64 default dtype when they run later in the same process."""
    from nequip.utils import global_state

    if global_state.global_state_initialized():
        yield
        return
    dtype, rng = torch.get_default_dtype(), (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        global_state.set_global_state()
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rng[0]), np.random.set_state(rng[1]), random.setstate(rng[2])
        global_state._GLOBAL_STATE_INITIALIZED = False


def convnets(model) -> dict[str, torch.nn.Module]:
    """``layer{i}_convnet`` -> module, in forward order (also for torch.package classes)."""
    found = {
        name.rsplit(".", 1)[-1]: module
        for name, module in model.named_modules()
        if name.endswith("_convnet") and NODE_FEATURES in getattr(module, "irreps_out", {})
    }
    if not found:
        kind = type(model).__name__
        raise ProbeError(
            f"nequip: {kind} has no convnet layers to hook; {OPAQUE}. "
            "(Models without NequIP convnets, e.g. Allegro, are not supported.)"
        )
    return found


class NequIPAdapter(Adapter):
    """NequIP ``GraphModel`` s from ``.nequip.zip`` packages or ``.ckpt`` checkpoints.

    ``chemical_species_to_atom_type_map``: as for ``NequIPCalculator`` (default: the
    model's type names are chemical symbols). ``model_key``: the model of a multi-model
    checkpoint (nequip's default: the sole model).
    """

    name = "nequip"
    version = "1"
    default_parameters = {"chemical_species_to_atom_type_map": None, "model_key": None}
    ase_calculator = "nequip.integrations.ase:NequIPCalculator"

    def load_model(self, path: Path) -> torch.nn.Module:
        if path.name.endswith(COMPILED_SUFFIXES):
            raise InputError(f"{path}: {OPAQUE}")
        from nequip.model.saved_models.load_utils import load_saved_model

        model_key = self.parameters["model_key"]
        kwargs = {"model_key": model_key} if model_key else {}
        try:
            # packages and checkpoints are unpickled by nequip: use only files you trust
            with nequip_state(), _default_dtype(torch.float64):
                model = load_saved_model(str(path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the fix
            raise InputError(
                f"{path}: cannot be loaded as a NequIP package (.nequip.zip) or "
                f"checkpoint (.ckpt) ({type(exc).__name__}: {exc})"
            ) from exc
        convnets(model)  # a clear error now rather than at the first pass
        for param in model.parameters():
            param.requires_grad_(False)
        return model.to(self.device).eval()

    # ---- layers -----------------------------------------------------------------------
    def feature_layers(self) -> list[FeatureLayer]:
        from e3nn.o3 import Irrep, Irreps

        layers, self._columns = [], {}
        for name, module in convnets(self.models[0]).items():
            irreps = Irreps(str(module.irreps_out[NODE_FEATURES]))  # torch.package -> e3nn
            columns, start = [], 0
            for mul, irrep in irreps:
                if irrep == Irrep("0e"):
                    columns.extend(range(start, start + mul))
                start += mul * irrep.dim
            if not columns:
                raise ProbeError(f"nequip: {name} writes {irreps}, no scalar (0e) channels")
            contiguous = columns == list(range(columns[0], columns[-1] + 1))
            self._columns[name] = slice(columns[0], columns[-1] + 1) if contiguous else torch.tensor(columns)
            layers.append(FeatureLayer(name, len(columns), f"0e channels of {name} node_features ({irreps})"))
        return layers

    def layer_module(self, model, layer):
        return convnets(model)[layer]

    def invariant_features(self, layer, output) -> torch.Tensor:
        features = output[NODE_FEATURES]
        columns = self._columns[layer]
        if isinstance(columns, torch.Tensor):
            return features.index_select(1, columns.to(features.device))
        return features[:, columns].clone()

    def _species_map(self, model) -> dict[str, str]:
        types = model.metadata["type_names"].split(" ")
        species_map = self.parameters["chemical_species_to_atom_type_map"]
        return dict(species_map) if species_map else {t: t for t in types}

    def supported_elements(self) -> set[int] | None:
        from ase.data import atomic_numbers

        supported = None
        for model in self.models:
            species = self._species_map(model)
            if not all(symbol in atomic_numbers for symbol in species):
                return None  # type names that are not chemical symbols: nequip checks them
            zs = {atomic_numbers[symbol] for symbol in species}
            supported = zs if supported is None else supported & zs
        return supported

    # ---- forward ------------------------------------------------------------------
    def _transforms(self, model):
        cache = self.__dict__.setdefault("_transform_cache", {})
        if id(model) not in cache:
            from nequip.integrations.utils import basic_transforms

            metadata = model.metadata
            types = metadata["type_names"].split(" ")
            cache[id(model)] = (
                model,
                basic_transforms(metadata, float(metadata["r_max"]), types, self._species_map(model)),
            )
        return cache[id(model)][1]

    def predict(self, model, atoms_list, compute_forces: bool):
        from ase import Atoms
        from nequip.data import AtomicDataDict, from_ase

        device = next(model.parameters()).device
        with _default_dtype(torch.float64):  # nequip's global dtype (positions, cells)
            frames = []
            for atoms in atoms_list:
                # a bare copy: no reference labels or calculator results go into the model
                data = from_ase(Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
                for transform in self._transforms(model):
                    data = transform(data)
                frames.append(data)
            batch = AtomicDataDict.to_(AtomicDataDict.batched_from_list(frames), device)
            with torch.enable_grad():  # forces are autograd derivatives inside the model
                out = model(batch)
        energies = out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().to(torch.float64).reshape(-1)
        forces = out[AtomicDataDict.FORCE_KEY].detach().to(torch.float64) if compute_forces else None
        return energies, forces


@hookimpl
def register_adapters(register):
    register(NequIPAdapter)


__all__ = ["NequIPAdapter", "register_adapters"]
