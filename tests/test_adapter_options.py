"""Backbone options (issue 27): declared with defaults in ``default_parameters`` (ASE's
style), set as keywords or ``--adapter-option KEY=VALUE``, refused when unknown, part of the
fingerprint where they differ from the default, and taken from the probe file when a probe
is attached to a calculator."""

import numpy as np
import pytest

from probe_base import toy
from probe_base.artifact import load_probe, save_probe
from probe_base.cli import main
from probe_base.cli.parser import build_parser
from probe_base.errors import FingerprintMismatch, InputError
from probe_base.integrations.calculator import probe_backbone
from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.store import FeatureSet, load_store


class ShiftedToy(toy.ToyAdapter):
    """TinyMLIP whose energies are shifted by an option: an option that changes results."""

    name = "shifted_toy"
    default_parameters = {"energy_shift": 0.0}

    def predict(self, model, atoms_list, compute_forces):
        energies, forces = super().predict(model, atoms_list, compute_forces)
        return energies + self.parameters["energy_shift"], forces


def test_options_have_defaults_change_results_and_unknown_ones_are_refused(toy_files):
    models = toy_files["models"][:1]
    plain, shifted = ShiftedToy(models), ShiftedToy(models, energy_shift=2.5)
    assert plain.parameters == {"energy_shift": 0.0} and plain.fingerprint()["parameters"] == {}
    assert shifted.fingerprint()["parameters"] == {"energy_shift": 2.5}
    frames = toy.emt_clusters(2, seed=3)
    np.testing.assert_allclose(shifted.run(frames).energies, plain.run(frames).energies + 2.5, rtol=1e-6)
    assert ShiftedToy.from_models(shifted.models, energy_shift=2.5).parameters == shifted.parameters
    with pytest.raises(InputError, match=r"unknown adapter option\(s\) head; its options: energy_shift=0.0"):
        ShiftedToy(models, head="omat")
    with pytest.raises(InputError, match="its options: none"):
        toy.ToyAdapter(models, modal="mpa")


def test_adapter_option_parses_json_values_else_text():
    args = build_parser().parse_args(
        ["extract", "--adapter", "a", "--model", "m", "--input", "i", "--output", "o"]
        + ["--adapter-option", "energy_shift=2.5", "--adapter-option", "head=omat"]
        + ["--adapter-option", 'map={"H": "H"}', "--adapter-option", "key=null"]
    )
    assert args.adapter_option == [("energy_shift", 2.5), ("head", "omat"), ("map", {"H": "H"}), ("key", None)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["extract", "--adapter", "a", "--model", "m", "--input", "i", "--output", "o"]
            + ["--adapter-option", "head"]
        )


def test_extract_passes_options_and_refuses_unknown_ones(toy_files, tmp_path, capsys):
    common = ["extract", "--adapter", "test_adapter_options:ShiftedToy", "--model", str(toy_files["models"][0])]
    common += ["--input", str(toy_files["train"]), "--index", ":6"]
    assert main(common + ["--output", str(tmp_path / "plain.h5")]) == 0
    assert main(common + ["--output", str(tmp_path / "shifted.h5"), "--adapter-option", "energy_shift=2.5"]) == 0
    plain, shifted = load_store(tmp_path / "plain.h5"), load_store(tmp_path / "shifted.h5")
    np.testing.assert_allclose(shifted.energy_pred, plain.energy_pred + 2.5, rtol=1e-6)
    capsys.readouterr()
    assert main(common + ["--output", str(tmp_path / "bad.h5"), "--adapter-option", "head=omat"]) != 0
    assert "unknown adapter option(s) head" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()


def test_a_probe_keeps_its_options_and_a_calculator_gets_them(toy_files, tmp_path):
    models = toy_files["models"][:1]
    shifted = ShiftedToy(models, energy_shift=2.5)
    frames = toy.emt_clusters(24, seed=4)
    X = FeatureSet.from_backbone_output(shifted.run(frames, members=False), frames)
    clf = ProbeClassifier(hidden=8, heads=2, max_epochs=2, patience=2, seed=0).fit(X, np.arange(24) % 2)
    path = tmp_path / "shifted.probe"
    save_probe(path, clf, LabelSpec("energy", threshold=0.1), shifted.fingerprint(), {"decision_threshold": 0.5})
    artifact = load_probe(path)
    with pytest.raises(FingerprintMismatch, match="adapter options"):
        artifact.check_backbone(ShiftedToy(models).fingerprint())
    artifact.check_backbone(shifted.fingerprint())
    _, backbone = probe_backbone(artifact, ShiftedToy, shifted.models)  # as attach() does
    assert backbone.parameters == {"energy_shift": 2.5}
