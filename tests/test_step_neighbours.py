"""An MD step's k-NN against an approximate reference (probe_base/domain/step_neighbours.py): the
candidates kept from an earlier step give a fresh search's numbers where the triangle
inequality proves them, and the atom is searched again where it does not."""

import numpy as np
import pytest

from probe_base.domain import index_params as ip
from probe_base.domain import reference_index as ri
from probe_base.domain.model import DomainModel
from probe_base.domain.step_neighbours import StepNeighbours
from probe_base.store import FeatureSet

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)


def _index(n=20_000, d=16, nprobe=None, seed=0):
    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(16, d)) * 3
    points = (modes[rng.integers(16, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    params = ip.index_params(n, d, exact_max_atoms=1000, nprobe=nprobe)
    return ri.ElementIndex.build(points, params, seed=seed), points, modes


def _walk(points, steps, scale, seed):
    """A random walk of 40 query atoms started at reference atoms: ``scale`` per step."""
    rng = np.random.default_rng(seed)
    q = points[rng.choice(len(points), 40, replace=False)] + rng.normal(size=(40, points.shape[1])) * 0.3
    for _ in range(steps):
        q = q + rng.normal(size=q.shape).astype(np.float32) * scale
        yield q.astype(np.float32)


@pytest.mark.parametrize("scale", [0.003, 0.3])
def test_every_cell_probed_the_kept_candidates_give_the_fresh_search_exactly(scale):
    index, points, _ = _index(nprobe=10**6)  # every cell probed: the fresh search is exact over the codes
    index.params["nprobe"] = index.params["nlist"]
    index._set_search_parameters()
    tracked = StepNeighbours(index)
    for q in _walk(points, 30, scale, seed=1):
        np.testing.assert_allclose(tracked.mean_distance(q, 5), index.mean_distance(q, 5), rtol=2e-5)
    assert tracked.steps == 30
    if scale < 0.01:  # slow features: the kept candidates answer most steps
        assert tracked.searched < 0.2 * 30 * 40
    else:  # a jump larger than the gap to the 64th candidate: searched again every step
        assert tracked.searched > 0.8 * 30 * 40


def test_with_the_tuned_nprobe_the_answer_is_as_close_to_exact_as_a_fresh_search():
    index, points, _ = _index()
    exact = ri.ElementIndex.flat(points)
    tracked = StepNeighbours(index)
    for q in _walk(points, 20, 0.003, seed=2):
        truth = exact.mean_distance(q, 5)
        kept, fresh = tracked.mean_distance(q, 5), index.mean_distance(q, 5)
        # never nearer than exact (the candidates are reference atoms' codes): within the codes' error
        assert np.all(kept >= truth * (1 - 0.02))
        assert np.median(np.abs(kept / truth - 1)) <= np.median(np.abs(fresh / truth - 1)) + 0.005


def test_a_different_structure_size_searches_afresh_and_kept_state_never_leaks():
    index, points, _ = _index(nprobe=10**6)
    index.params["nprobe"] = index.params["nlist"]
    index._set_search_parameters()
    tracked = StepNeighbours(index)
    a, b = points[:30] + 0.1, points[1000:1010] + 0.1
    tracked.mean_distance(a, 5)
    np.testing.assert_allclose(tracked.mean_distance(b, 5), index.mean_distance(b, 5), rtol=2e-5)
    # the same atom count, far away: nothing of the earlier anchors is reused
    c = points[5000:5010] + 0.1
    np.testing.assert_allclose(tracked.mean_distance(c, 5), index.mean_distance(c, 5), rtol=2e-5)
    with pytest.raises(ValueError, match="MD steps"):
        tracked.mean_distance(c, 5, exclude_nearest=True)


def test_a_calculators_step_uses_it_and_gives_the_batch_novelty():
    """``novelty_of_one`` with a kept ``one_structure_search`` over MD-like steps equals the
    batch ``novelty`` of each step's structure (every cell probed, so both are exact)."""
    rng = np.random.default_rng(0)
    n_ref, d = 12_000, 16
    modes = rng.normal(size=(8, d)) * 3
    ref_z = rng.choice([1, 6], n_ref)
    ref = (modes[rng.integers(8, size=n_ref)] + rng.normal(size=(n_ref, d))).astype(np.float32)
    counts = np.full(n_ref // 12, 12)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    reference = FeatureSet(ref, ref_z, offsets, rng.normal(size=len(counts)))
    calibration = reference.subset(np.arange(200))
    domain = DomainModel(exact_max_atoms=1000, nprobe=10**6, scalars=()).fit(reference, calibration)
    assert {ix.kind for ix in domain.reference_.values()} == {"ivfsq"}
    z = ref_z[:24]
    search = domain.one_structure_search(z)
    assert all(isinstance(knn, StepNeighbours) for _, knn, _, _ in search)
    x = ref[:24] + 0.2
    for _ in range(10):
        x = (x + rng.normal(size=x.shape) * 0.002).astype(np.float32)
        structure, atoms = domain.novelty_of_one(x, search, 0.0)
        batch_structure, batch_atoms = domain.novelty(FeatureSet(x, z, np.array([0, 24]), np.array([0.0])))
        np.testing.assert_allclose(atoms, batch_atoms[0], rtol=2e-5)
        assert structure == pytest.approx(float(batch_structure[0]), rel=2e-5)
    assert sum(knn.searched for _, knn, _, _ in search) < 10 * 24


def test_an_unproven_atom_is_kept_only_while_its_upper_bound_is_below_keep_below():
    """``keep_below``: an atom the triangle test cannot prove keeps its candidates' mean
    (an upper bound of the fresh one) only while that is at most ``keep_below``, so every
    value above it is a fresh search's, and no decision at ``keep_below`` changes."""
    index, points, _ = _index(nprobe=10**6)
    steps = list(_walk(points, 20, 0.3, seed=3))  # jumps: the triangle test rarely proves anything
    bound = float(np.median(index.mean_distance(steps[0], 5)))
    tracked = StepNeighbours(index, keep_below=bound)
    for q in steps:
        kept, fresh = tracked.mean_distance(q, 5), index.mean_distance(q, 5)
        assert np.all(kept >= fresh * (1 - 2e-5))
        above = kept > bound
        np.testing.assert_allclose(kept[above], fresh[above], rtol=2e-5)
        assert np.array_equal(kept > bound, fresh > bound)
    strict = StepNeighbours(index)
    for q in steps:
        strict.mean_distance(q, 5)
    assert tracked.searched < strict.searched


@pytest.mark.parametrize("scale", [0.003, 0.3])
def test_an_exact_element_keeps_its_candidates_and_gives_the_exact_answer_at_every_step(scale):
    """A flat (exact) reference: the kept candidates are the exact nearest atoms, so a proven
    answer is the exact k-NN, and an unproven atom is searched again (keep_below 0)."""
    _, points, _ = _index(n=8000)
    exact = ri.ElementIndex.flat(points)
    tracked = StepNeighbours(exact)
    for q in _walk(points, 30, scale, seed=4):
        np.testing.assert_allclose(tracked.mean_distance(q, 5), exact.mean_distance(q, 5), rtol=1e-4, atol=1e-5)
    if scale < 0.01:
        assert tracked.searched < 0.2 * 30 * 40
    else:
        assert tracked.searched > 0.5 * 30 * 40  # jumps: mostly searched again


def test_a_settled_batch_query_changes_no_value_above_the_bound_and_no_decision():
    """``mean_distance(settle_below=b)``: a query whose one-cell search bounds its k-NN mean
    at most ``b`` reports that bound (never below the full search's: its atoms are a subset),
    every value above ``b`` is the full search's, and ``<= b`` holds for both alike."""
    index, points, _ = _index(nprobe=8)
    rng = np.random.default_rng(5)
    q = (points[rng.choice(len(points), 500, replace=False)] + rng.normal(size=(500, 16)) * 0.5).astype(np.float32)
    q[:100] += 4.0  # far from the reference: never settled
    full = index.mean_distance(q, 5)
    bound = float(np.median(full))
    settled = index.mean_distance(q, 5, settle_below=bound)
    assert np.all(settled >= full * (1 - 1e-6))
    above = settled > bound
    np.testing.assert_allclose(settled[above], full[above], rtol=1e-6)
    assert np.array_equal(settled <= bound, full <= bound)
    assert 0 < np.sum(settled != full) < 500  # some settled by one cell, the far ones searched fully


def test_the_bounding_search_scans_each_querys_truly_nearest_cell_even_with_a_graph_quantizer():
    """The one-cell search of a batch assigns cells by an exact search of the centroids
    (not the HNSW graph): each query's distances are those to the codes of its nearest cell."""
    import faiss

    rng = np.random.default_rng(2)
    points = rng.normal(size=(20_000, 16)).astype(np.float32)
    params = {**ip.index_params(len(points), 16, exact_max_atoms=1000, nprobe=4), "hnsw_quantizer": True}
    index = ri.ElementIndex.build(points, params, seed=0)
    ivf = faiss.extract_index_ivf(index.index)
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat)
    q = (points[:300] + rng.normal(size=(300, 16)) * 0.3).astype(np.float32)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    nearest = np.argmin(((q[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    squared, labels = index._search_exact_cells(q, 5, 1)
    members = {c: set() for c in np.unique(nearest)}
    invlists = ivf.invlists
    for c in members:
        ids = faiss.rev_swig_ptr(invlists.get_ids(int(c)), invlists.list_size(int(c)))
        members[c] = set(ids.tolist())
    assert all(set(row[row >= 0].tolist()) <= members[c] for row, c in zip(labels, nearest))
    # the mean of those distances: what the settle step of ``mean_distance`` compares to its bound
    found = index._searched_mean(q, 5, False, nprobe=1, complete=True, exact_cells=True)
    expected = np.where((labels >= 0).all(1), np.sqrt(np.maximum(squared, 0)).mean(1), np.inf)
    np.testing.assert_allclose(found, expected, rtol=1e-6)
