"""When PROBE calls a prediction unreliable: one rule, stored in the ``.probe``, used by
``predict``, ``select``, ``evaluate``, the report, the ASE calculators, the MD watchdog
and the MD engines alike.

A prediction is flagged when it is outside the backbone's domain, when P(reliable) is
below the rule's ``cut``, or when P(reliable) is not a finite number (a damaged input
never reads as reliable: fail closed).

``probe fit`` chooses the cut by split-conformal calibration on structures that trained
neither the network nor its temperature: with n *reliable* calibration structures and a
false-alarm rate r (``false_alarm``), the cut is the k-th smallest of their (domain-gated)
P(reliable), k = floor(r (n + 1)), and a prediction is flagged when P < cut. For a new reliable
structure exchangeable with them, P(flagged) = (k - 1 + ties) / (n + 1) <= r
(Vovk et al. 2005; Angelopoulos & Bates 2021, section 1), averaged over calibration draws.
The same rule cuts every label-free baseline at the same rate on the same structures
(``baseline_cut``), so a decision table compares like with like.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from probe_base.errors import ProbeError

#: the defaults of ``probe fit`` (the CLI reads them here): the decision's false-alarm rate,
#: the share of the fitting set that sets its cut, the domain test's false-alarm rate (``alpha``: the only meaning of that name here)
DEFAULT_FALSE_ALARM = 0.05
DEFAULT_CALIBRATION_FRACTION = 0.25
DEFAULT_ALPHA = 0.02


class DecisionError(ProbeError, ValueError):
    """A decision rule that cannot be set as asked (rate, too few calibration structures)."""


def min_reliable_calibration(false_alarm: float) -> int:
    """The fewest reliable calibration structures for which the rule can flag anything at
    rate ``false_alarm``: floor(r (n + 1)) >= 1  <=>  n >= 1/r - 1 (r = ``false_alarm``)."""
    return int(math.ceil(1.0 / false_alarm - 1.0 - 1e-9))


def _check_rate(false_alarm):
    if not (isinstance(false_alarm, (int, float)) and 0.0 < false_alarm < 1.0):
        raise DecisionError(f"--false-alarm {false_alarm!r}: must lie in (0, 1), e.g. 0.05 (5 % of reliable flagged)")


def _check_size(n, false_alarm, what):
    needed = min_reliable_calibration(false_alarm)
    if n < needed:
        raise DecisionError(
            f"{what}: a false-alarm rate of {false_alarm:g} needs at least {needed} reliable calibration "
            f"structures, only {n} are available: label more structures, raise --false-alarm "
            f"(with {n} the smallest is {1.0 / (n + 1):.3g}) or a larger --calibration-fraction"
        )


def conformal_cut(p_reliable_of_reliable, false_alarm: float, what="calibration set") -> float:
    """The P(reliable) below which a prediction is flagged, so that a reliable structure
    exchangeable with these is flagged with probability <= ``false_alarm``."""
    _check_rate(false_alarm)
    p = np.sort(np.nan_to_num(np.asarray(p_reliable_of_reliable, dtype=np.float64), nan=0.0))
    _check_size(len(p), false_alarm, what)
    k = int(math.floor(false_alarm * (len(p) + 1) + 1e-12))
    return float(p[k - 1])


def baseline_cut(scores_of_reliable, false_alarm: float, what="calibration set") -> float:
    """A label-free score (higher = less reliable) is flagged above this value: the same
    split-conformal rule as ``conformal_cut``, so it flags reliable structures at the same
    rate."""
    _check_rate(false_alarm)
    s = np.sort(np.asarray(scores_of_reliable, dtype=np.float64))
    _check_size(len(s), false_alarm, what)
    rank = int(math.ceil((len(s) + 1) * (1.0 - false_alarm) - 1e-12))  # 1-based
    return float(s[rank - 1])


def flags_above(scores, cut) -> np.ndarray:
    """A label-free score's flags at ``cut``; a non-finite score is flagged (fail closed)."""
    scores = np.asarray(scores, dtype=np.float64)
    return ~(scores <= cut)


@dataclass
class DecisionRule:
    """``cut``: flag P(reliable) < cut. ``false_alarm``: the rate it was chosen for (None:
    a cut the user set). ``method``: "conformal" (``probe fit``), "sgr" / "crc" (``probe
    calibrate``, a selective-risk target), "fixed" (a user's number, no rate) or "legacy"
    (files before the rule: 0.5). ``n_calibration``: the structures it was chosen on;
    ``calibration_flagged``: the share of those reliable ones it flags (measured there)."""

    cut: float = 0.5
    false_alarm: float | None = None
    method: str = "legacy"
    n_calibration: int = 0
    calibration_flagged: float | None = None
    target_risk: float | None = None

    def __post_init__(self):
        # above 1: every prediction flagged (a legacy `probe calibrate` that met no target);
        # below 0: none by P(reliable), only outside the domain
        if not (isinstance(self.cut, (int, float)) and not math.isnan(self.cut)):
            raise DecisionError(f"decision cut {self.cut!r} is not a number")

    def flags(self, p_reliable, in_domain=None) -> np.ndarray:
        """True where a prediction is unreliable: outside the domain, P < cut, or P not finite."""
        p = np.asarray(p_reliable, dtype=np.float64)
        flagged = ~(p >= self.cut)  # NaN compares False: flagged
        if in_domain is not None:
            flagged = flagged | ~np.asarray(in_domain, dtype=bool)
        return flagged

    def unreliable(self, p_reliable: float, in_domain: bool = True) -> bool:
        """``flags`` for one prediction."""
        return bool(self.flags(np.array([p_reliable]), np.array([in_domain]))[0])

    def describe(self) -> str:
        """One line: the rule and, where it has one, its stated rate."""
        rule = f"flag P(reliable) < {self.cut:.4g} or outside the domain"
        if self.method == "conformal":
            return (
                f"{rule}; chosen for a false-alarm rate <= {self.false_alarm:g} on {self.n_calibration} "
                f"reliable calibration structures (split-conformal; flags {100 * self.calibration_flagged:.1f}% of them)"
            )
        if self.method in ("sgr", "crc"):
            return f"{rule}; chosen by `probe calibrate` ({self.method}) for a selective risk <= {self.target_risk:g}"
        if self.method == "fixed":
            return f"{rule}; a cut set by hand, no stated false-alarm rate"
        return f"{rule}; the default cut of probe files written before the decision rule, no stated rate"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_info(cls, info: dict) -> DecisionRule:
        """The rule a probe file's ``info`` holds; files before the rule: their
        ``decision_threshold`` (``probe calibrate``) or 0.5, without a stated rate."""
        stored = info.get("decision")
        if stored is not None:
            return cls(**stored)
        threshold = info.get("decision_threshold", 0.5)
        return cls(cut=float(threshold), method="legacy")


def fit_rule(p_reliable, in_domain, reliable, false_alarm=DEFAULT_FALSE_ALARM, what="calibration set"):
    """The conformal rule from calibration structures' P(reliable), domain flags and labels
    (1 = reliable). The domain's flags count: a reliable structure outside the domain is a
    false alarm too, so the cut covers what the domain test leaves of the rate."""
    inside = np.asarray(in_domain, dtype=bool)
    p = np.where(inside, np.asarray(p_reliable, dtype=np.float64), 0.0)
    good = np.asarray(reliable).astype(bool)
    cut = conformal_cut(p[good], false_alarm, what)
    rule = DecisionRule(cut, float(false_alarm), "conformal", int(good.sum()))
    rule.calibration_flagged = float(rule.flags(p[good], inside[good]).mean())
    return rule
