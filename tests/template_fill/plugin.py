"""A minimal real adapter, what a third party writes into the rendered template's
``probe_foo/plugin.py``: TinyMLIP (``probe_base/toy.py``) and its ASE calculator, for
``nox -s template``. With the template's ``calculator.py``: the whole plugin."""

from __future__ import annotations

from probe_base import Adapter, FeatureLayer, hookimpl, toy


class FooAdapter(Adapter):
    """TinyMLIP model files; several files form an ensemble, the first is the probed one."""

    name = "foo"
    version = "1"
    ase_calculator = "probe_base.toy:ToyCalculator"

    def load_model(self, path):
        return toy.load_model(path).to(self.device).eval()

    def feature_layers(self):
        config = self.models[0].config
        return [FeatureLayer(f"interactions.{i}", config["hidden"]) for i in range(config["n_interactions"])]

    def layer_module(self, model, layer):
        return model.get_submodule(layer)

    def invariant_features(self, layer, output):
        return output

    def predict(self, model, atoms_list, compute_forces):
        return toy.energies_and_forces(model, atoms_list, compute_forces)

    def supported_elements(self):
        return set(toy.ELEMENTS)


@hookimpl
def register_adapters(register):
    register(FooAdapter)
