"""``practice guarantee``: SGR, the naive threshold and CRC over random calibration/test
splits of the rest of the held-out set, the realised risk and coverage of each, and the
result files."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.practice_mace.probe import fitted_probe
from benchmarks.report import write_markdown


def naive_threshold(p, reliable, alpha):
    """Largest coverage whose *empirical* calibration risk is <= alpha (no bound)."""
    order = np.argsort(-p, kind="stable")
    risk = np.cumsum(1 - reliable[order]) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero(risk <= alpha)
    return float(p[order][ok[-1]]) if len(ok) else np.inf


def guarantee(args):
    from probe_base.selective import binomial_interval, choose_threshold

    out = {"delta": args.delta, "splits": args.splits, "label_quantile": args.quantile, "datasets": {}}
    rows = []
    for dataset in args.datasets:
        _, store_path, _, rest_idx, p, reliable, label = fitted_probe(dataset, quantile=args.quantile)
        rng = np.random.default_rng(1)
        n_cal = len(p) // 2
        per_alpha = {}
        for alpha in args.alphas:
            sgr, naive, crc = [], [], []
            for _ in range(args.splits):
                perm = rng.permutation(len(p))
                cal, test = perm[:n_cal], perm[n_cal:]

                def realised(threshold):
                    accepted = p[test] >= threshold
                    n_acc = int(accepted.sum())
                    risk = float(1 - reliable[test][accepted].mean()) if n_acc else 0.0
                    both = float(np.mean(accepted & (reliable[test] == 0)))
                    return {
                        "coverage": n_acc / len(test),
                        "risk": risk,
                        "violation": risk > alpha,
                        "accepted_and_unreliable": both,
                    }

                control = choose_threshold(p[cal], reliable[cal], alpha, args.delta, "sgr")
                sgr.append(realised(control.threshold))
                naive.append(realised(naive_threshold(p[cal], reliable[cal], alpha)))
                crc.append(realised(choose_threshold(p[cal], reliable[cal], alpha, method="crc").threshold))
            summary = {}
            for name, runs in (("sgr", sgr), ("naive", naive), ("crc", crc)):
                violations = int(sum(r["violation"] for r in runs))
                summary[name] = {
                    "violation_rate": violations / args.splits,
                    "violation_rate_95ci": binomial_interval(violations, args.splits),
                    "mean_coverage": float(np.mean([r["coverage"] for r in runs])),
                    "mean_risk": float(np.mean([r["risk"] for r in runs if r["coverage"] > 0]))
                    if any(r["coverage"] > 0 for r in runs)
                    else None,
                    "mean_accepted_and_unreliable": float(np.mean([r["accepted_and_unreliable"] for r in runs])),
                    "risks": [r["risk"] for r in runs],
                    "coverages": [r["coverage"] for r in runs],
                }
            per_alpha[str(alpha)] = summary
            s, nv = summary["sgr"], summary["naive"]
            lo, hi = s["violation_rate_95ci"]
            rows.append(
                f"| {dataset} | {label.target} ≤ {label.threshold:.3g} | {1 - reliable.mean():.2f} | "
                f"{alpha} | {args.delta} | {s['mean_coverage']:.3f} | "
                f"{s['mean_risk'] if s['mean_risk'] is not None else float('nan'):.3f} | "
                f"{s['violation_rate']:.3f} [{lo:.3f}, {hi:.3f}] | {'yes' if lo <= args.delta else 'NO'} | "
                f"{nv['mean_coverage']:.3f} | {nv['violation_rate']:.3f} | "
                f"{summary['crc']['mean_coverage']:.3f} | {summary['crc']['mean_accepted_and_unreliable']:.3f} |"
            )
        out["datasets"][dataset] = {
            "store": str(store_path),
            "label": label.to_dict(),
            "n_fit": int(len(p) / 0.6 * 0.4 + 0.5),
            "n_calibration": n_cal,
            "n_test": len(p) - n_cal,
            "base_unreliable_rate": float(1 - reliable.mean()),
            "alphas": per_alpha,
        }
    header = (
        "| dataset | label (reliable if) | unreliable rate (no selection) | α | δ | SGR mean coverage | "
        "SGR mean realised risk | SGR violation rate [95% CI] | guarantee met (rate ≤ δ within CI) | "
        "naive coverage | naive violation rate | CRC coverage | CRC E[accepted ∧ unreliable] |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    text = (
        f"# Guaranteed-risk thresholds on MACE backbones ({args.splits} random calibration/test "
        f"splits; unreliable = error above the {args.quantile:g} quantile of the fitting errors)\n\n"
        f"`python -m benchmarks practice guarantee --splits {args.splits} --delta {args.delta} "
        f"--quantile {args.quantile:g} --alphas {' '.join(map(str, args.alphas))}`\n\n{header}\n"
        + "\n".join(rows)
        + "\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"practice_guarantee_mace_q{round(100 * args.quantile)}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    write_markdown(RESULTS / f"{stem}.md", text)
    plot_guarantee(out, RESULTS / f"{stem}.png")


def plot_guarantee(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(out["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for k, (alpha, summary) in enumerate(out["datasets"][dataset]["alphas"].items()):
            for name, marker in (("sgr", "o"), ("naive", "x")):
                s = summary[name]
                ax.scatter(
                    s["coverages"], s["risks"], s=8, marker=marker, color=f"C{k}", alpha=0.5, label=f"{name} α={alpha}"
                )
            ax.axhline(float(alpha), color=f"C{k}", lw=1, ls="--")
        ax.set_xlabel("coverage on the test half")
        ax.set_ylabel("realised selective risk")
        ax.set_title(f"MACE {dataset}: each point one split")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
