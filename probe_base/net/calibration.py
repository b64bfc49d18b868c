"""``Calibrator``: the probe's averaged logits -> calibrated P(reliable).

The members train with a class-balanced loss, which shifts their log-odds by the prior
of the fitting labels; the calibrator adds that prior back, then fits a temperature
(the NLL-minimising one) and, for ``"isotonic"``, a monotone map on top of the tempered
probability. Unfitted, it only corrects the prior (temperature 1).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression

from probe_base.net.recipes import CALIBRATIONS as METHODS


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class Calibrator:
    """``prior_log_odds``: log(n reliable / n unreliable) of the labels the members were
    trained on; ``isotonic``: (x thresholds, y thresholds) or None."""

    def __init__(self, prior_log_odds: float, temperature: float = 1.0, isotonic=None):
        self.prior_log_odds = float(prior_log_odds)
        self.temperature = float(temperature)
        self.isotonic = isotonic

    @classmethod
    def for_labels(cls, y) -> Calibrator:
        """The uncalibrated calibrator of members trained on labels ``y``."""
        return cls(float(np.log(y.mean() / (1 - y.mean()))))

    def fit(self, logits, y, method="temperature") -> Calibrator:
        """Fit on held-out ``logits`` (out-of-fold or a calibration split) and labels ``y``."""
        if method not in METHODS:
            raise ValueError(f"calibration must be 'temperature', 'isotonic' or None, not {method!r}")
        shifted = logits + self.prior_log_odds

        def nll(log_t):
            z = shifted / np.exp(log_t)
            return float(np.mean(np.logaddexp(0, z) - y * z))

        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))
        self.isotonic = None
        if method == "isotonic":
            p = sigmoid(shifted / self.temperature)
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            self.isotonic = (iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64))
        return self

    def log_odds(self, logits):
        """Prior-corrected, tempered log-odds (before any isotonic map)."""
        return (logits + self.prior_log_odds) / self.temperature

    def transform(self, logits) -> np.ndarray:
        """P(reliable) of each logit."""
        p = sigmoid(self.log_odds(logits))
        if self.isotonic is not None:
            p = np.interp(p, *self.isotonic)
        return p

    def state_dict(self) -> dict:
        """Scalars, plus the isotonic thresholds as float64 arrays when there is a map."""
        state = {"temperature": self.temperature, "prior_log_odds": self.prior_log_odds}
        if self.isotonic is not None:
            state["isotonic_x"], state["isotonic_y"] = self.isotonic
        return state

    @classmethod
    def from_state(cls, state) -> Calibrator:
        """Refuses (ValueError) a temperature that is not positive and finite, a prior that
        is not finite, or isotonic thresholds holding NaN or inf."""
        temperature = _finite("temperature", state["temperature"], positive=True)
        prior = _finite("prior_log_odds", state["prior_log_odds"])
        isotonic = None
        if "isotonic_x" in state:
            isotonic = tuple(np.asarray(state[name]) for name in ("isotonic_x", "isotonic_y"))
            for name, values in zip(("isotonic_x", "isotonic_y"), isotonic):
                if not np.isfinite(values).all():
                    raise ValueError(f"{name} holds NaN or inf")
        return cls(prior, temperature, isotonic)


def _finite(name, value, positive=False) -> float:
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} is {value}, not {'a positive finite number' if positive else 'a finite number'}")
    return value
