"""Reliability baselines scored on the same structures as the probe.

Each returns a risk score: higher = trusted less."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .classifier import pooled_features


def ensemble_energy_std(data) -> np.ndarray | None:
    """Standard deviation of the members' total energies (needs several model files)."""
    if data.member_energies is None:
        return None
    return data.member_energies.std(axis=1)


def ensemble_force_std(data) -> np.ndarray | None:
    """Mean per-atom standard deviation of the members' force vectors."""
    return data.member_force_std


def latent_distance(fit_data, eval_data, k=5) -> np.ndarray:
    """Mean distance to the k nearest fitting structures in pooled feature space."""
    mean = fit_data.features.mean(0)
    std = fit_data.features.std(0) + 1e-6
    reference = pooled_features(fit_data, mean, std)
    knn = NearestNeighbors(n_neighbors=min(k, len(reference))).fit(reference)
    distances, _ = knn.kneighbors(pooled_features(eval_data, mean, std))
    return distances.mean(axis=1)


def random_scores(n, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def all_baselines(fit_data, eval_data, seed=0) -> dict[str, np.ndarray]:
    """Every baseline that the data allows (latent distance needs the fitting set)."""
    scores = {}
    if (s := ensemble_energy_std(eval_data)) is not None:
        scores["ensemble E std"] = s
    if (s := ensemble_force_std(eval_data)) is not None:
        scores["ensemble F std"] = s
    if fit_data is not None:
        scores["latent distance"] = latent_distance(fit_data, eval_data)
    scores["random"] = random_scores(len(eval_data), seed)
    return scores
