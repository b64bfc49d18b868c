"""Real physics end to end: a message-passing MLIP trained on low-temperature EMT copper
clusters is scored on hotter, strained, defective clusters. PROBE must detect its large
energy errors (AUROC > 0.75 on a held-out split), beat random, and is compared with the
disagreement of a 3-member ensemble of the same MLIP in the same run."""

import numpy as np

from probe_base.workflow import evaluate_probe, metrics_table


def test_probe_detects_unreliable_predictions(fitted_probe, heldout_store):
    evaluation = evaluate_probe(fitted_probe, heldout_store, n_bootstrap=300)
    print("\n" + metrics_table(evaluation))
    m = evaluation["metrics"]
    assert evaluation["n_structures"] == 200
    assert m["PROBE"]["auroc"][0] > 0.75
    assert m["PROBE"]["auroc"][1] > m["random"]["auroc"][2], "PROBE's interval must lie above random's"
    assert m["PROBE"]["aurc"][0] < m["random"]["aurc"][0]
    assert "ensemble E std" in m and np.isfinite(m["ensemble E std"]["auroc"][0])


def test_evaluation_scores_the_guarded_probe_and_its_network_alone(heldout_store, tmp_path):
    """With the domain guard on, the evaluation reports what the guard changes: the network's
    own probability is scored beside the guarded one, and on structures like the fitting
    ones the guard keeps (nearly) all of them, so the two agree."""
    from probe_base.classifier import ProbeClassifier
    from probe_base.labels import LabelSpec
    from probe_base.workflow import UNGUARDED, fit_probe

    path = tmp_path / "guarded.probe"
    fit_probe(heldout_store, path, LabelSpec("energy", quantile=0.5),
              ProbeClassifier(max_epochs=60, patience=10, seed=0, domain_guard=True), eval_fraction=0.5)
    evaluation = evaluate_probe(path, heldout_store, n_bootstrap=50)
    m = evaluation["metrics"]
    assert UNGUARDED in m and "ece" in m[UNGUARDED]
    assert evaluation["in_domain_fraction"] > 0.9
    guarded, network = evaluation["arrays"]["scores"]["PROBE"], evaluation["arrays"]["scores"][UNGUARDED]
    inside = guarded != 1.0
    np.testing.assert_allclose(guarded[inside], network[inside])
    assert np.all(guarded[~inside] == 1.0)  # abstained: P(reliable) = 0
