"""The backbone's domain: per-element k-NN novelty with a conformal false-alarm rate, the
per-atom force-error head, and the label-free baselines (LLPR, GMM) it is compared with."""

from dataclasses import replace

import numpy as np
import pytest

from probe_base.domain.conformal import DomainError, conformal_threshold, min_calibration_size
from probe_base.domain.model import DomainModel
from probe_base.net.atom_errors import AtomErrorModel, atom_map_quality
from probe_base.report.baselines import GMM, LLPR
from probe_base.store import FeatureSet


def _structures(n, seed, n_features=6, atoms=(4, 10), elements=(1, 6, 8)):
    """Per-atom features that depend on the element (as a backbone's do)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(*atoms, n)
    z = rng.choice(elements, counts.sum())
    centres = {e: np.random.default_rng(e).normal(size=n_features) * 3 for e in elements}
    feats = np.stack([centres[e] for e in z]) + rng.normal(size=(len(z), n_features))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return FeatureSet(feats.astype(np.float32), z, offsets, rng.normal(size=n))


def test_conformal_threshold_gives_the_stated_false_alarm_rate():
    reference, calibration, test = _structures(600, 0), _structures(500, 1), _structures(4000, 2)
    domain = DomainModel(alpha=0.02).fit(reference, calibration)
    flagged = 1 - domain.in_domain(test).mean()
    assert 0.005 < flagged < 0.04  # alpha = 0.02; exchangeable structures
    loose = DomainModel(alpha=0.2).fit(reference, calibration)
    assert 0.14 < 1 - loose.in_domain(test).mean() < 0.26
    # without a separate calibration set the reference calibrates itself by cross-fitting
    self_calibrated = DomainModel(alpha=0.02).fit(reference)
    assert 1 - self_calibrated.in_domain(test).mean() < 0.05


def test_one_odd_atom_is_enough_and_an_unseen_element_is_novel():
    reference, calibration = _structures(400, 0), _structures(200, 1)
    domain = DomainModel().fit(reference, calibration)
    test = _structures(50, 3)
    odd = test.features.copy()
    odd[test.offsets[:-1]] += 6.0  # the first atom of every structure, far off
    novelty, atoms = domain.novelty(replace(test, features=odd))
    assert np.all(novelty > 1)
    assert all(int(np.argmax(a)) == 0 for a in atoms)
    # mean-pooled features barely move: the structure-level picture would miss it
    unseen = replace(test, atomic_numbers=np.where(np.arange(len(test.atomic_numbers)) == 2, 7, test.atomic_numbers))
    novelty, atoms = domain.novelty(unseen)
    assert novelty[0] > 1e3 and atoms[0][2] > 1e3 and np.isfinite(novelty[0])


def test_structures_outside_the_reference_size_or_energy_range_are_outside():
    """A dimer of the training molecule looks locally familiar but has twice the atoms; a
    structure with an energy per atom beyond the reference's range is outside too."""
    reference, calibration = _structures(400, 0, atoms=(6, 8)), _structures(200, 1, atoms=(6, 8))
    domain = DomainModel().fit(reference, calibration)
    test = _structures(40, 2, atoms=(6, 8))
    inside = domain.in_domain(test)
    big = _structures(40, 2, atoms=(14, 16))
    assert not domain.in_domain(big).any()
    assert "n_atoms" in domain.reasons(big, 0)[0]
    hot = replace(test, energy_pred=test.energy_pred + 100 * test.n_atoms)
    assert not domain.in_domain(hot).any() and inside.mean() > 0.9
    size_free = DomainModel(scalars=("energy_per_atom",)).fit(reference, calibration)
    assert size_free.in_domain(big).mean() > 0.5  # force labels: size alone is no reason
    # the scalar weight is a parameter (the OOD benchmark chooses it on validation sets):
    # at weight 0 a range excess no longer counts
    unweighted = DomainModel(scalar_weight=0.0).fit(reference, calibration)
    assert unweighted.in_domain(big).mean() > 0.5
    assert DomainModel.from_state(*unweighted.state_dict()).scalar_weight == 0.0


def test_bad_alpha_and_too_small_calibration_sets_are_refused_with_the_count():
    assert min_calibration_size(0.02) == 49
    with pytest.raises(DomainError, match=r"\(0, 1\)"):
        DomainModel(alpha=1.5).fit(_structures(50, 0))
    with pytest.raises(DomainError, match="needs at least 49"):
        DomainModel(alpha=0.02).fit(_structures(100, 0), _structures(30, 1))
    with pytest.raises(DomainError, match="needs at least 49"):
        conformal_threshold(np.arange(48.0), 0.02)
    assert conformal_threshold(np.arange(49.0), 0.02) == 48.0  # rank ceil(50 * 0.98) = 49


def test_state_round_trip_gives_the_same_novelty():
    reference, calibration, test = _structures(300, 0), _structures(200, 1), _structures(40, 2)
    domain = DomainModel(max_reference_atoms=500).fit(reference, calibration)
    assert all(len(p) <= 500 for p in domain.reference_.values())
    arrays, meta = domain.state_dict()
    again = DomainModel.from_state(arrays, meta)
    np.testing.assert_allclose(again.novelty(test)[0], domain.novelty(test)[0])


def test_atom_error_head_locates_the_atoms_with_wrong_forces():
    X = _structures(300, 0, atoms=(8, 16))
    rng = np.random.default_rng(0)
    true = np.exp(X.features[:, 0] + 0.1 * rng.normal(size=len(X.features)))  # learnable
    head = AtomErrorModel(seed=0).fit(X, true)
    test = _structures(200, 5, atoms=(8, 16))
    truth = np.exp(test.features[:, 0])
    q = atom_map_quality(head.predict(test), truth, test.offsets)
    assert q["hit_rate"] > 0.9 and q["hit_rate"] > 2 * q["random_rate"] and q["spearman"] > 0.8
    shuffled = atom_map_quality([rng.random(len(m)) for m in head.predict(test)], truth, test.offsets)
    assert shuffled["hit_rate"] < 0.6
    again = AtomErrorModel.from_state(*head.state_dict())
    np.testing.assert_allclose(np.concatenate(again.predict(test)), np.concatenate(head.predict(test)), rtol=1e-5)
    arrays, meta = head.state_dict()
    meta["params"]["alpha"] = meta["params"].pop("l2")  # a file written before the L2 penalty's rename
    old = AtomErrorModel.from_state(arrays, meta)
    assert old.l2 == head.l2 and "alpha" not in old.get_params()


def test_llpr_and_gmm_rank_far_structures_above_near_ones():
    from sklearn.metrics import roc_auc_score

    reference = _structures(400, 0)
    near = _structures(100, 1)
    far = _structures(100, 2)
    shifted = far.features.copy()
    shifted[far.offsets[:-1]] += 5.0
    far = replace(far, features=shifted)
    both = FeatureSet(
        np.concatenate([near.features, far.features]),
        np.concatenate([near.atomic_numbers, far.atomic_numbers]),
        np.concatenate([near.offsets, far.offsets[1:] + near.offsets[-1]]),
        np.concatenate([near.energy_pred, far.energy_pred]),
    )
    is_far = np.r_[np.zeros(100), np.ones(100)]
    assert roc_auc_score(is_far, GMM().fit(reference).nll(both)) > 0.95
    assert roc_auc_score(is_far, LLPR().fit(reference).std(both)) > 0.7


def test_fit_refuses_a_bad_alpha_or_too_few_structures_before_training(heldout_store, tmp_path, capsys):
    from probe_base.cli import main

    out = tmp_path / "x.probe"
    with pytest.raises(SystemExit):
        main(["fit", "--store", str(heldout_store), "--output", str(out), "--alpha", "1.5"])
    assert "argument --alpha: 1.5 is out of range: must be > 0 and < 1" in capsys.readouterr().err and not out.exists()
    # 400 structures, 99 % held out: 4 left to calibrate, alpha 0.02 needs 49
    options = ["--eval-fraction", "0.99", "--quantile", "0.5"]
    assert main(["fit", "--store", str(heldout_store), "--output", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert "needs at least 49" in err and "fitting set has 4" in err and not out.exists()


def _atom_map_quality_one_by_one(maps, true_errors, offsets, top=3):
    """The definition, structure by structure (scipy's spearmanr): the reference."""
    from scipy.stats import spearmanr

    hits, randoms, rhos = [], [], []
    for i, m in enumerate(maps):
        true = np.asarray(true_errors[offsets[i] : offsets[i + 1]], dtype=float)
        m = np.asarray(m, dtype=float)
        if len(true) <= top or not np.all(np.isfinite(true)):
            continue
        hits.append(float(np.argmax(m) in np.argsort(true, kind="stable")[::-1][:top]))
        randoms.append(top / len(true))
        if np.ptp(m) > 0 and np.ptp(true) > 0:
            rhos.append(float(spearmanr(m, true).statistic))
    return {
        "hit_rate": float(np.mean(hits)),
        "random_rate": float(np.mean(randoms)),
        "spearman": float(np.mean(rhos)),
        "n_structures": len(hits),
    }


@pytest.mark.parametrize("true_decimals", [None, 1])  # 1: tied true errors (worst atoms: later first)
def test_atom_map_quality_equals_the_structure_by_structure_definition(true_decimals):
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 12, 300)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    true = rng.random(offsets[-1])
    if true_decimals is not None:
        true = np.round(true, true_decimals)
    true[offsets[5] : offsets[6]] = np.nan  # a structure without reference forces: skipped
    true[offsets[7] : offsets[8]] = 0.5  # all errors equal: no rank correlation
    maps = [np.round(rng.random(n), 1) for n in sizes]  # coarse maps: many ties
    maps[9] = np.zeros(sizes[9])
    got = atom_map_quality(maps, true, offsets)
    expected = _atom_map_quality_one_by_one(maps, true, offsets)
    assert got["n_structures"] == expected["n_structures"]
    for key in ("hit_rate", "random_rate", "spearman"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key


def test_exact_neighbours_match_scikit_learn():
    from sklearn.neighbors import NearestNeighbors

    from probe_base.domain import neighbours as neighbours_module
    from probe_base.domain.neighbours import ExactNeighbors

    rng = np.random.default_rng(0)
    points = rng.normal(size=(700, 24)).astype(np.float32)
    queries = (1.5 * rng.normal(size=(90, 24))).astype(np.float32)
    search = ExactNeighbors(points)
    expected = NearestNeighbors().fit(points).kneighbors(queries, 5)[0].mean(1)
    np.testing.assert_allclose(search.mean_distance(queries, 5), expected, rtol=1e-4)
    own = NearestNeighbors().fit(points).kneighbors(points[:50], 6)[0][:, 1:].mean(1)
    np.testing.assert_allclose(search.mean_distance(points[:50], 5, exclude_nearest=True), own, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(search.points, points)  # what the .probe file stores
    small_chunks = neighbours_module.DISTANCE_ELEMENTS
    try:
        neighbours_module.DISTANCE_ELEMENTS = 700 * 7  # 7 queries at a time: same answer
        np.testing.assert_allclose(search.mean_distance(queries, 5), expected, rtol=1e-4)
    finally:
        neighbours_module.DISTANCE_ELEMENTS = small_chunks
    assert search.mean_distance(queries, 1000).shape == (90,)  # k above the reference size
