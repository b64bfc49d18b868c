"""The domain test's structure-scalar rules (energy per atom, atom count) on and off: the
weight of each variant chosen on validation halves of the OOD sets, reported on the others."""

from __future__ import annotations

import numpy as np

from benchmarks.ood.protocol import SETS
from benchmarks.suite.protocol import LABELS

SCALAR_VARIANTS = {
    "atoms only": (),
    "+ energy per atom": ("energy_per_atom",),
    "+ atom count": ("n_atoms",),
    "+ both (default)": ("energy_per_atom", "n_atoms"),
}
SCALAR_WEIGHTS = (5.0, 10.0, 20.0, 40.0, 80.0)


def scalar_ablation(stores, alpha=0.02, split_seed=0, label_args=None):
    """The domain test with and without each structure-scalar rule (energy per atom, atom
    count), on the energy-tolerance label. Each OOD set is split in two halves (seeded):
    the scalar weight of each variant is chosen on the *validation* halves (highest mean
    detection of unreliable structures, ties to the smaller weight), and every figure is
    reported on the other halves only. Reference: the backbone's training set; calibration:
    the fitting half of the held-out set (as ``probe fit --reference``)."""
    from probe_base.domain.model import DomainModel
    from probe_base.labels import LabelSpec
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    reference = load_store(stores["train"])
    heldout = load_store(stores["heldout"])
    fit_idx, eval_idx = split_holdout(len(heldout), 0.5, split_seed)
    calibration, in_distribution = heldout.subset(fit_idx), heldout.subset(eval_idx)
    label = LabelSpec(**(label_args or LABELS["energy_tolerance"])).resolved_on(calibration)
    halves = {}
    for name in SETS:
        data = load_store(stores[name])
        order = np.random.default_rng(split_seed).permutation(len(data))
        cut = len(data) // 2
        unreliable = label.errors(data) > label.threshold
        halves[name] = {
            half: (data.subset(np.sort(rows)), unreliable[np.sort(rows)])
            for half, rows in (("validation", order[:cut]), ("report", order[cut:]))
        }

    def rates(domain, half):
        out = {}
        for name, parts in halves.items():
            data, bad = parts[half]
            outside = ~domain.in_domain(data)
            out[name] = {
                "unreliable_flagged": float(outside[bad].mean()) if bad.any() else None,
                "reliable_flagged": float(outside[~bad].mean()) if (~bad).any() else None,
                "n_unreliable": int(bad.sum()),
                "n_reliable": int((~bad).sum()),
            }
        return out

    def mean_detection(r):
        values = [v["unreliable_flagged"] for v in r.values() if v["unreliable_flagged"] is not None]
        return float(np.mean(values)) if values else float("nan")

    result = {"label": label.to_dict(), "weights_tried": list(SCALAR_WEIGHTS), "variants": {}}
    for variant, scalars in SCALAR_VARIANTS.items():
        weights = SCALAR_WEIGHTS if scalars else (SCALAR_WEIGHTS[0],)  # no scalar: the weight is unused
        tried = {}
        for weight in weights:
            domain = DomainModel(alpha=alpha, scalars=scalars, seed=split_seed, scalar_weight=weight)
            domain.fit(reference, calibration=calibration)
            tried[weight] = (mean_detection(rates(domain, "validation")), domain)
        best = max(tried, key=lambda w: (tried[w][0], -w))
        domain = tried[best][1]
        reported = rates(domain, "report")
        result["variants"][variant] = {
            "scalars": list(scalars),
            "weight": best if scalars else None,
            "validation_mean_detection": {str(w): v for w, (v, _) in tried.items()},
            "report": reported,
            "report_mean_detection": mean_detection(reported),
            "in_distribution_flagged": float((~domain.in_domain(in_distribution)).mean()),
        }
        print(
            f"scalar ablation {variant}: weight {best if scalars else '-'} (validation), report halves: "
            f"mean detection {100 * mean_detection(reported):.0f} %, held-out flagged "
            f"{100 * result['variants'][variant]['in_distribution_flagged']:.1f} %",
            flush=True,
        )
    return result
