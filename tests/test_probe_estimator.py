"""Issue 27: the probe a user fits is one scikit-learn estimator (network, domain test,
per-atom head, label and decision rule as nested parameters), and the file it writes
scores exactly as the fitted object does."""

import numpy as np
import pytest
from sklearn.base import clone

from probe_base import DomainModel, LabelSpec, Probe, ProbeClassifier
from probe_base.artifact import load_probe
from probe_base.errors import InputError
from probe_base.scoring import score
from probe_base.store import load_store


@pytest.fixture(scope="module")
def toy_data(heldout_store):
    return load_store(heldout_store)


@pytest.fixture(scope="module")
def fitted(toy_data):
    probe = Probe(
        LabelSpec("energy", quantile=0.5),
        ProbeClassifier(hidden=16, max_epochs=15, cv_folds=2, seed=0),
        DomainModel(alpha=0.1, scalars=None),
        false_alarm=0.1,
    )
    return probe.fit(toy_data)


def test_nested_parameters_clone_and_set_like_any_scikit_learn_meta_estimator():
    probe = Probe(classifier=ProbeClassifier(hidden=8), domain=DomainModel(alpha=0.1), false_alarm=0.1)
    params = probe.get_params(deep=True)
    assert params["classifier__hidden"] == 8 and params["domain__alpha"] == 0.1
    probe.set_params(classifier__hidden=32, domain__alpha=0.05, false_alarm=0.2)
    copy = clone(probe)
    assert copy.classifier is not probe.classifier
    assert copy.get_params()["classifier__hidden"] == 32 and copy.get_params()["domain__alpha"] == 0.05
    assert copy.false_alarm == 0.2
    with pytest.raises(InputError, match="not fitted"):
        copy.predict_proba(None)


def test_fit_learns_into_trailing_underscores_and_leaves_its_parameters_alone(fitted, toy_data):
    assert not hasattr(fitted.classifier, "n_features_in_"), "fit trained the parameter, not a clone"
    assert not hasattr(fitted.domain, "threshold_")
    assert fitted.domain.scalars is None
    assert fitted.domain_.scalars == ("energy_per_atom", "n_atoms")  # a total-energy label
    assert fitted.decision_.method == "conformal" and fitted.decision_.false_alarm == 0.1
    train, calibration = fitted.train_positions_, fitted.calibration_positions_
    assert len(np.intersect1d(train, calibration)) == 0
    assert len(train) + len(calibration) == len(toy_data)
    # the network never saw the calibration structures: its cross-validation folds hold
    # exactly the training part
    assert len(fitted.classifier_.out_of_fold_logits_) == len(train)


def test_the_saved_file_scores_and_decides_as_the_fitted_estimator(fitted, toy_data, tmp_path):
    path = fitted.save(tmp_path / "toy.probe", load_store_fingerprint(toy_data))
    loaded = load_probe(path)
    from_file = score(loaded, toy_data)
    np.testing.assert_allclose(fitted.predict_proba(toy_data)[:, 1], from_file.p_reliable, atol=1e-6)
    flags = loaded.decision.flags(from_file.p_reliable, from_file.in_domain)
    np.testing.assert_array_equal(fitted.predict(toy_data), (~flags).astype(int))
    assert loaded.decision.cut == fitted.decision_.cut
    assert loaded.label.threshold == fitted.label_.threshold


def test_the_decision_is_cut_on_out_of_fold_novelty_when_the_fitting_set_is_its_own_reference(fitted, toy_data):
    """Each calibration structure is in the domain's reference then: its own atoms would be its
    nearest neighbours. The rule reads the cross-fitted novelty instead, what a new structure
    from the same distribution gets."""
    calibration = fitted.calibration_positions_
    in_sample = fitted.domain_._raw_structure_novelty(toy_data.subset(calibration))[0]
    out_of_fold = fitted.domain_.out_of_fold_scores_[calibration]
    assert np.mean(out_of_fold) > 1.2 * np.mean(in_sample)
    y = fitted.label_.reliable(fitted.label_.errors(toy_data))[calibration].astype(bool)
    outside = out_of_fold[y] > fitted.domain_.threshold_
    # the domain's out-of-fold flags are counted in the rule's measured rate
    assert fitted.decision_.calibration_flagged >= outside.mean()


def load_store_fingerprint(data):
    return data.fingerprint


def test_evaluate_cuts_novelty_on_the_stored_out_of_fold_scores(fitted, toy_data, tmp_path):
    """Every method is cut on the calibration structures; for the novelty those are in the
    domain's reference, so the cut reads their stored cross-fitted novelty (in-sample it is
    too small, and a cut there flags far more than the stated rate)."""
    from probe_base.workflow.evaluate import _calibration_novelty

    path = fitted.save(tmp_path / "toy.probe", toy_data.fingerprint)
    loaded = load_probe(path)
    np.testing.assert_array_equal(loaded.domain.out_of_fold_scores_, fitted.domain_.out_of_fold_scores_)
    calibration = fitted.calibration_positions_
    info = {"fit_indices": list(range(len(toy_data))), "calibration_indices": calibration.tolist()}
    in_sample = score(loaded, toy_data.subset(calibration)).novelty
    used = _calibration_novelty(loaded, info, in_sample)
    np.testing.assert_allclose(used, fitted.domain_.out_of_fold_scores_[calibration] / fitted.domain_.threshold_)
    assert used.mean() > 1.2 * in_sample.mean()
    assert _calibration_novelty(loaded, {**info, "reference_store": "train.h5"}, in_sample) is in_sample
