"""Issue 29: damaged files fail closed. A .probe with a NaN weight or changed bytes is refused at
load by every entry point, a non-finite score is unreliable everywhere, absurd feature values are
refused by fit and evaluate, fit never writes a probe its loader rejects, and bytes flipped at
random in a .probe or a store are refused in one line or change nothing."""

import warnings

import ase.io
import h5py
import numpy as np
import pytest
from safety_helpers import predict, rewrite_probe, run_cli

from probe_base import attach
from probe_base.artifact import load_probe
from probe_base.errors import ArtifactError, StoreError, UnreliablePrediction
from probe_base.integrations.watchdog import ReliabilityWatchdog
from probe_base.scoring import score
from probe_base.store import load_store
from probe_base.toy import ToyCalculator


def nan_in(name):
    def edit(tensors):
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")

    return edit


def first_weight(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return next(k for k in handle.keys() if k.startswith("member4.") and "weight" in k)


# ---- 1. a damaged .probe fails closed ------------------------------------------------------
def test_nan_weight_is_refused_at_load_by_every_entry_point(fitted_probe, toy_files, tmp_path, capsys):
    bad = rewrite_probe(fitted_probe, tmp_path / "bad.probe", edit_tensors=nan_in(first_weight(fitted_probe)))
    with pytest.raises(ArtifactError, match=r"bad.probe: the file is damaged \(NaN or inf in 'member4\..*re-create"):
        load_probe(bad)
    with pytest.raises(ArtifactError, match="damaged"):
        attach(ToyCalculator(toy_files["models"][0]), bad, policy="raise")
    code, error = predict(capsys, toy_files, bad, toy_files["heldout"], tmp_path / "out.xyz", "--index", ":3")
    assert code == 2 and "damaged" in error and not (tmp_path / "out.xyz").exists()


def test_bytes_changed_after_writing_are_refused_by_the_content_hash(fitted_probe, tmp_path):
    data = bytearray(fitted_probe.read_bytes())
    data[-100] ^= 0x01  # one bit of the last tensor: still finite, silently another probe without the hash
    bad = tmp_path / "flipped.probe"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="content hash does not match"):
        load_probe(bad)


def test_a_non_finite_score_is_unreliable_everywhere(fitted_probe, heldout_store, toy_files, monkeypatch):
    """Damage the scorer itself (NaN out of the network): every consumer flags, none trusts."""
    artifact = load_probe(fitted_probe)
    data = load_store(heldout_store).subset(np.arange(5))
    clean = score(artifact, data)
    monkeypatch.setattr(
        type(artifact.classifier),
        "predict_with_importance",
        lambda self, X: (np.full(len(X), np.nan), clean.importance),
    )
    scores = score(artifact, data)
    assert np.all(scores.p_reliable == 0.0) and artifact.decision.flags(scores.p_reliable, scores.in_domain).all()
    assert artifact.decision.unreliable(float("nan"), True)
    # the calculator and the watchdog see NaN from the network: raise / count it
    atoms = ase.io.read(toy_files["heldout"], 0)
    calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="raise")
    monkeypatch.setattr(calc._scorer, "_direct", False)  # through score(), which the patch reaches
    atoms.calc = calc
    with pytest.raises(UnreliablePrediction):
        atoms.get_potential_energy()
    atoms.calc = attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")
    monkeypatch.setattr(atoms.calc._scorer, "_direct", False)
    watchdog = ReliabilityWatchdog(atoms, patience=1, action="warn")
    atoms.get_potential_energy()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        watchdog()
    assert watchdog.records[-1].unreliable and any("unreliable" in str(w.message).lower() for w in seen)
    assert atoms.calc.results["unreliable"] is True


# ---- 2. absurd feature values are refused ---------------------------------------------------
def overwrite_features(path, value, atom=7):
    with h5py.File(path, "r+") as h5:  # through HDF5: checksums stay valid, the numbers are absurd
        h5["features"][atom, :] = value


def test_absurd_features_are_refused_by_fit_and_evaluate(heldout_store, fitted_probe, tmp_path, capsys):
    store = tmp_path / "absurd.h5"
    store.write_bytes(heldout_store.read_bytes())
    overwrite_features(store, 2.5e37)
    code, error = run_cli(capsys, "fit", "--store", store, "--output", tmp_path / "a.probe", "--quantile", "0.5")
    assert code == 2 and "structure 0 (input frame 0)" in error and "above 1e+06" in error
    assert "probe extract --overwrite" in error and not (tmp_path / "a.probe").exists()
    code, error = run_cli(
        capsys, "evaluate", "--probe", fitted_probe, "--store", store, "--output-dir", tmp_path / "report"
    )
    assert code == 2 and "per-atom features with a value of magnitude 2.5e+37" in error


def test_fit_never_writes_a_probe_its_loader_rejects(heldout_store, tmp_path, monkeypatch):
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.workflow.fit import fit_probe

    original = ProbeClassifier.state_dict

    def diverged(self):
        state = original(self)
        state["pool_std"] = state["pool_std"] * np.inf
        return state

    monkeypatch.setattr(ProbeClassifier, "state_dict", diverged)
    with pytest.raises(ArtifactError, match="not written: the fitted probe holds NaN or inf in 'pool_std'"):
        fit_probe(heldout_store, tmp_path / "x.probe", LabelSpec(quantile=0.5), ProbeClassifier(max_epochs=2))
    assert not (tmp_path / "x.probe").exists()


# ---- fuzz: flipped bytes are refused or change nothing ---------------------------------------
def test_flipped_bytes_in_a_probe_are_refused_or_change_nothing(fitted_probe, heldout_store, tmp_path):
    data = load_store(heldout_store).subset(np.arange(6))
    reference = score(load_probe(fitted_probe), data).p_reliable
    original = fitted_probe.read_bytes()
    rng = np.random.default_rng(29)
    refused = 0
    for trial in range(150):
        damaged = bytearray(original)
        for position in rng.integers(0, len(original), rng.integers(1, 4)):
            damaged[position] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz{trial % 2}.probe"
        path.write_bytes(bytes(damaged))
        try:
            artifact = load_probe(path)
        except ArtifactError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            refused += 1
            continue
        np.testing.assert_array_equal(score(artifact, data).p_reliable, reference)
    assert refused >= 140  # nearly every byte of a .probe matters


def test_flipped_bytes_in_a_store_are_refused_or_change_nothing(heldout_store, tmp_path):
    from probe_base.store import check_store_values

    clean = load_store(heldout_store)
    original = heldout_store.read_bytes()
    rng = np.random.default_rng(29)
    refused = 0
    for trial in range(100):
        damaged = bytearray(original)
        position = int(rng.integers(0, len(original)))
        damaged[position] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz{trial % 2}.h5"
        path.write_bytes(bytes(damaged))
        try:
            data = load_store(path)
            check_store_values(data, path)
        except StoreError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        for name in ("features", "atomic_numbers", "offsets", "energy_pred", "energy_ref", "force_rmse"):
            np.testing.assert_array_equal(getattr(data, name), getattr(clean, name), err_msg=f"byte {position}")
        assert data.attrs == clean.attrs
    assert refused > 0
