import numpy as np
import pytest
from conftest import synthetic_features

from probe_base.errors import LabelError
from probe_base.net.classifier import ProbeClassifier
from probe_base.net.training import member_logits


def _fit(n=240, **kw):
    X, y = synthetic_features(n)
    params = dict(hidden=16, max_epochs=40, patience=10, seed=3)
    params.update(kw)
    return X, y, ProbeClassifier(**params).fit(X, y)


def test_learns_a_learnable_signal_and_sklearn_contract():
    X, y, clf = _fit()
    Xt, yt = synthetic_features(200, seed=9)
    proba = clf.predict_proba(Xt)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1)
    assert list(clf.classes_) == [0, 1]
    assert clf.score(Xt, yt) > 0.85
    assert set(clf.predict(Xt)) <= {0, 1}
    assert clf.get_params()["hidden"] == 16


def test_fixed_seed_gives_identical_results():
    X, y, a = _fit()
    _, _, b = _fit()
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    _, _, c = _fit(seed=4)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_cross_fitting_trains_one_member_per_fold_and_seed():
    X, y, clf = _fit(cv_folds=3, n_seeds=2)
    assert len(clf.members_) == 6
    assert clf.out_of_fold_logits_.shape == (len(X),) and np.all(clf.out_of_fold_logits_ != 0)


def test_single_split_probe_seed_ensemble_averages_members():
    X, y, clf = _fit(cv_folds=1, n_seeds=3, calibration=None)
    assert len(clf.members_) == 3
    nets = clf.ensemble_.nets()
    single = [member_logits(n, X, clf._extras(X), np.arange(len(X)), clf.batch_size) for n in nets]
    np.testing.assert_allclose(clf._logits(X), np.mean(single, axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibration_improves_or_keeps_ece(method):
    from probe_base.report.metrics import ece

    X, y, raw = _fit(n=600, calibration=None)
    _, _, cal = _fit(n=600, calibration=method)
    Xt, yt = synthetic_features(400, seed=11)
    raw_p = 1 / (1 + np.exp(-raw._logits(Xt)))
    assert ece(cal.predict_proba(Xt)[:, 1], yt) <= ece(raw_p, yt) + 0.02
    if method == "isotonic":
        assert cal.isotonic_ is not None


def test_importance_is_per_atom_and_normalised():
    X, y, clf = _fit()
    p, importance = clf.predict_with_importance(X.subset([0, 1, 2]))
    assert [len(i) for i in importance] == list(X.n_atoms[:3])
    assert all(abs(i.sum() - 1) < 1e-5 for i in importance)
    np.testing.assert_allclose(p, clf.predict_proba(X.subset([0, 1, 2]))[:, 1], rtol=1e-5)


def test_one_class_labels_are_refused():
    X, y = synthetic_features(50)
    with pytest.raises(LabelError, match="same label"):
        ProbeClassifier().fit(X, np.ones(50, dtype=int))


def test_latent_distance_extra_input():
    X, y, clf = _fit(extras=("energy_per_atom", "log_n_atoms", "latent_distance"))
    d = clf.latent_distance(X)
    assert d.shape == (len(X),) and np.all(d >= 0)


def test_scikit_learn_estimator_contract():
    """Parameters come from __init__ (clone works), predicting before fit is refused."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    clf = ProbeClassifier(hidden=8, heads=2, extras=("log_n_atoms",))
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    assert copy.set_params(hidden=16).hidden == 16 and clf.hidden == 8
    X, _ = synthetic_features(20)
    with pytest.raises(NotFittedError):
        clf.predict_proba(X)


@pytest.mark.parametrize(
    "kw", [dict(), dict(cv_folds=1, calibration="isotonic", extras=("log_n_atoms", "latent_distance"))]
)
def test_from_state_rebuilds_the_fitted_estimator(kw):
    X, y, clf = _fit(n=120, max_epochs=5, **kw)
    again = ProbeClassifier.from_state(clf.get_params(), clf.state_dict())
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.get_params() == clf.get_params() and len(again.members_) == len(clf.members_)
    assert (again.isotonic_ is None) == (clf.isotonic_ is None)


def test_every_prediction_path_refuses_an_unfitted_estimator():
    from sklearn.exceptions import NotFittedError

    X, y = synthetic_features(20)
    clf = ProbeClassifier(extras=("latent_distance",))
    calls = [
        lambda: clf.predict_proba(X),
        lambda: clf.predict(X),
        lambda: clf.predict_with_importance(X),
        lambda: clf.score(X, y),
        lambda: clf.latent_distance(X),
        lambda: clf._logits(X),
        clf._stacked_members,
        clf.state_dict,
    ]
    for call in calls:
        with pytest.raises(NotFittedError):
            call()


def test_auto_attention_is_self_for_small_structures_and_pooling_for_large(tmp_path):
    import warnings

    from conftest import synthetic_features

    from probe_base.artifact import load_probe, save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net import classifier as classifier_module
    from probe_base.net.classifier import ProbeClassifier, resolve_attention

    assert resolve_attention("auto", np.array([12, 250])) == "self"
    assert resolve_attention("auto", np.array([12, 251])) == "pooling"
    assert resolve_attention("self", np.array([5000])) == "self"
    with pytest.raises(ValueError, match="attention must be one of"):
        resolve_attention("global", np.array([5]))
    X, y = synthetic_features(80)
    small = ProbeClassifier(max_epochs=2, patience=1, cv_folds=2).fit(X, y)
    assert small.attention == "auto" and small.attention_ == "self"
    classifier_module.AUTO_POOLING_ATOMS, saved = 3, classifier_module.AUTO_POOLING_ATOMS
    try:  # the synthetic structures are "large" for a limit of 3 atoms
        large = ProbeClassifier(max_epochs=2, patience=1, cv_folds=2).fit(X, y)
    finally:
        classifier_module.AUTO_POOLING_ATOMS = saved
    assert large.attention_ == "pooling" and large.ensemble_.stacked().pool is not None
    save_probe(tmp_path / "large.probe", large, LabelSpec("energy", threshold=1.0), {"adapter": "toy"})
    loaded = load_probe(tmp_path / "large.probe").classifier
    assert loaded.attention == "auto" and loaded.attention_ == "pooling"
    np.testing.assert_allclose(loaded.predict_proba(X), large.predict_proba(X), rtol=1e-5, atol=1e-6)
    classifier_module.LARGE_FOR_SELF_ATTENTION, saved = 3, classifier_module.LARGE_FOR_SELF_ATTENTION
    try:
        with pytest.warns(UserWarning, match="--attention pooling"):
            small.predict_proba(X.subset([0]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            large.predict_proba(X.subset([0]))  # linear already: nothing to say
    finally:
        classifier_module.LARGE_FOR_SELF_ATTENTION = saved


def test_fitted_attention_is_saved_and_checked_against_the_weights(tmp_path):
    from probe_base.artifact import load_probe, save_probe
    from probe_base.labels import LabelSpec

    X, y = synthetic_features(80)
    fitted = ProbeClassifier(max_epochs=2, patience=1, cv_folds=2, attention="pooling").fit(X, y)
    state = fitted.state_dict()
    assert state["attention"] == "pooling"
    save_probe(tmp_path / "p.probe", fitted, LabelSpec("energy", threshold=1.0), {"adapter": "toy"})
    assert load_probe(tmp_path / "p.probe").info["attention"] == "pooling"  # the header, as written
    params = fitted.get_params()
    with pytest.raises(ValueError, match="fitted attention is 'self' but the members are pooling"):
        ProbeClassifier.from_state({**params, "attention": "auto"}, {**state, "attention": "self"})
    with pytest.raises(ValueError, match="none of"):
        ProbeClassifier.from_state(params, {**state, "attention": "global"})
    old = {k: v for k, v in state.items() if k != "attention"}  # files before it was saved
    assert ProbeClassifier.from_state(params, old).attention_ == "pooling"


def test_fit_options_override_the_preset_only_where_given():
    from probe_base.cli.commands import classifier_of_args
    from probe_base.cli.parser import build_parser
    from probe_base.net.recipes import ATTENTIONS, CALIBRATIONS, PRESETS

    def classifier(*options):
        return classifier_of_args(
            build_parser().parse_args(["fit", "--store", "s.h5", "--output", "p.probe", *options])
        )

    paper = classifier("--preset", "paper")
    assert paper.attention == PRESETS["paper"]["attention"] == "self"  # not "auto": the paper's recipe
    assert paper.hidden == PRESETS["paper"]["hidden"] and paper.calibration == "temperature"
    assert classifier("--preset", "paper", "--attention", "pooling").attention == "pooling"
    assert classifier().attention == ProbeClassifier().attention == "auto"
    assert classifier("--calibration", "none").calibration is None
    for attention in ATTENTIONS:
        assert classifier("--attention", attention).attention == attention
    for method in CALIBRATIONS:
        assert classifier("--calibration", method).calibration == method
    with pytest.raises(SystemExit):
        classifier("--attention", "global")
