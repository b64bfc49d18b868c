"""Reliability baselines scored on the same structures as the probe.

Each returns a risk score: higher = trusted less. The label-free single-pass ones read the
same captured per-atom features as the probe and a *reference* set (the backbone's
training set when the probe was fitted with ``--reference``, else the fitting set):

- LLPR, last-layer prediction rigidity (Bigi et al., MLST 2024; metatrain): structure
  features f = sum over atoms of the standardised per-atom features (the energy is a sum
  of per-atom readouts), covariance C = F^T F over the reference structures, variance
  s^2 f^T (C + zeta I)^-1 f (the paper's alpha^2); s^2 and zeta by Gaussian NLL of the fitting set's
  energy errors (the paper's calibration). Only zeta changes the ranking.
- GMM (Zhu et al., JCP 2023; nequip): negative log-likelihood of per-atom features under
  a Gaussian mixture fitted on reference atoms; a structure scores its worst atom.
- latent distance: mean distance of the pooled features to the k nearest reference structures.
- ensemble energy / force standard deviation where several backbones were run.
"""

from __future__ import annotations

import numpy as np

from probe_base.domain.neighbours import ExactNeighbors
from probe_base.net.classifier import pooled_features

GMM_COMPONENTS = 8
GMM_MAX_ATOMS = 20_000


def ensemble_energy_std(data) -> np.ndarray | None:
    """Standard deviation of the members' total energies (needs several model files)."""
    if data.member_energies is None:
        return None
    return data.member_energies.std(axis=1)


def ensemble_force_std(data) -> np.ndarray | None:
    """Mean per-atom standard deviation of the members' force vectors."""
    return data.member_force_std


def _moments(reference):
    return reference.features.mean(0), reference.features.std(0) + 1e-6


def _summed_features(X, mean, std):
    z = (X.features - mean) / std
    return np.add.reduceat(z.astype(np.float64), X.offsets[:-1], axis=0)


class LLPR:
    """Last-layer prediction rigidity on summed per-atom features."""

    def fit(self, reference, calibration=None):
        self.mean_, self.std_ = _moments(reference)
        F = _summed_features(reference, self.mean_, self.std_)
        self.covariance_ = F.T @ F
        scale = np.trace(self.covariance_) / len(self.covariance_)
        grid = scale * np.logspace(-8, 0, 17)
        errors = None
        if calibration is not None and np.isfinite(getattr(calibration, "energy_ref", np.nan)).all():
            errors = calibration.energy_pred - calibration.energy_ref
        if errors is None or len(errors) < 5:
            self.zeta_, self.variance_scale_ = float(grid[8]), 1.0
            return self
        f_cal = _summed_features(calibration, self.mean_, self.std_)
        best = None
        for zeta in grid:
            u = self._rigidity(f_cal, zeta)
            scale = float(np.mean(errors**2 / u))
            nll = float(np.mean(np.log(scale * u) + errors**2 / (scale * u)))
            if best is None or nll < best[0]:
                best = (nll, float(zeta), scale)
        _, self.zeta_, self.variance_scale_ = best
        return self

    def _rigidity(self, f, zeta):
        inverse = np.linalg.inv(self.covariance_ + zeta * np.eye(len(self.covariance_)))
        return np.maximum(np.einsum("ij,jk,ik->i", f, inverse, f), 1e-30)

    def std(self, X) -> np.ndarray:
        """Predicted energy standard deviation, eV."""
        f = _summed_features(X, self.mean_, self.std_)
        return np.sqrt(self.variance_scale_ * self._rigidity(f, self.zeta_))


class GMM:
    """Worst per-atom negative log-likelihood under a Gaussian mixture on reference atoms
    (full covariances on the standardised features, at most ``GMM_MAX_ATOMS`` atoms)."""

    def fit(self, reference, seed=0):
        from sklearn.mixture import GaussianMixture

        self.mean_, self.std_ = _moments(reference)
        rows = np.arange(len(reference.features))
        if len(rows) > GMM_MAX_ATOMS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, GMM_MAX_ATOMS, replace=False))
        train = (reference.features[rows] - self.mean_) / self.std_
        self.gmm_ = GaussianMixture(
            min(GMM_COMPONENTS, len(rows)), covariance_type="full", reg_covar=1e-3, max_iter=50, random_state=seed
        ).fit(train)
        return self

    def nll(self, X) -> np.ndarray:
        atom = -self.gmm_.score_samples((X.features - self.mean_) / self.std_)
        return np.maximum.reduceat(atom, X.offsets[:-1])


class LatentDistance:
    """Mean distance to the k nearest reference structures in pooled feature space."""

    def fit(self, reference, k=5):
        self.mean_, self.std_ = _moments(reference)
        pooled = pooled_features(reference, self.mean_, self.std_)
        self.k_, self.knn_ = k, ExactNeighbors(pooled)
        return self

    def distance(self, X) -> np.ndarray:
        return self.knn_.mean_distance(pooled_features(X, self.mean_, self.std_), self.k_)


class ReferenceBaselines:
    """The label-free single-pass baselines, fitted once on a reference set; ``score(X)``
    gives their risk scores (with the ensemble's where members were run)."""

    def fit(self, reference, calibration=None, seed=0):
        self.seed = seed
        self.fitted_ = {}
        if reference is not None:
            self.fitted_ = {
                "LLPR": LLPR().fit(reference, calibration).std,
                "GMM NLL": GMM().fit(reference, seed).nll,
                "latent distance": LatentDistance().fit(reference).distance,
            }
        return self

    def score(self, X) -> dict[str, np.ndarray]:
        scores = {}
        if (s := ensemble_energy_std(X)) is not None:
            scores["ensemble E std"] = s
        if (s := ensemble_force_std(X)) is not None:
            scores["ensemble F std"] = s
        for name, scorer in self.fitted_.items():
            scores[name] = scorer(X)
        scores["random"] = random_scores(len(X), self.seed)
        return scores


def random_scores(n, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def all_baselines(reference, eval_data, seed=0, calibration=None) -> dict[str, np.ndarray]:
    """Every baseline that the data allows (the single-pass ones need a reference set).
    ``calibration``: labelled in-distribution structures for LLPR's variance scale and zeta."""
    return ReferenceBaselines().fit(reference, calibration, seed).score(eval_data)
