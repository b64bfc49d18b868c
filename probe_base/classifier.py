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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .distributed import LOCAL
from .errors import LabelError
from .model import ProbeNet, StackedProbe

EXTRAS = ("energy_per_atom", "log_n_atoms", "latent_distance")

PRESETS = {
    # what isayevlab/PROBE does: last layer, no element identity, loss-based selection
    "paper": dict(hidden=128, heads=4, attention_layers=1, dropout=0.1, element_embedding=False,
                  attention="self",
                  selection="loss", cv_folds=1, n_seeds=1, extras=("energy_per_atom", "log_n_atoms"),
                  lr=1e-3, batch_size=64, patience=20),
}


def pooled_features(X, mean, std) -> np.ndarray:
    """Mean over atoms of standardised features: one vector per structure."""
    z = (X.features - mean) / std
    sums = np.add.reduceat(z, X.offsets[:-1], axis=0) if len(X) else np.zeros((0, z.shape[1]))
    return sums / X.n_atoms[:, None]


class ProbeClassifier(ClassifierMixin, BaseEstimator):
    """P(reliable) for each structure from frozen per-atom backbone features.

    A scikit-learn estimator: parameters are the ``__init__`` arguments (``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work), learned state ends in ``_``."""

    def __init__(self, hidden=32, heads=4, attention_layers=1, dropout=0.1, lr=2e-3,
                 weight_decay=1e-2, batch_size=64, max_epochs=200, patience=10,
                 val_fraction=0.2, calibration="temperature", calibration_fraction=0.2,
                 selection="auroc", cv_folds=5, n_seeds=1, element_embedding=True,
                 per_element_norm=False, extras=("energy_per_atom", "log_n_atoms"),
                 latent_neighbors=5, seed=0, progress=False, attention="self", queries=4):
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
        # "self" (self-attention among all atoms, quadratic; the default) or "pooling" (learned
        # queries over the atoms, linear in atoms: for large structures). Pooling held the
        # AUROC on toy and MACE ethanol splits (benchmarks/results/attention_*.md) but lost
        # it elsewhere (tests/practice_toy.py set: 0.945 -> 0.831; AIMNet2 xTB ethanol energy
        # label 0.563 -> 0.532), so it is not the default.
        self.attention = attention
        self.queries = queries  # learned queries of the pooling attention

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ---- inputs ------------------------------------------------------------------------
    def _extras(self, X, fitting=False, distance=None) -> np.ndarray:
        """The scalar inputs; ``distance``: the latent distances of ``X`` if already known."""
        columns = []
        for name in self.extras:
            if name == "energy_per_atom":
                columns.append(X.energy_pred / X.n_atoms)
            elif name == "log_n_atoms":
                columns.append(np.log(X.n_atoms))
            elif name == "latent_distance":
                columns.append(distance if distance is not None
                               else self.latent_distance(X, exclude_self=fitting))
            else:
                raise ValueError(f"unknown extra input {name!r}; choose from {EXTRAS}")
        return np.stack(columns, axis=1) if columns else np.zeros((len(X), 0))

    def latent_distance(self, X, exclude_self=False) -> np.ndarray:
        """Mean distance of each structure's pooled features to its k nearest fitting
        structures (a density signal in the backbone's own feature space). For the fitting
        structures themselves (``exclude_self``) the zero self-distance is left out."""
        pooled = pooled_features(X, self.pool_mean_, self.pool_std_)
        k = self.latent_neighbors + int(exclude_self)
        distances, _ = self._knn_.kneighbors(pooled, n_neighbors=k)
        return distances[:, int(exclude_self):].mean(axis=1)

    def _batch(self, X, extras, indices, device="cpu"):
        feats, z, mask = X.padded(indices)
        return tuple(torch.from_numpy(a).to(device) for a in
                     (feats, z, mask, extras[indices].astype(np.float32)))

    def _batches(self, X, extras, indices, shuffle_generator=None):
        order = np.asarray(indices)
        if shuffle_generator is not None:
            order = order[shuffle_generator.permutation(len(order))]
        for start in range(0, len(order), self.batch_size):
            yield order[start:start + self.batch_size]

    # ---- fitting -----------------------------------------------------------------------
    def fit(self, X, y, comm=None):
        """``comm``: a ``probe_base.distributed.Group`` to train over torchrun's ranks."""
        comm = comm or LOCAL
        y = np.asarray(y).astype(np.int64)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} structures but y has {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise LabelError("all fitting structures have the same label; choose another "
                             "threshold (e.g. the median error) so both classes occur")
        self._nets_cache = None
        self.n_features_in_ = X.n_features
        if X.features is not None:
            self.pool_mean_ = X.features.mean(0)
            self.pool_std_ = X.features.std(0) + 1e-6
            fit_distance = None
            if "latent_distance" in self.extras:
                self._fit_knn(X)
                fit_distance = self.latent_distance(X, exclude_self=True)
            extras = self._extras(X, fitting=True, distance=fit_distance)
            self.norm_ = _normalisation(X.features, X.atomic_numbers, extras, self.per_element_norm)
        else:  # a StoreView: features stay on disk
            if "latent_distance" in self.extras:
                raise ValueError("the latent_distance input needs every fitting structure's "
                                 "features in memory; it is not available under torchrun")
            extras = self._extras(X, fitting=True)
            self.pool_mean_, self.pool_std_, self.norm_ = _streamed_normalisation(
                X, extras, self.per_element_norm, comm)
        self.prior_log_odds_ = float(np.log(y.mean() / (1 - y.mean())))
        self.members_, self.history_ = [], []
        self.classes_ = np.array([0, 1])
        self.temperature_ = 1.0
        self.isotonic_ = None
        if self.cv_folds >= 2:
            self._fit_cross(X, y, extras, comm)
        else:
            self._fit_split(X, y, extras, comm)
        return self

    def _fit_cross(self, X, y, extras, comm=LOCAL):
        """Cross-fitting: member k early-stops on fold k and never sees it; the
        out-of-fold logits calibrate the averaged probe. All labelled data trains."""
        _check_class_sizes(y, self.cv_folds)
        folds = StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y)
        out_of_fold = np.zeros(len(y))
        jobs = [(k, s, train, val) for k, (train, val) in enumerate(folds) for s in range(self.n_seeds)]
        for k, s, train_idx, val_idx in tqdm(jobs, desc="probe members", disable=not self.progress):
            state, history = self._fit_one(X, y, extras, train_idx, val_idx, self.seed + 1000 * s + k, comm)
            self.members_.append(state)
            self.history_.append(history)
            net = self.new_net()
            net.load_state_dict(state)
            out_of_fold[val_idx] += self._net_logits(net, X, extras, val_idx, comm) / self.n_seeds
        self.out_of_fold_logits_ = out_of_fold
        if self.calibration:
            self._calibrate(out_of_fold, y)

    def _fit_split(self, X, y, extras, comm=LOCAL):
        """One train/validation split (+ a calibration split), as the paper's code does."""
        indices = np.arange(len(X))
        calib_idx = np.array([], dtype=np.int64)
        if self.calibration:
            indices, calib_idx = _stratified_split(indices, y, self.calibration_fraction, self.seed)
        train_idx, val_idx = _stratified_split(indices, y, self.val_fraction, self.seed + 1)
        for member_seed in tqdm(range(self.seed, self.seed + self.n_seeds), desc="probe members",
                                disable=not self.progress or self.n_seeds == 1):
            state, history = self._fit_one(X, y, extras, train_idx, val_idx, member_seed, comm)
            self.members_.append(state)
            self.history_.append(history)
        if self.calibration:
            self._calibrate(self._logits(X.subset(calib_idx)), y[calib_idx])

    def _fit_knn(self, X_fit):
        pooled = pooled_features(X_fit, self.pool_mean_, self.pool_std_)
        self.knn_reference_ = pooled.astype(np.float32)
        self._knn_ = NearestNeighbors(n_neighbors=self.latent_neighbors).fit(self.knn_reference_)

    def new_net(self):
        return ProbeNet(self.n_features_in_, self.hidden, self.heads, self.attention_layers,
                        self.dropout, len(self.extras), self.element_embedding,
                        self.per_element_norm, self.attention, self.queries)

    def _fit_one(self, X, y, extras, train_idx, val_idx, seed, comm=LOCAL):
        """One member. Under torchrun (``comm`` a Group) every rank runs this with the same
        arguments: the same shuffled order, its share of each step's batch, gradients
        averaged by DDP, validation logits gathered, so all ranks stop together."""
        torch.manual_seed(seed)
        generator = np.random.default_rng(seed)
        net = self.new_net()
        net.load_state_dict({**net.state_dict(), **self.norm_})
        model = comm.wrap(net.to(comm.device))
        comm.seed_rank(seed)
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n_pos = y[train_idx].sum()
        pos_weight = torch.tensor((len(train_idx) - n_pos) / max(n_pos, 1), dtype=torch.float32)
        target = torch.from_numpy(y.astype(np.float32))
        on_device = target.to(comm.device), pos_weight.to(comm.device)
        batch_size = comm.per_rank(self.batch_size)
        best, best_state, stale, history = -np.inf, None, 0, []
        bar = tqdm(range(self.max_epochs), desc=f"probe fit (seed {seed})", disable=not self.progress, leave=False)
        for epoch in bar:
            model.train()
            total = 0.0
            order = comm.even_share(np.asarray(train_idx)[generator.permutation(len(train_idx))])
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                feats, z, mask, ex = self._batch(X, extras, idx, comm.device)
                logit, _ = model(feats, z, mask, ex)
                loss = F.binary_cross_entropy_with_logits(logit, on_device[0][idx], pos_weight=on_device[1])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            total = float(comm.all_sum(total))
            val_logits = self._net_logits(net, X, extras, val_idx, comm)
            val_loss = float(F.binary_cross_entropy_with_logits(
                torch.from_numpy(val_logits), target[val_idx], pos_weight=pos_weight))
            val_auroc = float(roc_auc_score(y[val_idx], val_logits))
            history.append({"epoch": epoch, "train_loss": total / len(train_idx),
                            "val_loss": val_loss, "val_auroc": val_auroc})
            score = val_auroc if self.selection == "auroc" else -val_loss
            if score > best + 1e-6:
                best, stale = score, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
            bar.set_postfix(val_auroc=f"{val_auroc:.3f}", best=f"{best:.3f}", refresh=False)
        return best_state, history

    def _net_logits(self, net, X, extras, indices, comm=LOCAL):
        """Logits of ``net`` for ``indices``: each rank computes its share, then all gather."""
        share = self._local_logits(net.to(comm.device), X, extras, comm.share(indices), device=comm.device)
        return comm.gather(share, len(indices))

    @torch.no_grad()
    def _local_logits(self, net, X, extras, indices, importance=False, device="cpu"):
        net.eval()
        logits, importances = [], []
        for idx in self._batches(X, extras, indices):
            feats, z, mask, ex = self._batch(X, extras, idx, device)
            logit, imp = net(feats, z, mask, ex, return_importance=importance)
            logits.append(logit.cpu().numpy())
            if importance:
                importances.extend(row[:count].numpy() for row, count in zip(imp, X.n_atoms[idx]))
        out = np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)
        return (out, importances) if importance else out

    def _nets(self):
        nets = []
        for state in self.members_:
            net = self.new_net()
            net.load_state_dict({**net.state_dict(), **state})  # files older than a buffer: its default
            nets.append(net.eval())
        return nets

    def _cached_nets(self):
        if getattr(self, "_nets_cache", None) is None or len(self._nets_cache) != len(self.members_):
            self._nets_cache = self._nets()
            self._stacked = None
        return self._nets_cache

    def _stacked_members(self) -> StackedProbe:
        """All members fused into one network, built once: scoring one structure per MD
        step pays the per-module Python overhead once, not once per member."""
        nets = self._cached_nets()
        if getattr(self, "_stacked", None) is None:
            self._stacked = StackedProbe(nets)
        return self._stacked

    def _logits(self, X, importance=False):
        """Member-averaged logits (and per-atom importance) of every structure in X (the
        fused members run in inference mode)."""
        extras = self._extras(X)
        stacked = self._stacked_members()
        if len(X) == 1 and X.features is not None:  # a calculator's step: no padding, no batching
            feats = torch.from_numpy(np.ascontiguousarray(X.features, dtype=np.float32))[None]
            z = torch.from_numpy(np.asarray(X.atomic_numbers, dtype=np.int64))[None]
            logit, imp = stacked.one(feats, z, torch.from_numpy(extras.astype(np.float32)), importance)
            out = logit.mean(0).numpy()
            return (out, [imp[0].numpy()]) if importance else out
        logits, importances = [], []
        for idx in self._batches(X, extras, np.arange(len(X))):
            logit, imp = stacked(*self._batch(X, extras, idx), return_importance=importance)
            logits.append(logit.mean(0).numpy())
            if importance:
                importances.extend(row[:count].numpy() for row, count in zip(imp, X.n_atoms[idx]))
        out = np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)
        return (out, importances) if importance else out

    # ---- calibration -----------------------------------------------------------------------
    def _calibrated_log_odds(self, logits):
        return (logits + self.prior_log_odds_) / self.temperature_

    def _calibrate(self, logits, y):
        if self.calibration not in ("temperature", "isotonic"):
            raise ValueError(f"calibration must be 'temperature', 'isotonic' or None, not {self.calibration!r}")
        shifted = logits + self.prior_log_odds_

        def nll(log_t):
            z = shifted / np.exp(log_t)
            return float(np.mean(np.logaddexp(0, z) - y * z))

        self.temperature_ = float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))
        if self.calibration == "isotonic":
            p = _sigmoid(shifted / self.temperature_)
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            self.isotonic_ = (iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64))

    # ---- prediction -------------------------------------------------------------------------
    def _probability(self, logits):
        p = _sigmoid(self._calibrated_log_odds(logits))
        if self.isotonic_ is not None:
            p = np.interp(p, *self.isotonic_)
        return p

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2): columns P(unreliable), P(reliable) (``classes_`` = [0, 1])."""
        check_is_fitted(self, "members_")
        p = self._probability(self._logits(X))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X, threshold=0.5) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def predict_with_importance(self, X):
        """P(reliable) per structure and per-atom importance (list of arrays), one pass.
        The network alone: ``probe_base.scoring`` adds the backbone's domain."""
        check_is_fitted(self, "members_")
        logits, importance = self._logits(X, importance=True)
        return self._probability(logits), importance

    def score(self, X, y) -> float:
        """AUROC of detecting unreliable structures (y = 0) by 1 - P(reliable)."""
        y = np.asarray(y)
        return float(roc_auc_score(1 - y, 1 - self.predict_proba(X)[:, 1]))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _check_class_sizes(y, needed):
    smaller = int(min(np.bincount(y, minlength=2)))
    if smaller < needed:
        raise LabelError(
            f"only {smaller} structures in the smaller class; PROBE needs at least {needed} of each: "
            "use more data or a threshold nearer the median error"
        )


def _stratified_split(indices, y, fraction, seed):
    """(rest, held_out) with ``fraction`` of ``indices`` held out, stratified by y."""
    labels = y[indices]
    _check_class_sizes(labels, 2)
    rest, held = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(rest), np.sort(held)


def _standardised_range(extras, norm):
    """(low, high) of the standardised extras over the fitting set (clamp bounds)."""
    low = (extras.min(0) - norm["extras_mean"].numpy()) / norm["extras_std"].numpy()
    high = (extras.max(0) - norm["extras_mean"].numpy()) / norm["extras_std"].numpy()
    return torch.from_numpy(low.astype(np.float32)), torch.from_numpy(high.astype(np.float32))


def _normalisation(feats, zs, extras, per_element):
    out = {}
    if per_element:
        mean = np.zeros((119, feats.shape[1]), dtype=np.float32)
        std = np.ones((119, feats.shape[1]), dtype=np.float32)
        global_std = feats.std(0) + 1e-6
        for z in np.unique(zs):
            rows = feats[zs == z]
            mean[z] = rows.mean(0)
            std[z] = rows.std(0) + 1e-6 if len(rows) > 1 else global_std
        out["feature_mean"], out["feature_std"] = torch.from_numpy(mean), torch.from_numpy(std)
    else:
        out["feature_mean"] = torch.from_numpy(feats.mean(0).astype(np.float32))
        out["feature_std"] = torch.from_numpy((feats.std(0) + 1e-6).astype(np.float32))
    out["extras_mean"] = torch.from_numpy(extras.mean(0).astype(np.float32))
    out["extras_std"] = torch.from_numpy((extras.std(0) + 1e-6).astype(np.float32))
    out["extras_low"], out["extras_high"] = _standardised_range(extras, out)
    return out


def _streamed_normalisation(X, extras, per_element, comm):
    """What ``fit`` computes from in-memory features (pooling mean/std and the net's
    normalisation buffers), from a ``StoreView`` read block by block: each rank sums over
    its share of the structures, the sums are added across ranks (float64)."""
    n_features = X.n_features
    n_z = 119 if per_element else 1
    sums = np.zeros((3, n_z, n_features))  # count, sum, sum of squares; per element if asked
    totals = np.zeros((3, n_features))
    for feats, zs in X.blocks(comm.share(np.arange(len(X)))):
        feats = feats.astype(np.float64)
        totals += [np.full(n_features, len(feats)), feats.sum(0), (feats ** 2).sum(0)]
        if per_element:
            for z in np.unique(zs):
                rows = feats[zs == z]
                sums[:, z] += [np.full(n_features, len(rows)), rows.sum(0), (rows ** 2).sum(0)]
    totals, sums = comm.all_sum(totals), comm.all_sum(sums)

    def moments(count, total, squares):
        mean = total / np.maximum(count, 1)
        return mean, np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean ** 2, 0)) + 1e-6

    mean, std = moments(*totals)
    out = {}
    if per_element:
        element_mean, element_std = moments(*sums)
        counts = sums[0, :, 0]
        element_mean[counts == 0], element_std[counts == 0] = 0.0, 1.0
        element_std[counts == 1] = std
        out["feature_mean"] = torch.from_numpy(element_mean.astype(np.float32))
        out["feature_std"] = torch.from_numpy(element_std.astype(np.float32))
    else:
        out["feature_mean"] = torch.from_numpy(mean.astype(np.float32))
        out["feature_std"] = torch.from_numpy(std.astype(np.float32))
    out["extras_mean"] = torch.from_numpy(extras.mean(0).astype(np.float32))
    out["extras_std"] = torch.from_numpy((extras.std(0) + 1e-6).astype(np.float32))
    out["extras_low"], out["extras_high"] = _standardised_range(extras, out)
    return mean.astype(np.float32), std.astype(np.float32), out
