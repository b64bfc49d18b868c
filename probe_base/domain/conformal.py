"""The domain's split-conformal threshold, and the error a domain model that cannot be
fitted raises.

The threshold is set on in-distribution calibration structures that are not in the
reference: with n calibration structures, the ceil((n + 1)(1 - alpha))-th smallest novelty.
A new structure exchangeable with them is then flagged with probability at most alpha
(Vovk et al. 2005; Angelopoulos & Bates 2021). ``DomainModel`` calls it in ``fit``; the
probe and the plugins ask ``min_calibration_size`` before training.
"""

from __future__ import annotations

import math

import numpy as np

from probe_base.errors import ProbeError


class DomainError(ProbeError):
    """A domain model that cannot be fitted as asked (alpha, calibration size, reference)."""


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration structures for which a finite conformal threshold exists:
    ceil((n + 1)(1 - alpha)) <= n  <=>  n >= 1/alpha - 1."""
    return int(math.ceil(1.0 / alpha - 1.0 - 1e-9))


def conformal_threshold(scores: np.ndarray, alpha: float) -> float:
    """The split-conformal quantile: P(new score > threshold) <= alpha for a new score
    exchangeable with ``scores``."""
    if not 0.0 < alpha < 1.0:
        raise DomainError(f"alpha must lie in (0, 1), not {alpha!r} (e.g. --alpha 0.02)")
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    needed = min_calibration_size(alpha)
    if n < needed:
        raise DomainError(
            f"alpha = {alpha:g} needs at least {needed} in-distribution calibration structures, "
            f"only {n} are available: use more labelled structures or a larger --alpha "
            f"(with {n} structures the smallest possible alpha is {1.0 / (n + 1):.3g})"
        )
    rank = int(math.ceil((n + 1) * (1.0 - alpha)))  # 1-based
    return float(scores[rank - 1])
