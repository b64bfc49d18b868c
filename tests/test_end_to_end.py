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
