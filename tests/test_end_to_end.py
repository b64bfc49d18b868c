"""Real physics end to end: a message-passing MLIP trained on low-temperature EMT copper
clusters is scored on hotter, strained, defective clusters. PROBE must detect its large
energy errors (AUROC > 0.75 on a held-out split), beat random, and is compared with the
disagreement of a 3-member ensemble of the same MLIP in the same run."""

import numpy as np

from probe_base.workflow.evaluate import evaluate_probe, metrics_table


def test_probe_detects_unreliable_predictions(fitted_probe, heldout_store):
    evaluation = evaluate_probe(fitted_probe, heldout_store, n_bootstrap=300)
    print("\n" + metrics_table(evaluation))
    m = evaluation["metrics"]
    assert evaluation["n_structures"] == 200
    assert m["PROBE"]["auroc"][0] > 0.75
    assert m["PROBE"]["auroc"][1] > m["random"]["auroc"][2], "PROBE's interval must lie above random's"
    assert m["PROBE"]["aurc"][0] < m["random"]["aurc"][0]
    assert "ensemble E std" in m and np.isfinite(m["ensemble E std"]["auroc"][0])


def test_evaluation_reports_the_domain_test_beside_the_network_alone(fitted_probe, heldout_store):
    """On by default: the evaluation scores PROBE with the domain test, the network alone and
    novelty alone, reports the realised false-alarm rate on in-distribution held-out
    structures (about alpha), and where the two agree (inside) and differ (outside)."""
    from probe_base.workflow.evaluate import NETWORK, NOVELTY

    evaluation = evaluate_probe(fitted_probe, heldout_store, n_bootstrap=50)
    m = evaluation["metrics"]
    assert {NETWORK, NOVELTY, "LLPR", "GMM NLL", "latent distance"} <= set(m)
    domain = evaluation["domain"]
    assert domain["in_distribution"] and domain["alpha"] == 0.02
    assert domain["flagged_fraction"] <= 0.08  # alpha = 0.02 on 200 exchangeable structures
    arrays = evaluation["arrays"]
    probe, network = arrays["scores"]["PROBE"], arrays["scores"][NETWORK]
    inside = arrays["in_domain"]
    np.testing.assert_allclose(probe[inside], network[inside])
    assert np.all(probe[~inside] == 1.0)  # outside the domain: not reliable
    assert np.array_equal(inside, arrays["novelty"] <= 1)
    assert evaluation["decisions"]["PROBE"]["flagged"] >= (~inside).mean()
    maps = evaluation["atom_maps"]
    assert maps["predicted force error"]["n_structures"] > 100
