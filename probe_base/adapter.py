"""The adapter contract: how PROBE reads a backbone. A plugin writes ONE subclass.

A subclass fills in five methods (``load_model``, ``feature_layers``, ``layer_module``,
``invariant_features``, ``predict``) and may override ``default_layers`` and
``supported_elements``; its backbone options (a MACE head, a SevenNet modal) are declared
with their defaults in ``default_parameters``, as ASE calculators do, set as keywords
(``MyAdapter(paths, head="omat")``, ``probe ... --adapter-option head=omat``) and read from
``self.parameters``. For ASE calculators it names ``calculator_class`` and, where the
models are not ``calculator.model``, ``models_of_calculator``. The base class does the rest: hooks are registered with
``register_forward_hook`` on the primary model, features are captured during the SAME
forward pass that computes energies and forces, and the hooks are removed afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch

from probe_base.errors import InputError, ProbeError


@dataclass(frozen=True)
class FeatureLayer:
    """One hookable layer with per-atom invariant features of ``width`` channels."""

    name: str
    width: int
    description: str = ""


@dataclass
class BackboneOutput:
    """What one batch through the backbone gives (energies in eV, forces in eV/Å)."""

    energies: np.ndarray  # (n_structures,) primary model, float64
    features: list[np.ndarray]  # per structure (n_atoms, n_features) float32
    forces: list[np.ndarray] | None = None  # per structure (n_atoms, 3)
    member_energies: np.ndarray | None = None  # (n_structures, n_members), primary first
    member_forces: list[np.ndarray] | None = None  # per structure (n_members, n_atoms, 3)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """Digest of a model's parameters and buffers, independent of file format and of
    float32/float64 loading (floating tensors are hashed as float32)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        digest.update(key.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureHooks:
    """Forward hooks on an adapter's selected layers of ``model``: every forward pass fills
    ``captured`` (layer -> (n_atoms, width) tensor, detached) until ``remove()``."""

    def __init__(self, adapter: Adapter, model: torch.nn.Module):
        self.captured: dict[str, torch.Tensor] = {}
        self._handles = []
        try:
            for layer in adapter.layers:
                module = adapter.layer_module(model, layer)

                def hook(_module, _inputs, output, layer=layer):
                    self.captured[layer] = adapter.invariant_features(layer, output).detach()

                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class Adapter:
    """Base class of every backbone adapter.

    ``model_paths``: one model file, or several (an ensemble; the first one is the
    backbone the probe reads, the others only give energies and forces for
    ensemble-disagreement baselines). ``layers``: names from ``feature_layers()``;
    ``None`` takes ``default_layers()``. Other keywords: the options of
    ``default_parameters`` (an unknown one is refused, naming the known ones).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    #: option -> default; what differs from the default is part of the fingerprint
    default_parameters: ClassVar[dict] = {}

    def __init__(self, model_paths, layers: Sequence[str] | None = None, device: str = "cpu", **options):
        self.parameters = self.resolve_parameters(options)
        if isinstance(model_paths, (str, Path)):
            model_paths = [model_paths]
        self.model_paths = [Path(p) for p in model_paths]
        if not self.model_paths:
            raise InputError(f"{self.name}: no model file given; pass at least one model path")
        for path in self.model_paths:
            if not path.exists():
                raise InputError(f"model file {path} does not exist; check the path")
        self.device = torch.device(device)
        models = [self.load_model(path) for path in self.model_paths]
        self._setup(models, layers)

    @classmethod
    def from_models(cls, models: Sequence[torch.nn.Module], layers=None, device="cpu", **options):
        """Wrap models that are already in memory (e.g. those of an ASE calculator)."""
        adapter = cls.__new__(cls)
        adapter.parameters = cls.resolve_parameters(options)
        adapter.model_paths = []
        adapter.device = torch.device(device)
        adapter._setup(list(models), layers)
        return adapter

    @classmethod
    def resolve_parameters(cls, options: dict) -> dict:
        """``default_parameters`` updated with ``options``; an unknown option is refused."""
        unknown = sorted(set(options) - set(cls.default_parameters))
        if unknown:
            known = ", ".join(f"{k}={v!r}" for k, v in cls.default_parameters.items()) or "none"
            raise InputError(f"{cls.name}: unknown adapter option(s) {', '.join(unknown)}; its options: {known}")
        return {**cls.default_parameters, **options}

    def _setup(self, models, layers):
        self.models = models
        for model in self.models:
            model.eval()
        declared = {layer.name: layer for layer in self.feature_layers()}
        chosen = list(layers) if layers else list(self.default_layers())
        unknown = [name for name in chosen if name not in declared]
        if unknown:
            raise InputError(f"{self.name}: unknown feature layer(s) {unknown}; this model has: {', '.join(declared)}")
        self.layers = chosen
        self.widths = [declared[name].width for name in chosen]

    # ---- to implement in a subclass -------------------------------------------------
    def load_model(self, path: Path) -> torch.nn.Module:
        """Load one backbone from its file, on ``self.device``."""
        raise NotImplementedError

    def feature_layers(self) -> list[FeatureLayer]:
        """All layers of ``self.models[0]`` whose per-atom invariant features can be read."""
        raise NotImplementedError

    def layer_module(self, model: torch.nn.Module, layer: str) -> torch.nn.Module:
        """The submodule of ``model`` whose forward output carries ``layer``."""
        raise NotImplementedError

    def invariant_features(self, layer: str, output) -> torch.Tensor:
        """From that submodule's forward output, the (n_atoms_in_batch, width) invariant
        features, atoms in the order of the structures given to ``predict``."""
        raise NotImplementedError

    def predict(self, model, atoms_list, compute_forces: bool):
        """Run ``model`` on a list of ``ase.Atoms`` in ONE forward pass. Returns energies
        (n_structures,) in eV and forces (n_atoms_in_batch, 3) in eV/Å or None."""
        raise NotImplementedError

    # ---- may be overridden --------------------------------------------------------
    def default_layers(self) -> list[str]:
        return [self.feature_layers()[-1].name]

    def supported_elements(self) -> set[int] | None:
        """Atomic numbers the backbone was trained on (None: anything)."""
        return None

    # ---- provided ----------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return int(sum(self.widths))

    def feature_hooks(self, model: torch.nn.Module | None = None) -> FeatureHooks:
        """Hooks on the selected layers of ``model`` (default: the primary) that stay until
        ``remove()``: a calculator keeps them across MD steps instead of adding and removing
        them every step."""
        return FeatureHooks(self, model if model is not None else self.models[0])

    @contextmanager
    def capture(self, model: torch.nn.Module | None = None) -> Iterator[dict]:
        """Hooks on the selected layers for the duration of the block; yields the dict
        that the next forward pass fills with ``layer -> (n_atoms, width)`` tensors."""
        hooks = self.feature_hooks(model)
        try:
            yield hooks.captured
        finally:
            hooks.remove()

    def features_from_capture(self, captured: dict, n_atoms_total: int) -> np.ndarray:
        blocks = []
        for layer, width in zip(self.layers, self.widths):
            if layer not in captured:
                raise ProbeError(f"{self.name}: layer {layer!r} was not reached by the forward pass")
            block = captured[layer]
            if tuple(block.shape) != (n_atoms_total, width):
                raise ProbeError(
                    f"{self.name}: layer {layer!r} gave shape {tuple(block.shape)}, "
                    f"expected ({n_atoms_total}, {width}); the adapter is out of date "
                    "for this model"
                )
            blocks.append(block.to(torch.float32).cpu())
        return (blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)).numpy()

    def known_elements(self) -> set[int] | None:
        """``supported_elements()``, asked once: the models do not change, and reading them
        (e.g. a tensor of atomic numbers) costs more than checking a structure."""
        if not hasattr(self, "_known_elements"):
            self._known_elements = self.supported_elements()
        return self._known_elements

    def check_structures(self, atoms_list, source: str = "<input>", indices=None) -> None:
        """Clear errors for structures no backbone can score."""
        supported = self.known_elements()
        for position, atoms in enumerate(atoms_list):
            index = indices[position] if indices is not None else position
            where = f"{source}, structure {index}"
            if len(atoms) == 0:
                raise InputError(f"{where}: has no atoms; remove it from the input")
            positions = atoms.get_positions()
            if not np.all(np.isfinite(positions)):
                raise InputError(f"{where}: positions contain NaN or inf; fix or drop it")
            if supported is not None:
                unknown = sorted(set(atoms.numbers.tolist()) - set(supported))
                if unknown:
                    from ase.data import chemical_symbols

                    names = ", ".join(chemical_symbols[z] for z in unknown)
                    known = ", ".join(chemical_symbols[z] for z in sorted(supported))
                    raise InputError(
                        f"{where}: element(s) {names} not known to the {self.name} backbone "
                        f"(trained on {known}); drop these structures or use a backbone "
                        "trained on them"
                    )

    def run(
        self, atoms_list, compute_forces: bool = True, members: bool = True, source: str = "<input>", indices=None
    ) -> BackboneOutput:
        """Energies, forces and per-atom features of a batch, from one pass per model."""
        atoms_list = list(atoms_list)
        self.check_structures(atoms_list, source, indices)
        n_atoms = np.array([len(atoms) for atoms in atoms_list])
        splits = np.cumsum(n_atoms)[:-1]
        with self.capture(self.models[0]) as captured:
            energies, forces = self.predict(self.models[0], atoms_list, compute_forces)
        features = self.features_from_capture(captured, int(n_atoms.sum()))
        out = BackboneOutput(
            energies=_numpy(energies).astype(np.float64).reshape(-1),
            features=np.split(features, splits),
            forces=np.split(_numpy(forces), splits) if forces is not None else None,
        )
        if members and len(self.models) > 1:
            member_e, member_f = [out.energies], [_numpy(forces)] if forces is not None else None
            for model in self.models[1:]:
                e, f = self.predict(model, atoms_list, compute_forces)
                member_e.append(_numpy(e).astype(np.float64).reshape(-1))
                if member_f is not None:
                    member_f.append(_numpy(f))
            out.member_energies = np.stack(member_e, axis=1)
            if member_f is not None:
                stacked = np.stack(member_f, axis=0)  # (members, atoms, 3)
                out.member_forces = np.split(stacked, splits, axis=1)
        return out

    def fingerprint(self) -> dict:
        """What a probe must match to be used on this backbone."""
        return {
            "adapter": self.name,
            "adapter_version": self.version,
            "weights_sha256": weights_sha256(self.models[0]),
            "model_files_sha256": [file_sha256(p) for p in self.model_paths],
            "layers": list(self.layers),
            "widths": [int(w) for w in self.widths],
            "parameters": self.changed_parameters(),
        }

    def changed_parameters(self) -> dict:
        """The options that differ from ``default_parameters`` (JSON-able values)."""
        return {k: v for k, v in self.parameters.items() if v != self.default_parameters.get(k)}

    # ---- ASE calculators (optional) ----------------------------------------------
    #: "module:Class" of the framework's own ASE calculator (the plugin's drop-in
    #: calculator makes one of these); None: the adapter has no calculator
    ase_calculator: ClassVar[str | None] = None

    @classmethod
    def calculator_class(cls) -> type | None:
        """The class ``ase_calculator`` names (importing the framework), or None."""
        if cls.ase_calculator is None:
            return None
        module, _, name = cls.ase_calculator.partition(":")
        return getattr(importlib.import_module(module), name)

    @classmethod
    def models_of_calculator(cls, calculator) -> list[torch.nn.Module] | None:
        """The torch models inside an ASE calculator of this framework (primary first), or
        None for any other calculator. ``attach`` asks every installed adapter, so this
        never imports a framework the process has not imported (then the calculator cannot
        be one of its) and never raises."""
        if cls.ase_calculator is None or cls.ase_calculator.partition(":")[0] not in sys.modules:
            return None
        if not isinstance(calculator, cls.calculator_class()):
            return None
        return cls.calculator_models(calculator)

    @classmethod
    def calculator_models(cls, calculator) -> list[torch.nn.Module]:
        """The models of a ``calculator_class()`` instance, primary first (override where
        they are not ``calculator.model``)."""
        return [calculator.model]

    @classmethod
    def example_models(cls, train_file: Path, workdir: Path, n_members: int, retrain=False) -> list[Path]:
        """Model files of a small ensemble for ``probe demo``, trained on ``train_file``
        (EMT-labelled copper clusters). Optional: adapters without it have no demo."""
        raise ProbeError(f"the {cls.name} adapter has no built-in demo example")

    def primary_energy(self, results: dict) -> float:
        """The primary model's energy from a calculator's ``results`` (override when a
        committee calculator reports the committee mean as ``energy``)."""
        return float(results["energy"])


def _numpy(tensor) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().numpy()
    return np.asarray(tensor)
