"""The domain's reference as FAISS indexes (probe_base/domain/reference_index.py), in files: an
approximate domain round-trips through a .probe bit for bit, a damaged or mismatched index in a
.probe is refused, and a .reference built by the CLI from several stores is fitted against, a
damaged one refused in one line naming the fix."""

import json

import numpy as np
import pytest
import torch
from reference_helpers import _split_store, _structures, _with_kind

from probe_base.artifact import load_probe, save_probe
from probe_base.domain import index_params as ip
from probe_base.domain.model import DomainModel
from probe_base.domain.reference_file import BuiltReference
from probe_base.errors import ArtifactError
from probe_base.store import load_store

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def _rewrite(source, target, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(metadata["mlip_probe"])
    # without the whole file's content hash (files written before it had none), so the
    # domain's own per-index check is what refuses the edit
    metadata.pop("mlip_probe_sha256", None)
    edit(tensors, meta)
    metadata["mlip_probe"] = json.dumps(meta)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_a_damaged_or_mismatched_index_in_a_probe_is_refused(fitted_probe, tmp_path):
    artifact = load_probe(fitted_probe)
    key = next(f"domain.index.{z}" for z in artifact.domain.reference_)

    def flip(tensors, meta):
        data = tensors[key].clone()
        data[len(data) // 2] ^= 1
        tensors[key] = data

    with pytest.raises(ArtifactError, match=r"bad\.probe: .*sha256.*re-create it with `probe fit`") as err:
        load_probe(_rewrite(fitted_probe, tmp_path / "bad.probe", flip))
    assert "\n" not in str(err.value)

    other = DomainModel().fit(_structures(100, 0, n_features=artifact.domain.n_features_in_, elements=(29,)))
    data, meta_z = other.reference_[29].state()

    def swap(tensors, meta):  # a valid index of other atoms, its hash updated: sizes disagree
        tensors[key] = torch.from_numpy(data)
        z = key.rsplit(".", 1)[1]
        meta["domain"]["indexes"][z]["sha256"] = meta_z["sha256"]

    with pytest.raises(ArtifactError, match=r"mismatched\.probe: .*holds a IndexFlatL2 of \d+ atoms"):
        load_probe(_rewrite(fitted_probe, tmp_path / "mismatched.probe", swap))


def _tensors_and_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return {key: handle.get_tensor(key).tobytes() for key in handle.keys()}, dict(handle.metadata())


@pytest.mark.parametrize("kind", ["ivfsq", "ivfpq"])  # the new kind; the earlier one (files written before it)
def test_an_approximate_domain_round_trips_through_a_probe_bit_identically(
    fitted_probe, heldout_store, tmp_path, monkeypatch, kind
):
    _with_kind(monkeypatch, kind)
    artifact = load_probe(fitted_probe)
    store = load_store(heldout_store)
    half = np.arange(0, len(store), 2)
    domain = DomainModel(exact_max_atoms=1000).fit(store.subset(half), store.subset(half + 1))
    assert {ix.kind for ix in domain.reference_.values()} == {kind}
    first = tmp_path / "first.probe"
    keep = dict(classifier=artifact.classifier, label=artifact.label, fingerprint=artifact.fingerprint)
    save_probe(first, **keep, info=artifact.info.get("info"), domain=domain)
    loaded = load_probe(first)
    for z, index in domain.reference_.items():
        (a, meta_a), (b, meta_b) = index.state(), loaded.domain.reference_[z].state()
        assert a.tobytes() == b.tobytes() and meta_a == meta_b  # FAISS's bytes and the search settings
    test = store.subset(half + 1)
    np.testing.assert_array_equal(loaded.domain.novelty(test)[0], domain.novelty(test)[0])
    # written again from what was read: the same tensors, byte for byte, and the same content
    # hash over them and the metadata (safetensors may order its header's keys differently)
    second = tmp_path / "second.probe"
    save_probe(second, **keep, info=loaded.info.get("info"), domain=loaded.domain)
    (t1, m1), (t2, m2) = _tensors_and_metadata(first), _tensors_and_metadata(second)
    assert m1 == m2 and sorted(t1) == sorted(t2)
    assert all(t1[name] == t2[name] for name in t1)
    # one flipped byte in the approximate index: refused in one line naming the fix
    key = next(f"domain.index.{z}" for z in domain.reference_)

    def flip(tensors, meta):
        data = tensors[key].clone()
        data[len(data) // 3] ^= 4
        tensors[key] = data

    with pytest.raises(ArtifactError, match=r"bad\.probe: .*sha256.*re-create it with `probe fit`") as err:
        load_probe(_rewrite(first, tmp_path / "bad.probe", flip))
    assert "\n" not in str(err.value)


def test_cli_build_from_several_stores_then_fit_against_it(heldout_store, tmp_path, capsys):
    from probe_base.cli import main

    parts = _split_store(heldout_store, tmp_path, 2)
    out = tmp_path / "train.reference"
    args = ["reference", "build", "--store", *map(str, parts), "--output", str(out), "--no-progress"]
    assert main([*args, "--chunk-atoms", "2000", "--exact-max-atoms", "3000"]) == 0
    assert "ivfsq" in capsys.readouterr().out
    built = BuiltReference.load(out)
    assert {ix.kind for ix in built.indexes.values()} == {"ivfsq"}
    # the streamed build tuned nprobe on its own atoms' exact neighbours (found as they streamed)
    assert all(ix.params["validation_recall"] >= ip.RECALL_TARGET - ip.RECALL_PLATEAU for ix in built.indexes.values())
    probe = tmp_path / "p.probe"
    fit = ["fit", "--store", str(heldout_store), "--output", str(probe), "--reference", str(out), "--epochs", "3"]
    fit += ["--quantile", "0.5"]
    assert main([*fit, "--seeds", "1"]) == 0
    domain = load_probe(probe).domain
    assert {ix.kind for ix in domain.reference_.values()} == {"ivfsq"} and domain.n_calibration_ == 400
    # a damaged .reference: one line naming the fix
    raw = bytearray(out.read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "bad.reference").write_bytes(bytes(raw))
    capsys.readouterr()
    assert main([*fit[:5], "--reference", str(tmp_path / "bad.reference"), *fit[7:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # refused before training: one line
    assert "sha256" in err and "probe reference build" in err
