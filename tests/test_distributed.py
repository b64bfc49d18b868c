"""torchrun: sharded extraction and DDP fitting with 2 CPU processes (gloo, loopback)."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy.stats import spearmanr

from probe_base import distributed
from probe_base.errors import StoreError
from probe_base.net.classifier import ProbeClassifier
from probe_base.net.inputs import normalisation, streamed_normalisation
from probe_base.store import _content_sha256, _identity, load_store
from probe_base.workflow.evaluate import evaluate_probe

N = 240  # structures of the toy held-out set used here


def _torchrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "probe_base.cli",
        *map(str, args),
    ]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


FIELDS = [
    "features",
    "atomic_numbers",
    "offsets",
    "energy_pred",
    "energy_ref",
    "force_rmse",
    "force_max_error",
    "atom_force_error",
    "source_index",
    "member_energies",
    "member_force_std",
]


def test_torchrun_extract_and_fit_match_one_process(toy_files, toy_adapter, heldout_store, tmp_path):
    models = [str(p) for p in toy_files["models"]]
    store = tmp_path / "ddp.h5"
    # a subprocess: the adapter by import path (conftest's registration of "toy" is not there)
    out = _torchrun(
        "extract",
        "--adapter",
        "probe_base.toy:ToyAdapter",
        "--model",
        *models,
        "--input",
        toy_files["heldout"],
        "--output",
        store,
        "--index",
        f":{N}",
        "--batch-size",
        "16",
        cwd=tmp_path,
    )
    assert "2 ranks" in out
    assert sorted(p.name for p in (tmp_path / "ddp.h5.shards").iterdir()) == ["0-of-2.h5", "1-of-2.h5"]
    merged = load_store(store)
    single = load_store(heldout_store).subset(np.arange(N))  # one process, whole file
    for name in FIELDS:
        np.testing.assert_allclose(getattr(merged, name), getattr(single, name), atol=2e-5, err_msg=name)
    np.testing.assert_array_equal(merged.source_index, np.arange(N))
    identity = dict(merged.attrs)
    content = identity.pop("content_sha256")
    assert identity == _identity(toy_adapter, toy_files["heldout"], f":{N}", None, None, True, "float32"), (
        "the identity of a one-process extraction of the same frames"
    )
    with h5py.File(heldout_store) as h5:
        assert content == _content_sha256(h5["frame_digest"][:N]), "the same frames' content hash"

    # fit: DDP over the 2 ranks vs one process, both reading the merged store
    options = ["--eval-fraction", "0.5", "--epochs", "15", "--seed", "3", "--quantile", "0.5", "--false-alarm", "0.2"]
    _torchrun("fit", "--store", store, "--output", tmp_path / "ddp.probe", *options, cwd=tmp_path)
    from probe_base.cli import main

    assert main(["fit", "--store", str(store), "--output", str(tmp_path / "one.probe"), *options]) == 0
    ddp = evaluate_probe(tmp_path / "ddp.probe", store, n_bootstrap=20)
    one = evaluate_probe(tmp_path / "one.probe", store, n_bootstrap=20)
    assert ddp["n_structures"] == one["n_structures"] == N // 2, "the same held-out half"
    auroc_ddp, auroc_one = ddp["metrics"]["PROBE"]["auroc"], one["metrics"]["PROBE"]["auroc"]
    assert auroc_one[0] > 0.7
    assert abs(auroc_ddp[0] - auroc_one[0]) < 0.06, (auroc_ddp, auroc_one)
    p_ddp, p_one = ddp["arrays"]["p_reliable"], one["arrays"]["p_reliable"]
    assert spearmanr(p_ddp, p_one).statistic > 0.85
    from probe_base.artifact import load_probe

    a, b = load_probe(tmp_path / "ddp.probe"), load_probe(tmp_path / "one.probe")
    assert a.info.keys() == b.info.keys() and a.info["params"] == b.info["params"]
    assert a.info["info"]["fit_indices"] == b.info["info"]["fit_indices"]
    assert [s.keys() for s in a.classifier.members_] == [s.keys() for s in b.classifier.members_]


class FakeGroup(distributed.Group):
    """One rank of a 2-rank job, run in this process (collectives are not needed: the test
    runs the ranks one after another)."""

    def __init__(self, rank, selection):
        super().__init__(rank, 2, "cpu")
        self.selection = selection

    def barrier(self):
        pass

    def broadcast(self, value):
        return self.selection


class Interrupt(Exception):
    pass


def test_killed_rank_resumes_its_shard_only(toy_adapter, toy_files, heldout_store, tmp_path, monkeypatch):
    store = tmp_path / "s.h5"
    selection = distributed._selection(toy_files["heldout"], ":60")
    assert selection == (0, 1, 60)
    original = type(toy_adapter).run
    calls = []

    def recording_run(self, atoms_list, **kw):
        calls.append(kw["indices"][0])
        if len(calls) == 3 and die:
            raise Interrupt()
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", recording_run)
    options = dict(index=":60", batch_size=5, chunk_structures=10, progress=False)
    die = True
    with pytest.raises(Interrupt):  # rank 1 (structures 30..59) dies in its third batch
        distributed.extract_sharded(toy_adapter, toy_files["heldout"], store, FakeGroup(1, selection), **options)
    assert calls == [30, 35, 40] and not store.exists()
    calls.clear()
    die = False
    distributed.extract_sharded(toy_adapter, toy_files["heldout"], store, FakeGroup(1, selection), **options)
    assert calls == [40, 45, 50, 55], "rank 1 resumes after its last flushed chunk"
    calls.clear()
    distributed.extract_sharded(toy_adapter, toy_files["heldout"], store, FakeGroup(0, selection), **options)
    assert calls == [0, 5, 10, 15, 20, 25]
    merged, single = load_store(store), load_store(heldout_store).subset(np.arange(60))
    np.testing.assert_allclose(merged.features, single.features, atol=2e-5)
    np.testing.assert_array_equal(merged.source_index, np.arange(60))

    # a finished store is not recomputed; a rerun after losing only the index rebuilds it
    calls.clear()
    store.unlink()
    distributed.extract_sharded(toy_adapter, toy_files["heldout"], store, FakeGroup(0, selection), **options)
    assert calls == [] and len(load_store(store)) == 60

    # a store whose shard is gone is refused, not read as zeros
    (tmp_path / "s.h5.shards" / "1-of-2.h5").rename(tmp_path / "elsewhere.h5")
    with pytest.raises(StoreError, match="shard .* is missing"):
        load_store(store)


def test_index_must_be_a_forward_slice(toy_files):
    from probe_base.errors import InputError

    assert distributed._selection(toy_files["heldout"], "10:100:3") == (10, 3, 30)
    for index in ("5", "::-1"):
        with pytest.raises(InputError, match="forward slice"):
            distributed._selection(toy_files["heldout"], index)


def test_streamed_store_view_fits_like_memory(heldout_store):
    """What each rank trains on (features read from disk per batch) gives the in-memory
    batches, normalisation and, in one process, the same probe."""
    data, view = load_store(heldout_store), load_store(heldout_store, lazy=True)
    assert view.features is None
    idx = np.array([7, 3, 4, 5, 199, 0])
    (f, z, mask), (f_view, z_view, mask_view) = (d.subset(np.arange(100, 300)).padded(idx) for d in (data, view))
    np.testing.assert_array_equal(mask, mask_view)
    np.testing.assert_array_equal(z, z_view)
    np.testing.assert_array_equal(f[mask], f_view[mask])  # padding is masked out: any value
    extras = np.stack([data.energy_pred / data.n_atoms, np.log(data.n_atoms)], axis=1)
    for per_element in (False, True):
        memory = normalisation(data.features, data.atomic_numbers, extras, per_element)
        _, _, streamed = streamed_normalisation(view, extras, per_element, distributed.LOCAL)
        for key in memory:
            np.testing.assert_allclose(memory[key].numpy(), streamed[key].numpy(), rtol=1e-4, atol=1e-5)
    y = (data.energy_pred - data.energy_ref < np.median(data.energy_pred - data.energy_ref)).astype(int)
    params = dict(max_epochs=4, cv_folds=2, seed=1)
    p_memory = ProbeClassifier(**params).fit(data, y).predict_proba(data)[:, 1]
    p_view = ProbeClassifier(**params).fit(view, y).predict_proba(data)[:, 1]
    np.testing.assert_allclose(p_memory, p_view, atol=1e-3)
