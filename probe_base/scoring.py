"""What a loaded probe says about structures: the one place that combines its parts.

P(reliable) from the probe network, the backbone's domain (novelty > 1: outside, so *not
reliable*: P(reliable) = 0, whatever the network says — it was never shown anything
alike and extrapolates with the backbone), the per-atom error map and the attention map.
Used by ``probe predict``, ``probe evaluate``, ``attach`` / every plugin's calculator and
the watchdog, so they all decide the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from probe_base.decision import DecisionRule
from probe_base.errors import ProbeError
from probe_base.net.stacked import TRACE_MAX_ATOMS
from probe_base.store import FeatureSet


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
    if domain is not None:
        novelty, atom_novelty = domain.novelty(X)
        inside = novelty <= 1.0  # NaN compares False: outside
        reasons = {int(i): domain.reasons(X, i) for i in np.flatnonzero(~inside)}
    p = gated(p_network, inside)
    atom_error = artifact.atom_errors.predict(X) if artifact.atom_errors is not None else None
    return Scores(p, p_network, importance, inside, novelty, atom_novelty, atom_error, reasons)


class StructureScorer:
    """``score`` for one structure at a time, what a calculator's MD step asks: the same
    ``Scores`` (tests check), with what stays the same between steps prepared once (the
    members' traced graph, the domain's search, the per-atom head's element inputs: kept
    while the atomic numbers do not change) and none of the per-call bookkeeping of scoring
    many structures. ``use_domain=False``: the network alone."""

    def __init__(self, artifact, use_domain=True):
        self.artifact = artifact
        self.use_domain = use_domain
        self.domain = artifact.domain if use_domain else None
        classifier = artifact.classifier
        # the fused single-structure path knows the scalar inputs it can compute itself
        self._direct = set(classifier.extras) <= {"energy_per_atom", "log_n_atoms"}
        self._members = classifier._stacked_members()  # checked fitted once, not every step
        self._numbers = None  # the atomic numbers the groupings below belong to

    def _regroup(self, numbers):
        self._numbers = numbers.copy()
        self._z = torch.from_numpy(numbers.astype(np.int64))[None]
        self._search = None if self.domain is None else self.domain.one_structure_search(numbers)
        self._atom_inputs = None
        if self.artifact.atom_errors is not None:
            self._atom_inputs = self.artifact.atom_errors.element_inputs(numbers)

    def __call__(self, features, numbers, energy) -> Scores:
        """``features`` (n_atoms, n_features) float32, ``numbers`` (n_atoms,), ``energy`` the
        backbone's energy (eV)."""
        numbers = np.asarray(numbers)
        n = len(numbers)
        classifier = self.artifact.classifier
        if features.shape != (n, classifier.n_features_in_):
            raise ProbeError(
                f"features of shape {features.shape} for {n} atoms; this probe reads "
                f"{classifier.n_features_in_} features per atom (another backbone or other layers)"
            )
        if not self._direct or n > TRACE_MAX_ATOMS:
            return score(
                self.artifact, FeatureSet(features, numbers, np.array([0, n]), np.array([energy])), self.use_domain
            )
        if self._numbers is None or not np.array_equal(numbers, self._numbers):
            self._regroup(numbers)
        values = {"energy_per_atom": energy / n, "log_n_atoms": math.log(n)}
        extras = torch.tensor([[values[name] for name in classifier.extras]], dtype=torch.float32)
        logits, importance = self._members.one(torch.from_numpy(features)[None], self._z, extras, True)
        p_network = classifier.calibrator_.transform(logits.mean(0).numpy())
        importance = [importance[0].numpy()]
        novelty = atom_novelty = reasons = None
        inside = np.ones(1, dtype=bool)
        if self.domain is not None:
            structure, atoms = self.domain.novelty_of_one(features, self._search, energy)
            novelty, atom_novelty = np.array([structure]), [atoms]
            inside = novelty <= 1.0
            reasons = {}
            if not inside[0]:
                one = FeatureSet(features, numbers, np.array([0, n]), np.array([energy]))
                reasons[0] = self.domain.reasons(one, 0)
        p = gated(p_network, inside)
        atom_error = None
        if self._atom_inputs is not None:
            atom_error = [self.artifact.atom_errors.predict_atoms(features, element_inputs=self._atom_inputs)]
        return Scores(p, p_network, importance, inside, novelty, atom_novelty, atom_error, reasons)


def gated(p_network, inside) -> np.ndarray:
    """The decision's P(reliable): the network's inside the domain, 0 outside it, and 0 where
    the network's is not a finite number (fail closed: damage never reads as reliable)."""
    p_network = np.asarray(p_network, dtype=np.float64)
    return np.where(inside & np.isfinite(p_network), p_network, 0.0)


def decision_rule(artifact, threshold=None) -> DecisionRule:
    """The rule a prediction is flagged by: the probe file's (``probe fit`` sets it for a
    stated false-alarm rate, ``probe calibrate`` may replace it), or a caller's own cut."""
    if threshold is not None:
        return DecisionRule(float(threshold), method="fixed")
    return artifact.decision


def decision_threshold(artifact, threshold=None) -> float:
    """The P(reliable) below which a prediction is called unreliable (``decision_rule``'s cut)."""
    return decision_rule(artifact, threshold).cut
