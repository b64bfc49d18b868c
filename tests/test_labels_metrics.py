import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from probe_base.errors import LabelError
from probe_base.labels import LabelSpec, errors
from probe_base.report.bootstrap import evaluate_signal
from probe_base.report.metrics import aurc, e_aurc, ece, risk_coverage, selective_risk
from probe_base.store import StoredDataset


def _data():
    return StoredDataset(
        features=np.zeros((6, 1), np.float32),
        atomic_numbers=np.ones(6, int),
        offsets=np.array([0, 2, 6]),
        energy_pred=np.array([1.0, 2.0]),
        energy_ref=np.array([1.5, 1.0]),
        force_rmse=np.array([0.1, 0.3]),
        force_max_error=np.array([0.2, 0.9]),
    )


def test_error_targets():
    d = _data()
    np.testing.assert_allclose(errors(d, "energy"), [0.5, 1.0])
    np.testing.assert_allclose(errors(d, "energy_per_atom"), [0.25, 0.25])
    np.testing.assert_allclose(errors(d, "force_rmse"), [0.1, 0.3])
    np.testing.assert_allclose(errors(d, "force_max"), [0.2, 0.9])
    d.force_rmse = np.array([np.nan, np.nan])
    with pytest.raises(LabelError, match="needs reference forces"):
        errors(d, "force_rmse")


def test_thresholds_absolute_and_quantile():
    errs = np.array([0.1, 0.2, 0.3, 0.4])
    assert LabelSpec("energy", quantile=0.5).resolved(errs).threshold == pytest.approx(0.25)
    spec = LabelSpec("energy", threshold=0.35).resolved(errs)
    np.testing.assert_array_equal(spec.reliable(errs), [1, 1, 1, 0])


def test_degenerate_labels_suggest_a_threshold():
    spec = LabelSpec("energy", threshold=10.0)
    errors = np.linspace(0.1, 0.4, 20)
    with pytest.raises(
        LabelError, match=r"all 20 structures .* are reliable.*use --threshold 0\.325 .*--quantile 0\.5"
    ):
        spec.reliable(errors)
    with pytest.raises(LabelError, match=r"all 20 structures .* are unreliable.*use --threshold 0\.175"):
        LabelSpec("energy", threshold=0.01).reliable(errors)
    # too few to hold both kinds: more data is the fix, not the option just used
    with pytest.raises(LabelError, match=r"all 4 structures .*extract more labelled structures"):
        spec.reliable(np.array([0.1, 0.2, 0.3, 0.4]))


def test_risk_coverage_and_aurc_by_hand():
    bad = np.array([0, 1, 0, 1])
    score = np.array([0.1, 0.2, 0.3, 0.4])  # accept order: 0,1,2,3
    coverage, risk = risk_coverage(score, bad)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 0.5, 1 / 3, 0.5])
    assert aurc(score, bad) == pytest.approx(np.mean([0, 0.5, 1 / 3, 0.5]))
    assert e_aurc(bad.astype(float), bad) == pytest.approx(0)
    assert selective_risk(score, bad, 0.5) == pytest.approx(0.5)


def test_ece_by_hand():
    p = np.array([0.9, 0.9, 0.1, 0.1])
    y = np.array([1, 0, 0, 0])
    # bin 0.9: |0.9-0.5|*0.5 ; bin 0.1: |0.1-0|*0.5
    assert ece(p, y) == pytest.approx(0.2 + 0.05)


def test_bootstrap_intervals_bracket_point_values():
    rng = np.random.default_rng(0)
    bad = rng.integers(0, 2, 300)
    score = bad + rng.normal(0, 1, 300)
    result = evaluate_signal(score, bad, errors=score, p_reliable=1 / (1 + np.exp(score)), n_bootstrap=200)
    value, low, high = result["auroc"]
    assert value == pytest.approx(roc_auc_score(bad, score))
    assert low < value < high and high - low < 0.2
    assert {"auprc", "aurc", "e_aurc", "risk@90", "spearman", "ece", "brier"} <= set(result)


def test_remove_offset_measures_errors_around_the_fitting_sets_mean_shift():
    d = _data()  # signed errors -0.5, +1.0: mean +0.25
    spec = LabelSpec("energy", quantile=0.5, remove_offset=True).resolved_on(d)
    assert spec.offset == pytest.approx(0.25)
    np.testing.assert_allclose(spec.errors(d), [0.75, 0.75])
    per_atom = LabelSpec("energy_per_atom", quantile=0.5, remove_offset=True).resolved_on(d)
    assert per_atom.offset == pytest.approx(np.mean([-0.25, 0.25]))
    with pytest.raises(LabelError, match="energy targets only"):
        LabelSpec("force_rmse", remove_offset=True)


def test_the_per_element_mean_map_knows_only_the_element():
    from probe_base.store import StoredDataset
    from probe_base.workflow.evaluate import per_element_mean_map

    def data(z, errors, offsets):
        n = len(offsets) - 1
        return StoredDataset(
            features=np.zeros((len(z), 2), np.float32),
            atomic_numbers=np.array(z),
            offsets=np.array(offsets),
            energy_pred=np.zeros(n),
            energy_ref=np.zeros(n),
            atom_force_error=None if errors is None else np.array(errors, float),
        )

    fit = data([1, 1, 8, 6], [0.3, 0.1, 1.0, np.nan], [0, 2, 4])
    maps = per_element_mean_map(fit, data([8, 1, 7, 1], None, [0, 1, 4]))
    np.testing.assert_allclose(maps[0], [1.0])
    # carbon's only error is NaN: an element without a finite error gets the overall mean
    np.testing.assert_allclose(maps[1], [0.2, np.mean([0.3, 0.1, 1.0]), 0.2])
    assert per_element_mean_map(data([1], None, [0, 1]), fit) is None
