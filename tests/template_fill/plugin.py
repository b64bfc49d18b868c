"""What a third party writes into the rendered template's ``probe_foo/plugin.py``: a
minimal real adapter, here over the core's TinyMLIP (``probe_base/toy.py``) and its ASE
calculator (``ToyCalculator``, which ``FooCalculator`` wraps), so that ``nox -s template``
can render the template the way its README says and run its tests."""

from __future__ import annotations

from pathlib import Path

import torch

from probe_base import Adapter, FeatureLayer, hookimpl


class FooAdapter(Adapter):
    """TinyMLIP model files; several files form an ensemble, the first is the probed one."""

    name = "foo"
    version = "1"

    def load_model(self, path: Path) -> torch.nn.Module:
        from probe_base.toy import load_model

        return load_model(path).to(self.device).eval()

    def feature_layers(self) -> list[FeatureLayer]:
        config = self.models[0].config
        return [
            FeatureLayer(f"interactions.{i}", config["hidden"], "after interaction block")
            for i in range(config["n_interactions"])
        ]

    def layer_module(self, model: torch.nn.Module, layer: str) -> torch.nn.Module:
        return model.get_submodule(layer)

    def invariant_features(self, layer: str, output) -> torch.Tensor:
        return output

    def predict(self, model, atoms_list, compute_forces: bool):
        from probe_base.toy import energies_and_forces

        return energies_and_forces(model, atoms_list, compute_forces)

    def supported_elements(self) -> set[int] | None:
        from probe_base.toy import ELEMENTS

        return set(ELEMENTS)

    @classmethod
    def calculator_class(cls):
        from probe_base.toy import ToyCalculator

        return ToyCalculator

    @classmethod
    def models_of_calculator(cls, calculator):
        return [calculator.model] if isinstance(calculator, cls.calculator_class()) else None


@hookimpl
def register_adapters(register):
    register(FooAdapter)
