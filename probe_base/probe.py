"""The probe a user fits: one estimator whose parts are nested parameters.

    probe = Probe(label=LabelSpec("force_rmse"), false_alarm=0.05).fit(features)
    probe.predict_proba(X)[:, 1]       # P(reliable), 0 outside the backbone's domain
    probe.predict(X)                   # 1 reliable, 0 flagged by the decision rule
    probe.save("ethanol.probe", adapter.fingerprint())

``fit`` resolves the label (absolute tolerance, constant energy offset), holds out the
decision's calibration structures, trains the network (``classifier``) on the rest, fits
the domain test (``domain``) and the per-atom force-error head (``atom_errors``), then
sets the decision rule: the cut on P(reliable) that flags ``false_alarm`` of reliable
in-distribution structures, measured on structures neither the network nor the domain's
reference saw. scikit-learn's contract: parameters are kept as given
(``clone(probe)``, ``probe.set_params(classifier__hidden=64, domain__alpha=0.01)``),
what ``fit`` learns ends in ``_``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone

from probe_base.artifact import ProbeArtifact, save_probe
from probe_base.decision import (
    DEFAULT_CALIBRATION_FRACTION,
    DEFAULT_FALSE_ALARM,
    DecisionError,
    DecisionRule,
    fit_rule,
    min_reliable_calibration,
)
from probe_base.domain.conformal import DomainError, min_calibration_size
from probe_base.domain.model import DomainModel
from probe_base.domain.novelty import SCALARS
from probe_base.errors import InputError
from probe_base.labels import LabelSpec
from probe_base.net.atom_errors import AtomErrorModel
from probe_base.net.classifier import ProbeClassifier
from probe_base.net.training import stratified_split
from probe_base.scoring import score

#: the fewest finite per-atom force errors the force-error head is fitted on
MIN_ATOM_ERRORS = 10


class Probe(BaseEstimator):
    """PROBE: P(reliable) per structure from a backbone's frozen per-atom features.

    ``label``: what counts as unreliable (``LabelSpec``: target, absolute tolerance by
    default). ``classifier``: the attention network (``ProbeClassifier``). ``domain``: the
    domain test (``DomainModel``; None: none). A ``DomainModel`` whose ``scalars`` is None
    takes the atom count as a domain scalar for a total-energy label (that error grows with
    size) and the energy per atom only otherwise. ``atom_errors``: the per-atom force-error
    head (``AtomErrorModel``; None: none; fitted only where the data has reference forces).
    ``false_alarm``: the share of reliable in-distribution structures the decision may
    flag (None: no calibration split, a fixed cut of 0.5 with no stated rate).
    ``calibration_fraction``: the share of the fitting structures held out of the
    network's training to set that cut. ``seed``: the split's seed."""

    def __init__(
        self,
        label: LabelSpec | None = None,
        classifier: ProbeClassifier | None = None,
        domain: DomainModel | None = "default",
        atom_errors: AtomErrorModel | None = "default",
        false_alarm: float | None = DEFAULT_FALSE_ALARM,
        calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
        seed: int = 0,
    ):
        self.label = label
        self.classifier = classifier
        self.domain = domain
        self.atom_errors = atom_errors
        self.false_alarm = false_alarm
        self.calibration_fraction = calibration_fraction
        self.seed = seed

    # ---- the parts, as given or by default ----------------------------------------------
    def _label(self) -> LabelSpec:
        return LabelSpec() if self.label is None else self.label

    def _classifier(self) -> ProbeClassifier:
        return ProbeClassifier(seed=self.seed) if self.classifier is None else clone(self.classifier)

    def _domain(self, target) -> DomainModel | None:
        if self.domain is None:
            return None
        domain = DomainModel(seed=self.seed, scalars=None) if isinstance(self.domain, str) else clone(self.domain)
        if domain.scalars is None:
            domain.scalars = SCALARS if target == "energy" else ("energy_per_atom",)
        return domain

    def _atom_errors(self) -> AtomErrorModel | None:
        if self.atom_errors is None:
            return None
        return AtomErrorModel(seed=self.seed) if isinstance(self.atom_errors, str) else clone(self.atom_errors)

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, reference=None, comm=None, loaded=None, where="fitting set"):
        """Fit on labelled structures ``X`` (a stored dataset with reference energies, and
        forces for force labels and the per-atom head). ``reference``: the backbone's
        training set (a FeatureSet or a ``BuiltReference``), the domain's reference atoms;
        without it ``X`` is its own reference, calibrated by cross-fitting. ``comm``: every
        rank of a torchrun job calls ``fit`` with ``X`` streamed; the network trains on all
        ranks, the rest on rank 0 from ``loaded`` (``X`` in memory). ``where`` names ``X`` in
        errors (e.g. the store's path)."""
        label = self._label()
        self.label_offset_ = label.offset_estimate(X)
        self.label_ = label.resolved_on(X)
        errors = self.label_.errors(X)
        y = self.label_.reliable(errors, context=f"fitting set of {where}")
        domain = self._domain(self.label_.target)
        if domain is not None:  # refuse before training, not after
            needed = min_calibration_size(domain.alpha)
            if len(X) < needed:
                raise DomainError(
                    f"{where}: the domain test at alpha = {domain.alpha:g} needs at least {needed} "
                    f"in-distribution calibration structures and the fitting set has {len(X)}: "
                    "label more structures, raise --alpha, or pass --no-domain"
                )
        self.train_positions_, self.calibration_positions_ = np.arange(len(X)), np.zeros(0, dtype=np.int64)
        if self.false_alarm is not None:
            self.train_positions_, self.calibration_positions_ = self._decision_split(y, where)
        self.fit_error_quantiles_ = np.quantile(errors, [0.1, 0.5, 0.9]).tolist()
        self.classifier_ = self._classifier().fit(X.subset(self.train_positions_), y[self.train_positions_], comm=comm)
        self.domain_ = self.atom_errors_ = self.decision_ = None
        if comm is not None and comm.rank != 0:
            return self  # rank 0 fits the rest and writes the file
        data = X if loaded is None else loaded
        if domain is not None:
            self.domain_ = domain.fit(reference, calibration=data) if reference is not None else domain.fit(data)
        forces = getattr(data, "atom_force_error", None)
        head = self._atom_errors()
        if head is not None and forces is not None and np.isfinite(forces).sum() >= MIN_ATOM_ERRORS:
            self.atom_errors_ = head.fit(data, forces)
        self.decision_ = self._fit_decision(data, y, reference is None)
        return self

    def _decision_split(self, y, where):
        """(training positions, calibration positions): the decision's calibration
        structures, stratified by label, never seen by the network."""
        fraction = self.calibration_fraction
        if not 0 < fraction < 1:
            raise InputError(
                f"--calibration-fraction {fraction:g}: the share of the fitting set that sets the decision cut "
                "must lie in (0, 1) (e.g. 0.25)"
            )
        needed = min_reliable_calibration(self.false_alarm)
        n_reliable = int(y.sum())
        expected = int(round(fraction * n_reliable))
        if expected < needed:
            raise DecisionError(
                f"{where}: a false-alarm rate of {self.false_alarm:g} needs at least {needed} reliable calibration "
                f"structures; {fraction:g} of the fitting set's {n_reliable} reliable ones is {expected}: label "
                f"more structures, raise --false-alarm (e.g. {max(self.false_alarm, 1.0 / (expected + 1)):.2g}) "
                "or --calibration-fraction"
            )
        if len(y) - n_reliable < 4:
            # too few unreliable structures to stratify: the calibration split takes reliable ones only
            order = np.random.default_rng(self.seed).permutation(np.flatnonzero(y == 1))
            calib = np.sort(order[:expected])
            return np.setdiff1d(np.arange(len(y)), calib), calib
        return stratified_split(np.arange(len(y)), y, fraction, self.seed)

    def _fit_decision(self, data, y, self_reference) -> DecisionRule:
        if self.false_alarm is None:
            return DecisionRule(0.5, method="fixed")
        calibration = data.subset(self.calibration_positions_)
        scores = score(self._fitted_parts(), calibration)
        in_domain = scores.in_domain
        if self.domain_ is not None and self_reference:
            # the calibration structures are part of the domain's reference (it is the fitting
            # set): their own atoms would be their nearest neighbours. Their cross-fitted
            # novelty (against the other folds) is what an unseen structure would get.
            out_of_fold = self.domain_.out_of_fold_scores_[self.calibration_positions_]
            in_domain = out_of_fold <= self.domain_.threshold_
        return fit_rule(scores.p_network, in_domain, y[self.calibration_positions_], self.false_alarm)

    # ---- what the fitted probe says -------------------------------------------------------
    def scores(self, X):
        """``probe_base.scoring.Scores`` of every structure of ``X``."""
        return score(self._fitted_parts(), X)

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): P(unreliable), P(reliable) with the domain gate (0 outside)."""
        p = self.scores(X).p_reliable
        return np.stack([1 - p, p], axis=1)

    def predict(self, X) -> np.ndarray:
        """1 = reliable, 0 = flagged by the decision rule."""
        result = self.scores(X)
        return (~self.decision_.flags(result.p_reliable, result.in_domain)).astype(np.int64)

    def _fitted_parts(self) -> ProbeArtifact:
        if not hasattr(self, "classifier_"):
            raise InputError("this Probe is not fitted yet: call fit(X) first")
        return ProbeArtifact(self.classifier_, self.label_, {}, {"info": {}}, self.domain_, self.atom_errors_)

    def to_artifact(self, fingerprint: dict, info: dict | None = None) -> ProbeArtifact:
        """The fitted probe as a loaded ``.probe`` file would be (``info`` gains the
        decision rule and the label's fitting figures)."""
        parts = self._fitted_parts()
        parts.fingerprint = fingerprint
        parts.info = {"info": {**(info or {}), **self._fit_info()}}
        return parts

    def _fit_info(self) -> dict:
        info = {
            "label_offset": self.label_offset_,
            "fit_error_quantiles": self.fit_error_quantiles_,
            "epochs": [len(h) for h in self.classifier_.history_],
        }
        if self.decision_ is not None:
            info["decision"] = self.decision_.to_dict()
            info["decision_threshold"] = self.decision_.cut
        return info

    def save(self, path, fingerprint: dict, info: dict | None = None):
        """Write the fitted probe to a ``.probe`` file (atomically, hash-checked)."""
        artifact = self.to_artifact(fingerprint, info)
        save_probe(
            path,
            artifact.classifier,
            artifact.label,
            fingerprint,
            artifact.info["info"],
            artifact.domain,
            artifact.atom_errors,
        )
        return path
