"""The MyName adapter: which per-atom invariant features PROBE reads, and how the
backbone runs. Fill in every method that raises NotImplementedError
(``probe_base/adapter.py`` is the contract, ``probe_base/toy.py`` a worked example).

Import the framework inside the methods, not at module level: ``probe plugins`` imports
every plugin to list it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from probe_base import Adapter, FeatureLayer, hookimpl


class MyNameAdapter(Adapter):
    """MyName model files; several files form an ensemble, the first is the probed one."""

    name = "myname"  # the --adapter value
    version = "1"  # bump when the features read from a model change
    # Backbone options and their defaults, read as self.parameters["head"]; users set them
    # with MyNameAdapter(paths, head="x") or `probe ... --adapter-option head=x`.
    default_parameters = {}
    # "module:Class" of your framework's own ASE calculator: MyNameCalculator makes one.
    ase_calculator = None

    def load_model(self, path: Path) -> torch.nn.Module:
        # The nn.Module in `path`, on self.device, in eval mode. Raise
        # probe_base.InputError (saying what file is expected) for a wrong file.
        raise NotImplementedError

    def feature_layers(self) -> list[FeatureLayer]:
        # Every readable layer of self.models[0]: FeatureLayer(name, width, description),
        # width = number of invariant (0e) channels per atom. Read the widths from the
        # model (its irreps / config), do not hard-code them.
        raise NotImplementedError

    def layer_module(self, model: torch.nn.Module, layer: str) -> torch.nn.Module:
        # The submodule of `model` whose forward output carries `layer`.
        raise NotImplementedError

    def invariant_features(self, layer: str, output) -> torch.Tensor:
        # From that submodule's forward output: the (n_atoms_in_batch, width) invariant
        # features, atoms in input order (e.g. the leading 0e channels).
        raise NotImplementedError

    def predict(self, model, atoms_list, compute_forces: bool):
        # ONE forward pass of `model` on all of `atoms_list` (a batch), through the
        # framework's own data pipeline. Return (energies (n_structures,) in eV,
        # forces (n_atoms_in_batch, 3) in eV/Å or None).
        raise NotImplementedError

    # ---- optional -----------------------------------------------------------------
    def default_layers(self) -> list[str]:
        # The layer(s) read when the user names none (default: the last declared one).
        return super().default_layers()

    def supported_elements(self) -> set[int] | None:
        # Atomic numbers every model was trained on (None: anything).
        return None

    @classmethod
    def calculator_models(cls, calculator) -> list[torch.nn.Module]:
        # The torch models (primary first) inside an ase_calculator instance.
        return [calculator.model]


@hookimpl
def register_adapters(register):
    register(MyNameAdapter)
