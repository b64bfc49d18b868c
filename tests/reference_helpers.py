"""Helpers shared by the reference-index tests (tests/test_reference_index_*.py): synthetic
structures with element-dependent features, DomainModel's approximate kind chosen, and a store
cut into several."""

import functools

import numpy as np

from probe_base.domain import index_params as ip
from probe_base.store import FeatureSet


def _structures(n, seed, n_features=16, atoms=(6, 12), elements=(1, 6)):
    """Element-dependent features on a few modes per element (as a backbone's cluster)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(*atoms, n)
    z = rng.choice(elements, counts.sum())
    modes = {e: np.random.default_rng(e).normal(size=(8, n_features)) * 3 for e in elements}
    feats = np.stack([modes[e][rng.integers(8)] for e in z]) + rng.normal(size=(len(z), n_features))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return FeatureSet(feats.astype(np.float32), z, offsets, rng.normal(size=n))


def _with_kind(monkeypatch, kind):
    """DomainModel's approximate elements of ``kind`` (its fit asks index_params)."""
    import probe_base.domain.model as domain_module

    monkeypatch.setattr(domain_module, "index_params", functools.partial(ip.index_params, kind=kind))


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
