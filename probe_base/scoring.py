"""What a loaded probe says about structures: the one place that combines its parts.

P(reliable) from the probe network, the backbone's domain (novelty > 1: outside, so *not
reliable*: P(reliable) = 0, whatever the network says — it was never shown anything
alike and extrapolates with the backbone), the per-atom error map and the attention map.
Used by ``probe predict``, ``probe evaluate``, ``attach`` / every plugin's calculator and
the watchdog, so they all decide the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scores:
    p_reliable: np.ndarray  # (n,) the decision's probability: 0 outside the domain
    p_network: np.ndarray  # (n,) the probe network alone (the paper's PROBE)
    importance: list  # per structure, per atom: attention received, sums to 1
    in_domain: np.ndarray  # (n,) bool; all True without a domain model
    novelty: np.ndarray | None  # (n,) largest atom novelty / threshold; None without domain
    atom_novelty: list | None  # per structure, per atom; > 1 = novel atom
    atom_error: list | None  # per structure, predicted |F error| per atom (eV/Å)
    reasons: dict | None = None  # structure index -> why it is outside beyond its atoms

    def novel_atoms(self, i) -> np.ndarray:
        """Indices of structure i's atoms outside the domain, most novel first."""
        if self.atom_novelty is None:
            return np.zeros(0, dtype=np.int64)
        a = self.atom_novelty[i]
        novel = np.flatnonzero(a > 1.0)
        return novel[np.argsort(a[novel])[::-1]]

    def atom_map(self, i) -> np.ndarray:
        """The per-atom map to look at first: predicted force error where the probe has
        one, else the attention importance."""
        return self.atom_error[i] if self.atom_error is not None else self.importance[i]


def score(artifact, X, use_domain=True) -> Scores:
    """Score every structure of FeatureSet ``X`` with a loaded ``ProbeArtifact``.
    ``use_domain=False``: ignore the domain model (the network's own probability)."""
    p_network, importance = artifact.classifier.predict_with_importance(X)
    domain = artifact.domain if use_domain else None
    novelty = atom_novelty = reasons = None
    inside = np.ones(len(X), dtype=bool)
    p = p_network
    if domain is not None:
        novelty, atom_novelty = domain.novelty(X)
        inside = novelty <= 1.0
        p = np.where(inside, p_network, 0.0)
        reasons = {int(i): domain.reasons(X, i) for i in np.flatnonzero(~inside)}
    atom_error = artifact.atom_errors.predict(X) if artifact.atom_errors is not None else None
    return Scores(p, p_network, importance, inside, novelty, atom_novelty, atom_error, reasons)


def decision_threshold(artifact, threshold=None) -> float:
    """The P(reliable) below which a prediction is called unreliable: the caller's, else
    the probe file's (``probe calibrate`` writes it), else 0.5."""
    if threshold is not None:
        return float(threshold)
    return float(artifact.info.get("info", {}).get("decision_threshold", 0.5))
