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

    # ---- the ASE calculator (calculator.py's MyNameCalculator wraps it) -------------
    @classmethod
    def calculator_class(cls):
        # Your framework's own ASE calculator class, imported here (not at module level).
        # MyNameCalculator(...) makes one from the user's arguments.
        raise NotImplementedError

    @classmethod
    def models_of_calculator(cls, calculator):
        # The torch models (primary first) inside a calculator_class() instance, e.g.
        # [calculator.model], or None for any other calculator: probe_base.attach asks
        # every installed adapter, so this must not raise.
        return None

    # ---- optional -----------------------------------------------------------------
    def default_layers(self) -> list[str]:
        # The layer(s) read when the user names none (default: the last declared one).
        return super().default_layers()

    def supported_elements(self) -> set[int] | None:
        # Atomic numbers every model was trained on (None: anything).
        return None


@hookimpl
def register_adapters(register):
    register(MyNameAdapter)
