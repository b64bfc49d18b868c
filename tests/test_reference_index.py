"""The domain's reference as FAISS indexes (probe_base/domain/reference_index.py): the approximate
index agrees with the exact one, a build streamed from several stores equals one from
their concatenation, a damaged index is refused, and a build holds one chunk at a time."""

import functools
import json
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch

from probe_base.artifact import load_probe, save_probe
from probe_base.domain import index_params as ip
from probe_base.domain import reference_build as rb
from probe_base.domain import reference_index as ri
from probe_base.domain.index_params import ReferenceError
from probe_base.domain.model import DomainModel
from probe_base.domain.reference_build import build_reference
from probe_base.domain.reference_file import BuiltReference
from probe_base.domain.reference_sources import ArraySource, StoreSource
from probe_base.errors import ArtifactError
from probe_base.store import FeatureSet, load_store

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def _structures(n, seed, n_features=16, atoms=(6, 12), elements=(1, 6)):
    """Element-dependent features on a few modes per element (as a backbone's cluster)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(*atoms, n)
    z = rng.choice(elements, counts.sum())
    modes = {e: np.random.default_rng(e).normal(size=(8, n_features)) * 3 for e in elements}
    feats = np.stack([modes[e][rng.integers(8)] for e in z]) + rng.normal(size=(len(z), n_features))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return FeatureSet(feats.astype(np.float32), z, offsets, rng.normal(size=n))


def test_index_kind_is_chosen_by_size():
    assert ip.index_params(50_000, 64) == {"kind": "flat"}
    big = ip.index_params(10**7, 64)
    assert big["kind"] == "ivfsq" and big["nlist"] == 8192 and big["hnsw_quantizer"] and big["nprobe"] is None
    assert ip.bytes_per_atom(big, 64) == 72 and ip.bytes_per_atom({"kind": "flat"}, 64) == 256
    pq = ip.index_params(10**7, 64, kind="ivfpq")  # the earlier kind, on request
    assert pq["kind"] == "ivfpq" and pq["m"] == 32 and pq["nlist"] == 8192 and pq["nprobe"] == 16
    assert ip.bytes_per_atom(pq, 64) == 40
    assert ip.index_params(10**5, 6, kind="ivfpq")["m"] == 3  # a divisor of the width
    assert ip.index_params(10**5, 64, nprobe=3)["nprobe"] == 3  # given: not tuned
    with pytest.raises(ReferenceError, match="unknown approximate index kind"):
        ip.index_params(10**5, 64, kind="hnsw")


def _with_kind(monkeypatch, kind):
    """DomainModel's approximate elements of ``kind`` (its fit asks index_params)."""
    import probe_base.domain.model as domain_module

    monkeypatch.setattr(domain_module, "index_params", functools.partial(ip.index_params, kind=kind))


# Tolerances (3000 reference structures, ~12.9k atoms per element, 256 cells): recall@5 of the
# approximate index against brute force on held-out atoms, the median relative change of the
# per-atom novelty, the threshold's relative change, the share of test structures flagged alike.
TOLERANCE = {
    "ivfsq": {"recall": 0.85, "novelty": 0.01, "threshold": 0.03, "agree": 0.98},
    "ivfpq": {"recall": 0.6, "novelty": 0.03, "threshold": 0.05, "agree": 0.97},
}


@pytest.mark.parametrize("kind", ["ivfsq", "ivfpq"])
def test_approximate_and_exact_agree_on_small_references(monkeypatch, kind):
    _with_kind(monkeypatch, kind)
    tol = TOLERANCE[kind]
    reference, calibration, test = _structures(3000, 0), _structures(400, 1), _structures(400, 2)
    exact = DomainModel().fit(reference, calibration)
    approx = DomainModel(exact_max_atoms=2000, nprobe=None if kind == "ivfsq" else 16).fit(reference, calibration)
    assert {ix.kind for ix in exact.reference_.values()} == {"flat"}
    assert {ix.kind for ix in approx.reference_.values()} == {kind}
    # recall@5 of the approximate index against brute force, per element, on held-out atoms
    for z, index in approx.reference_.items():
        if kind == "ivfsq":  # nprobe tuned on the reference's own atoms (itself excluded)
            assert index.params["nprobe"] in ip.NPROBE_LADDER
            assert index.params["validation_recall"] >= min(
                ip.RECALL_TARGET, index.params["validation_recall_best"] - ip.RECALL_PLATEAU
            )
        points = exact.reference_[z].points
        queries = exact._standardise(test.features[test.atomic_numbers == z])
        truth = np.argsort(((queries[:, None] - points[None]) ** 2).sum(-1), axis=1)[:, :5]
        found = index.index.search(queries, 5)[1]
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(truth, found)])
        assert recall > tol["recall"], recall
    s_exact, a_exact = exact.novelty(test)
    s_approx, a_approx = approx.novelty(test)
    raw_exact = np.concatenate(a_exact) * exact.threshold_
    raw_approx = np.concatenate(a_approx) * approx.threshold_
    assert np.median(np.abs(raw_approx / raw_exact - 1)) < tol["novelty"]
    assert abs(approx.threshold_ / exact.threshold_ - 1) < tol["threshold"]
    assert (exact.in_domain(test) == approx.in_domain(test)).mean() > tol["agree"]
    # an odd atom is caught by both
    odd = test.features.copy()
    odd[test.offsets[:-1]] += 8.0
    far = replace(test, features=odd)
    assert not exact.in_domain(far).any() and not approx.in_domain(far).any()
    # round trip through the state: the same numbers
    again = DomainModel.from_state(*approx.state_dict())
    np.testing.assert_allclose(again.novelty(test)[0], s_approx, rtol=1e-6)
    assert again.reference_[1].kind == kind and again.reference_[1].params == approx.reference_[1].params


def test_the_tuned_nprobe_is_the_fewest_cells_reaching_the_recall_target():
    reference = _structures(3000, 0, elements=(1,))
    points = ((reference.features - reference.features.mean(0)) / reference.features.std(0)).astype(np.float32)
    index = ri.ElementIndex.build(points, ip.index_params(len(points), 16, exact_max_atoms=1000))
    chosen = index.params["nprobe"]
    rows = np.sort(np.random.default_rng([0, 3]).choice(len(points), ip.VALIDATION_ATOMS, replace=False))
    truth = ip.ExactTruth(points[rows], rows, 5)
    truth.offer(points[:1000])  # streamed in two parts: the same neighbours as at once
    truth.offer(points[1000:])
    whole = faiss.knn(points[rows], points, 6)[1]
    assert (truth.labels == whole).mean() > 0.99  # ties may order differently
    recall = {}
    for nprobe in [p for p in ip.NPROBE_LADDER if p <= index.params["nlist"]]:
        index.params["nprobe"] = nprobe
        index._set_search_parameters()
        found = index.index.search(points[rows], 6)[1]
        recall[nprobe] = ip.recall_excluding_self(found, truth.labels, rows, 5)
    best = max(recall.values())
    reach = ip.RECALL_TARGET if best >= ip.RECALL_TARGET else best - ip.RECALL_PLATEAU
    assert recall[chosen] >= reach and index.params["validation_recall"] == pytest.approx(recall[chosen])
    assert all(r < reach for p, r in recall.items() if p < chosen)


def test_streamed_build_equals_the_in_memory_fit():
    reference, calibration, test = _structures(600, 0), _structures(200, 1), _structures(100, 2)
    in_memory = DomainModel().fit(reference, calibration)
    built = build_reference(ArraySource(reference, chunk_atoms=777), progress=False)
    streamed = DomainModel().fit(built, calibration)
    np.testing.assert_allclose(streamed.mean_, in_memory.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(streamed.novelty(test)[0], in_memory.novelty(test)[0], rtol=1e-4)
    for z in in_memory.scale_:
        assert streamed.scale_[z] == pytest.approx(in_memory.scale_[z], rel=1e-4)


def _split_store(store, tmp_path, parts):
    """The store's structures cut into ``parts`` stores (the same datasets and attributes)."""
    import h5py

    with h5py.File(store, "r") as h5:
        offsets = np.concatenate([[0], np.cumsum(h5["n_atoms"][:])])
        n = len(offsets) - 1
        cuts = np.linspace(0, n, parts + 1).astype(int)
        per_atom = {k for k in h5 if h5[k].shape[:1] == (offsets[-1],) and offsets[-1] != n}
        paths = []
        for i in range(parts):
            path = tmp_path / f"part{i}.h5"
            a, b = cuts[i], cuts[i + 1]
            with h5py.File(path, "w") as out:
                for key in h5:
                    data = h5[key]
                    if key in per_atom:
                        out[key] = data[offsets[a] : offsets[b]]
                    elif data.shape[:1] == (n,):
                        out[key] = data[a:b]
                    else:
                        out[key] = data[()]
                for key, value in h5.attrs.items():
                    out.attrs[key] = value
                if "n_done" in out.attrs:
                    out.attrs["n_done"] = b - a
            paths.append(path)
    return paths


@pytest.mark.parametrize("exact_max_atoms", [10**9, 2000])  # exact; IVF-PQ
def test_a_reference_built_from_several_stores_equals_one_built_at_once(heldout_store, tmp_path, exact_max_atoms):
    parts = _split_store(heldout_store, tmp_path, 3)
    assert sum(len(load_store(p)) for p in parts) == len(load_store(heldout_store))
    kwargs = dict(exact_max_atoms=exact_max_atoms, progress=False)
    several = build_reference(StoreSource(parts, chunk_atoms=1000), **kwargs)
    one = build_reference(StoreSource([heldout_store], chunk_atoms=4096), **kwargs)
    assert several.summary() == one.summary()
    # the store `probe extract` writes under torchrun: virtual datasets over the ranks' shards
    import json

    import h5py

    from probe_base.store import write_virtual_store

    with h5py.File(heldout_store, "r") as h5:
        identity = json.loads(h5.attrs["identity"])
    sharded = write_virtual_store(tmp_path / "sharded.h5", parts, identity)
    from_shards = build_reference(StoreSource([sharded], chunk_atoms=1000), **kwargs)
    assert from_shards.summary() == one.summary() and from_shards.ranges == one.ranges
    np.testing.assert_allclose(from_shards.mean_, one.mean_, rtol=1e-6)
    np.testing.assert_allclose(several.mean_, one.mean_, rtol=1e-6)
    np.testing.assert_allclose(several.std_, one.std_, rtol=1e-6)
    assert several.ranges == one.ranges
    calibration = load_store(heldout_store).subset(range(0, 400, 2))
    a, b = DomainModel().fit(several, calibration), DomainModel().fit(one, calibration)
    np.testing.assert_allclose(a.novelty(calibration)[0], b.novelty(calibration)[0], rtol=1e-5)
    assert a.threshold_ == pytest.approx(b.threshold_, rel=1e-5)


def _tiled_store(store, path, times, seed=0):
    """The store's structures ``times`` over, features jittered: a larger store to stream."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(store, "r") as h5, h5py.File(path, "w") as out:
        n_atoms = h5["n_atoms"][:]
        total, n = int(n_atoms.sum()), len(n_atoms)
        for key in h5:
            data = h5[key][()]
            if data.shape[:1] == (total,):
                data = np.concatenate([data] * times)
                if key == "features":
                    data = data + rng.normal(0, 0.05, data.shape).astype(data.dtype)
            elif data.shape[:1] == (n,):
                data = np.concatenate([data] * times)
            out[key] = data
        for key, value in h5.attrs.items():
            out.attrs[key] = value
        if "n_done" in out.attrs:
            out.attrs["n_done"] = n * times
    return path


def test_building_reads_one_chunk_at_a_time_and_holds_no_whole_reference(heldout_store, tmp_path, monkeypatch):
    """A small chunk size bounds every read, and the build's Python-side peak stays far
    below the reference's features (IVF-PQ codes live in FAISS)."""
    monkeypatch.setattr(rb, "SCALE_SAMPLE", 500)  # the build's samples
    monkeypatch.setattr(ip, "TRAIN_MAX", 2000)  # read by training_size ...
    monkeypatch.setattr(ri, "TRAIN_MAX", 2000)  # ... and by ElementIndex.trained
    source = StoreSource([_tiled_store(heldout_store, tmp_path / "big.h5", 12)], chunk_atoms=1000)
    full_bytes = source.n_atoms * source.n_features * 4
    build_reference(ArraySource(_structures(300, 0, n_features=64)), exact_max_atoms=1000, progress=False)  # imports
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        built = build_reference(source, exact_max_atoms=1000, progress=False)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert 0 < source.max_rows_read <= 1000
    assert peak < 0.25 * full_bytes, (peak, full_bytes)
    assert sum(len(ix) for ix in built.indexes.values()) == source.n_atoms


def test_a_memory_budget_keeps_a_stratified_coreset():
    reference = _structures(3000, 0, elements=(1,))
    rare = reference.features.copy()
    rare[:40] += 12.0  # a sparse corner of the domain: its own cell, kept whole
    reference = replace(reference, features=rare)
    full = build_reference(ArraySource(reference), exact_max_atoms=10**9, progress=False)
    half = int(0.3 * full.indexes[1].nbytes())
    thin = build_reference(ArraySource(reference), exact_max_atoms=10**9, memory_budget=half, progress=False)
    kept = thin.indexes[1]
    assert abs(len(kept) / (0.3 * len(full.indexes[1])) - 1) < 0.15
    standardised = (rare[:40] - thin.mean_) / thin.std_
    nearest = kept.mean_distance(standardised, 1)
    # the rare atoms (their own cells) are kept at well above the overall 30 % (float32
    # rounding of the distance expansion: ~0.01 for an atom that is itself in the index)
    assert np.mean(nearest < 0.05) > 0.7
    with pytest.raises(ReferenceError, match="raise --memory-budget"):
        build_reference(ArraySource(reference), memory_budget=10, progress=False)


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
