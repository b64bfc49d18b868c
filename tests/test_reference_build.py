"""A reference build interrupted in its last pass resumes from its checkpoint and gives the
same reference, bit for bit, as one uninterrupted build (probe_base/domain/reference_build.py,
its checkpoint: build_checkpoint.py); a checkpoint of other options or a damaged one is refused
with a one-line error."""

import numpy as np
import pytest

from probe_base.domain import reference_sources as rs
from probe_base.domain.index_params import ReferenceError
from probe_base.domain.reference_build import build_reference
from probe_base.domain.reference_sources import ArraySource, StoreSource
from probe_base.store import FeatureSet

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def _structures(n, seed, n_features=16):
    rng = np.random.default_rng(seed)
    counts = rng.integers(6, 12, n)
    z = rng.choice([1, 6, 8], counts.sum(), p=[0.5, 0.4, 0.1])
    modes = {e: np.random.default_rng(e).normal(size=(8, n_features)) * 3 for e in (1, 6, 8)}
    feats = np.stack([modes[e][rng.integers(8)] for e in z]) + rng.normal(size=(len(z), n_features))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return FeatureSet(feats.astype(np.float32), z, offsets, rng.normal(size=n))


class Interrupted(ArraySource):
    """Ctrl-C after ``after`` chunks of the last pass (the third time chunks are read)."""

    def __init__(self, data, chunk_atoms, after):
        super().__init__(data, chunk_atoms)
        self.after, self.reads = after, 0

    def chunks(self, features=True, skip=0):
        self.reads += 1
        for i, chunk in enumerate(super().chunks(features, skip)):
            if self.reads == 3 and i == self.after:
                raise KeyboardInterrupt
            yield chunk


def _same(a, b):
    assert np.array_equal(a.mean_, b.mean_) and np.array_equal(a.std_, b.std_)
    assert a.scales == b.scales and a.ranges == b.ranges
    assert sorted(a.indexes) == sorted(b.indexes)
    for z in a.indexes:
        (bytes_a, meta_a), (bytes_b, meta_b) = a.indexes[z].state(), b.indexes[z].state()
        assert meta_a == meta_b and np.array_equal(bytes_a, bytes_b)


@pytest.mark.parametrize(
    "options",
    [
        {"exact_max_atoms": 3000},  # H and C approximate (nprobe tuned), O exact
        {"exact_max_atoms": 10**9, "memory_budget": 400_000},  # exact elements thinned by k-means cells
    ],
)
def test_an_interrupted_build_resumes_to_the_uninterrupted_reference(tmp_path, options):
    data = _structures(1500, 0)
    whole = build_reference(ArraySource(data, chunk_atoms=1000), progress=False, **options)
    checkpoint = tmp_path / "train.reference.partial"
    with pytest.raises(KeyboardInterrupt):
        build_reference(
            Interrupted(data, 1000, after=7), progress=False, checkpoint=checkpoint, checkpoint_seconds=0, **options
        )
    assert checkpoint.exists()
    calls = []
    source = ArraySource(data, chunk_atoms=1000)
    original = source.chunks
    source.chunks = lambda features=True, skip=0: calls.append(skip) or original(features, skip)
    resumed = build_reference(source, progress=False, checkpoint=checkpoint, **options)
    assert calls == [7]  # passes 1 and 2 not read again; pass 3 after the 7 chunks saved
    _same(whole, resumed)
    assert not checkpoint.exists()  # done: the checkpoint is removed


def test_a_checkpoint_of_other_options_or_a_damaged_one_is_refused(tmp_path):
    data = _structures(600, 1)
    checkpoint = tmp_path / "r.partial"
    with pytest.raises(KeyboardInterrupt):
        build_reference(Interrupted(data, 500, after=2), progress=False, checkpoint=checkpoint, checkpoint_seconds=0)
    with pytest.raises(ReferenceError, match="other seed; run the same command as before to resume it, or delete"):
        build_reference(ArraySource(data, 500), progress=False, checkpoint=checkpoint, seed=3)
    with pytest.raises(ReferenceError, match="other source"):
        build_reference(ArraySource(_structures(600, 2), 500), progress=False, checkpoint=checkpoint)
    raw = bytearray(checkpoint.read_bytes())
    raw[:8] = (10**12).to_bytes(8, "little")  # the header length: unreadable
    checkpoint.write_bytes(bytes(raw))
    with pytest.raises(ReferenceError, match=r"not a readable reference-build checkpoint.*delete .*r\.partial") as exc:
        build_reference(ArraySource(data, 500), progress=False, checkpoint=checkpoint)
    assert "\n" not in str(exc.value)


def test_a_store_build_skips_the_saved_chunks_unread(heldout_store):
    source = StoreSource([heldout_store], chunk_atoms=500)
    every = list(source.chunks())
    source.max_rows_read = 0
    rest = list(source.chunks(skip=3))
    assert len(rest) == len(every) - 3
    for (f, z), (g, y) in zip(rest, every[3:]):
        assert np.array_equal(f, g) and np.array_equal(z, y)
    assert rs.StoreSource([heldout_store], 500).identity() == source.identity()
    assert source.identity() != StoreSource([heldout_store], chunk_atoms=400).identity()


def test_cli_resumes_an_interrupted_build_and_says_where_it_is_saved(heldout_store, tmp_path, capsys):
    from probe_base.cli import interrupted_state, main
    from probe_base.cli.reference import checkpoint_path
    from probe_base.domain.reference_file import BuiltReference

    output = tmp_path / "train.reference"
    args = type("Args", (), {"command": "reference", "output": output})()
    assert "nothing was saved" in interrupted_state(args)

    class Stop(StoreSource):
        def chunks(self, features=True, skip=0):
            for i, chunk in enumerate(super().chunks(features, skip)):
                if features and self.second and i == 2:
                    raise KeyboardInterrupt
                yield chunk
            self.second = self.second or features

    stop = Stop([heldout_store])
    stop.chunk_atoms = 1000
    stop.second = False
    stop.identity = StoreSource([heldout_store], 1000).identity
    with pytest.raises(KeyboardInterrupt):
        build_reference(stop, progress=False, checkpoint=checkpoint_path(output), checkpoint_seconds=0)
    assert "saved in" in interrupted_state(args) and "run the same command again to resume" in interrupted_state(args)
    code = main(
        ["reference", "build", "--store", str(heldout_store), "--output", str(output), "--chunk-atoms", "1000",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0 and "resuming the build saved in" in capsys.readouterr().out
    fresh = build_reference(StoreSource([heldout_store], 1000), progress=False)
    _same(BuiltReference.load(output), fresh)
    assert not checkpoint_path(output).exists()
