"""``ProbeClassifier``: the scikit-learn-style estimator around ``ProbeNet``.

``fit(X, y)`` with X a ``FeatureSet`` (per-atom backbone features) and y = 1 for reliable,
0 for unreliable structures. Training reads cached features only (the backbone is never
re-run), uses a class-balanced loss, AdamW and early stopping on a validation split, and
is deterministic for a fixed ``seed``. By default it cross-fits (``cv_folds`` = 5): one
member per fold, each early-stopped on the fold it never trains on, their logits
averaged (a probe ensemble is nearly free at inference, unlike a backbone ensemble), and
the out-of-fold logits fit the calibration (temperature scaling after correcting the
class-balancing prior shift, or isotonic). So every labelled structure serves for
training, model selection and calibration. ``cv_folds=1`` is the paper's single split.

``fit(X, y, comm=...)`` with a ``probe_base.distributed.Group`` trains each member with
DistributedDataParallel over the ranks of a torchrun job (see that module); X may then be
a ``StoreView`` whose features are read from disk batch by batch.

The estimator holds the parameters and delegates the work: ``probe_base.net.inputs`` (extra
inputs, normalisation, batches, latent neighbours), ``probe_base.net.training``
(``MemberTrainer``), ``probe_base.net.ensemble`` (``MemberEnsemble``: the members at
inference) and ``probe_base.net.calibration`` (``Calibrator``). ``state_dict()`` /
``from_state()`` carry the fitted state to and from ``probe_base.artifact``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from probe_base.distributed import LOCAL
from probe_base.errors import LabelError
from probe_base.net.calibration import Calibrator
from probe_base.net.ensemble import MemberEnsemble
from probe_base.net.inputs import (
    EXTRAS,
    LatentNeighbours,
    extra_inputs,
    normalisation,
    pooled_features,
    streamed_normalisation,
)
from probe_base.net.model import ProbeNet
from probe_base.net.recipes import ATTENTIONS, AUTO_POOLING_ATOMS, NET_ATTENTIONS, PRESETS
from probe_base.net.stacked import StackedProbe
from probe_base.net.training import MemberTrainer

# names other modules import from here: the inputs moved to probe_base.net.inputs
__all__ = ["EXTRAS", "PRESETS", "ProbeClassifier", "pooled_features"]

LARGE_FOR_SELF_ATTENTION = 2000  # scoring a self-attention probe beyond this warns


def resolve_attention(attention, n_atoms) -> str:
    """``attention`` as fitted: "auto" -> "pooling" if any fitting structure has more than
    ``AUTO_POOLING_ATOMS`` atoms, else "self"."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
    if attention != "auto":
        return attention
    largest = int(np.max(n_atoms)) if len(n_atoms) else 0
    return "pooling" if largest > AUTO_POOLING_ATOMS else "self"


class ProbeClassifier(ClassifierMixin, BaseEstimator):
    """P(reliable) for each structure from frozen per-atom backbone features.

    A scikit-learn estimator: parameters are the ``__init__`` arguments (``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work), learned state ends in ``_``."""

    def __init__(
        self,
        hidden=32,
        heads=4,
        attention_layers=1,
        dropout=0.1,
        lr=2e-3,
        weight_decay=1e-2,
        batch_size=64,
        max_epochs=200,
        patience=10,
        val_fraction=0.2,
        calibration="temperature",
        calibration_fraction=0.2,
        selection="auroc",
        cv_folds=5,
        n_seeds=1,
        element_embedding=True,
        per_element_norm=False,
        extras=("energy_per_atom", "log_n_atoms"),
        latent_neighbors=5,
        seed=0,
        progress=False,
        attention="auto",
        queries=4,
    ):
        self.hidden = hidden
        self.heads = heads
        self.attention_layers = attention_layers
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.selection = selection
        self.cv_folds = cv_folds
        self.n_seeds = n_seeds
        self.element_embedding = element_embedding
        self.per_element_norm = per_element_norm
        self.extras = extras
        self.latent_neighbors = latent_neighbors
        self.seed = seed
        self.progress = progress
        # "self" (self-attention among all atoms, time quadratic in atoms), "pooling" (learned
        # queries over the atoms, linear in atoms) or "auto": self-attention unless the
        # fitting set has structures above AUTO_POOLING_ATOMS. Pooling held the AUROC where
        # measured (benchmarks/results/attention_*.md); self-attention stays for small
        # structures, where every published table was measured with it. Fitted: ``attention_``.
        self.attention = attention
        self.queries = queries  # learned queries of the pooling attention

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def new_net(self) -> ProbeNet:
        """An untrained member of this probe's shape."""
        return ProbeNet(
            self.n_features_in_,
            self.hidden,
            self.heads,
            self.attention_layers,
            self.dropout,
            len(self.extras),
            self.element_embedding,
            self.per_element_norm,
            self.attention_,
            self.queries,
        )

    # ---- inputs ------------------------------------------------------------------------
    def _extras(self, X, fitting=False, distance=None) -> np.ndarray:
        """The scalar inputs; ``distance``: the latent distances of ``X`` if already known."""
        return extra_inputs(
            X, self.extras, lambda: distance if distance is not None else self.latent_distance(X, exclude_self=fitting)
        )

    def latent_distance(self, X, exclude_self=False) -> np.ndarray:
        """Mean distance of each structure's pooled features to its k nearest fitting
        structures (a density signal in the backbone's own feature space). For the fitting
        structures themselves (``exclude_self``) the zero self-distance is left out."""
        check_is_fitted(self, "latent_neighbours_")
        if self.latent_neighbours_ is None:
            raise ValueError("this probe was fitted without the latent_distance input")
        pooled = pooled_features(X, self.pool_mean_, self.pool_std_)
        return self.latent_neighbours_.distance(pooled, exclude_self)

    # ---- fitting -----------------------------------------------------------------------
    def fit(self, X, y, comm=None):
        """``comm``: a ``probe_base.distributed.Group`` to train over torchrun's ranks."""
        comm = comm or LOCAL
        y = np.asarray(y).astype(np.int64)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} structures but y has {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise LabelError(
                "all fitting structures have the same label; choose another "
                "threshold (e.g. the median error) so both classes occur"
            )
        self.n_features_in_ = X.n_features
        self.attention_ = resolve_attention(self.attention, X.n_atoms)
        self.latent_neighbours_ = None
        if X.features is not None:
            self.pool_mean_ = X.features.mean(0)
            self.pool_std_ = X.features.std(0) + 1e-6
            fit_distance = None
            if "latent_distance" in self.extras:
                pooled = pooled_features(X, self.pool_mean_, self.pool_std_)
                self.latent_neighbours_ = LatentNeighbours(pooled, self.latent_neighbors)
                fit_distance = self.latent_distance(X, exclude_self=True)
            extras = self._extras(X, fitting=True, distance=fit_distance)
            self.norm_ = normalisation(X.features, X.atomic_numbers, extras, self.per_element_norm)
        else:  # a StoreView: features stay on disk
            if "latent_distance" in self.extras:
                raise ValueError(
                    "the latent_distance input needs every fitting structure's "
                    "features in memory; it is not available under torchrun"
                )
            extras = self._extras(X, fitting=True)
            self.pool_mean_, self.pool_std_, self.norm_ = streamed_normalisation(X, extras, self.per_element_norm, comm)
        self.classes_ = np.array([0, 1])
        self.calibrator_ = Calibrator.for_labels(y)
        trainer = MemberTrainer(
            self.new_net,
            self.norm_,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            selection=self.selection,
            progress=self.progress,
        )
        if self.cv_folds >= 2:
            trained = trainer.cross_fit(X, y, extras, self.cv_folds, self.n_seeds, self.seed, comm)
            self.out_of_fold_logits_ = trained.out_of_fold_logits
        else:
            trained = trainer.split_fit(
                X,
                y,
                extras,
                self.n_seeds,
                self.seed,
                self.val_fraction,
                self.calibration_fraction if self.calibration else None,
                comm,
            )
        self.ensemble_ = MemberEnsemble(trained.states, self.new_net, self.batch_size)
        self.history_ = trained.histories
        if self.calibration and self.cv_folds >= 2:
            self.calibrator_.fit(self.out_of_fold_logits_, y, self.calibration)
        elif self.calibration:  # the fused members' logits of the held-out calibration split
            held_out = trained.calibration_indices
            self.calibrator_.fit(self._logits(X.subset(held_out)), y[held_out], self.calibration)
        return self

    # ---- the fitted state, for probe_base.artifact ------------------------------------
    # what the CLI and callers read; the learned state itself lives in the parts
    members_ = property(lambda self: self.ensemble_.states, doc="each member's state dict")
    temperature_ = property(lambda self: self.calibrator_.temperature)
    isotonic_ = property(lambda self: self.calibrator_.isotonic, doc="(x, y) thresholds or None")
    prior_log_odds_ = property(lambda self: self.calibrator_.prior_log_odds)

    def state_dict(self) -> dict:
        """Everything prediction needs, as arrays, tensors, lists of them and scalars:
        ``attention`` (as fitted), ``n_features``, ``members`` (state dicts), ``pool_mean`` / ``pool_std``,
        ``knn_reference`` (with the latent-distance input), ``temperature``,
        ``prior_log_odds`` and ``isotonic_x`` / ``isotonic_y`` (isotonic calibration).
        ``classes_`` is always [0, 1]; the training diagnostics (``history_``,
        ``out_of_fold_logits_``, ``norm_``, which every member holds as buffers) are not
        part of it."""
        check_is_fitted(self, "ensemble_")
        state = {
            "attention": self.attention_,  # "auto" resolved at fit time
            "n_features": int(self.n_features_in_),
            "members": self.ensemble_.state_dict(),
            "pool_mean": np.asarray(self.pool_mean_, dtype=np.float32),
            "pool_std": np.asarray(self.pool_std_, dtype=np.float32),
        }
        if self.latent_neighbours_ is not None:
            state["knn_reference"] = self.latent_neighbours_.reference
        state.update(self.calibrator_.state_dict())
        return state

    @classmethod
    def from_state(cls, params: dict, state: dict) -> ProbeClassifier:
        """The fitted estimator of ``get_params()`` and ``state_dict()``. Refuses
        (ValueError) members that do not match the net ``params`` describe, a calibration
        that is not finite, and pooling moments holding NaN or inf."""
        estimator = cls(**params)
        estimator.n_features_in_ = int(state["n_features"])
        estimator.classes_ = np.array([0, 1])
        # "auto" was resolved at fit time and saved; files before that: the members' weights say to what
        pooling = any(key.startswith("pool.") for key in state["members"][0]) if state["members"] else False
        weights_say = "pooling" if pooling else "self"
        estimator.attention_ = state.get("attention", weights_say)
        if estimator.attention_ not in NET_ATTENTIONS:
            raise ValueError(f"fitted attention {estimator.attention_!r} is none of {NET_ATTENTIONS}")
        if estimator.attention_ != weights_say:
            raise ValueError(
                f"the fitted attention is {estimator.attention_!r} but the members are {weights_say}-attention nets"
            )
        if params.get("attention", "auto") not in ("auto", estimator.attention_):
            raise ValueError(
                f"the members are {estimator.attention_}-attention nets, the parameters say {params['attention']!r}"
            )
        members = MemberEnsemble.from_state(list(state["members"]), estimator.new_net, estimator.batch_size)
        estimator.calibrator_ = Calibrator.from_state(state)
        for name in ("pool_mean", "pool_std"):
            value = np.asarray(state[name])
            if not np.isfinite(value).all():
                raise ValueError(f"{name} holds NaN or inf")
            setattr(estimator, f"{name}_", value)
        reference = state.get("knn_reference")
        estimator.latent_neighbours_ = (
            None if reference is None else LatentNeighbours(reference, estimator.latent_neighbors)
        )
        estimator.ensemble_ = members
        return estimator

    # ---- prediction -------------------------------------------------------------------------
    def _stacked_members(self) -> StackedProbe:
        """All members fused into one network (built once; ``probe_base.scoring`` and the
        calculators score through it)."""
        check_is_fitted(self, "ensemble_")
        return self.ensemble_.stacked()

    def _logits(self, X, importance=False):
        """Member-averaged logits (and per-atom importance) of every structure in X: one
        structure runs unpadded through ``StackedProbe.one``, several in padded batches."""
        check_is_fitted(self, "ensemble_")
        if self.attention_ == "self" and len(X) and int(np.max(X.n_atoms)) > LARGE_FOR_SELF_ATTENTION:
            warnings.warn(
                f"a self-attention probe on a structure of {int(np.max(X.n_atoms))} atoms: "
                "its time grows with the square of the atom count (11 s at 10 000 atoms, a third of an AIMNet2 pass); "
                "refit with `probe fit --attention pooling` (linear in atoms) for structures "
                "this large",
                stacklevel=3,
            )
        return self.ensemble_.logits(X, self._extras(X), importance)

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): columns P(unreliable), P(reliable) (``classes_`` = [0, 1])."""
        logits = self._logits(X)  # refuses an unfitted estimator
        p = self.calibrator_.transform(logits)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X, threshold=0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def predict_with_importance(self, X):
        """P(reliable) per structure and per-atom importance (list of arrays), one pass.
        The network alone: ``probe_base.scoring`` adds the backbone's domain."""
        logits, importance = self._logits(X, importance=True)
        return self.calibrator_.transform(logits), importance

    def score(self, X, y) -> float:
        """AUROC of detecting unreliable structures (y = 0) by 1 - P(reliable)."""
        y = np.asarray(y)
        return float(roc_auc_score(1 - y, 1 - self.predict_proba(X)[:, 1]))
