"""The reference-scale results: ``results/reference_scale.json``, the Markdown tables of
``results/reference_scale.md`` (shares of a SevenNet-0 step, flag rates beside exact) and
the plot ``results/reference_scale.png``."""

from __future__ import annotations

import json
import os

from benchmarks.common import RESULTS

SEVENN_STEP_SECONDS = (
    0.488  # SevenNet-0, 99 atoms, one CPU thread: results/step_cost_sevenn.json (without --sevenn-python)
)


def _write(args, rows, side_by_side, backbone_step, step_atoms, n_real, sevenn_steps):
    import platform

    # SevenNet-0's step: measured in this run (the least disturbed of its measurements), else an earlier run's
    sevenn = min(sevenn_steps) if sevenn_steps else SEVENN_STEP_SECONDS
    sevenn_source = (
        f"measured in this run ({len(sevenn_steps)} times, the least disturbed)"
        if sevenn_steps
        else "from results/step_cost_sevenn.json (an earlier run)"
    )
    for r in rows:
        r["domain_share_of_sevenn_step"] = r["domain_seconds_per_md_step"] / sevenn
        if "md_run" in r:
            r["md_run_share_of_sevenn_step"] = r["md_run"]["seconds_per_step_kept"] / sevenn
            r["md_run_later_steps_share_of_sevenn_step"] = r["md_run"]["seconds_per_later_step_kept"] / sevenn
            r["md_run_first_step_share_of_sevenn_step"] = r["md_run"]["seconds_first_step_kept"] / sevenn

    out = {
        "experiment": "reference_scale",
        "features": f"TinyMLIP (64 features) on {n_real} real EMT Cu cluster atoms; larger references: "
        f"real atoms replicated with Gaussian noise {args.noise} x feature std",
        "threads": 1,
        "machine": platform.processor() or platform.machine(),
        "shared_machine": "2 cores, other jobs (test runs) may have shared them while this ran (load average at the end in the JSON); "
        "times are minima over interleaved rounds, compare them as ratios within this run",
        "load_average_at_end": list(os.getloadavg()),
        "backbone_step_seconds": backbone_step,
        "backbone_step_atoms": step_atoms,
        "sevenn_step_seconds_99_atoms": sevenn,
        "sevenn_step_source": sevenn_source,
        "sevenn_step_measurements": sevenn_steps,
        "flag_rate_tolerance": "approximate within max(1 point, 2 binomial standard errors of the exact rate)",
        "rows": rows,
        "exact_vs_approximate_flag_rates": side_by_side,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reference_scale.json").write_text(json.dumps(out, indent=1))
    lines = [
        "# Domain reference at scale (benchmarks/reference_scale.py)",
        "",
        out["features"] + "; one thread. Backbone step (TinyMLIP energy + forces, "
        f"{step_atoms} atoms): {1e3 * backbone_step:.2f} ms. " + out["shared_machine"] + ".",
        "",
        "ivfsq: IVF with residual 8-bit scalar codes, nprobe tuned per element: the fewest cells with recall@5 "
        ">= 0.9, or within 0.01 of the best recall where none reaches 0.9, on 256 "
        "validation atoms of the reference (each with itself excluded); ivfpq: the earlier IVF-PQ (m = 32, "
        "8 bits, nprobe 16). Recall@5 and the novelty error are on held-out in-distribution query atoms "
        "(never used for tuning). MD step: the domain query of one 140-atom structure (`novelty_of_one`).",
        "",
        "| reference atoms | index | nprobe | build s | bytes/atom | recall@5 | novelty err | query us/atom | "
        "domain ms/MD step | of which FAISS search / coarse quantizer ms | / toy step | / SevenNet-0 step | "
        "ID flagged | hot | strained | vacancy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, prof = r["flag_rates"], r["md_step_profile_seconds"]
        lines.append(
            f"| {r['reference_atoms']:.0e} | {r['index']} | {r['params'].get('nprobe', '-')} | "
            f"{r['build_seconds']:.1f} | {r['bytes_per_atom']:.1f} | "
            f"{r['recall_at_5']:.3f} | {100 * r['median_relative_novelty_error']:.2f} % | "
            f"{1e6 * r['query_seconds_per_atom_batch']:.1f} | {1e3 * r['domain_seconds_per_md_step']:.2f} | "
            f"{1e3 * prof['index_search']:.2f} / {1e3 * prof['coarse_quantizer']:.2f} | "
            f"{r['domain_share_of_backbone_step']:.2f} | {100 * r['domain_share_of_sevenn_step']:.2f} % | "
            f"{100 * f['in distribution']:.1f} % | {100 * f['hot']:.1f} % | {100 * f['strained']:.1f} % | "
            f"{100 * f['vacancy']:.1f} % |"
        )
    if side_by_side:
        lines += [
            "",
            "Exact vs approximate index, same reference (flag rates; tolerance: each rate within two binomial "
            "standard errors of the exact rate on that set's structures, at least 1 percentage point; 1000 ID, "
            "300 per OOD set; thresholds are calibrated with each index's own distances, alpha = 0.02):",
            "",
        ]
        lines += [
            "| reference atoms | index | ID flagged | hot | strained | vacancy | within tolerance |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, both in side_by_side.items():
            for kind in ["exact", *both["within_tolerance"]]:
                f = both[kind]
                ok = "-" if kind == "exact" else ("yes" if both["within_tolerance"][kind] else "no")
                lines.append(
                    f"| {int(n):.0e} | {kind} | {100 * f['in distribution']:.1f} % | {100 * f['hot']:.1f} % | "
                    f"{100 * f['strained']:.1f} % | {100 * f['vacancy']:.1f} % | {ok} |"
                )
            t = both["tolerance"]
            lines.append(
                f"| {int(n):.0e} | tolerance +- | {100 * t['in distribution']:.1f} | {100 * t['hot']:.1f} | "
                f"{100 * t['strained']:.1f} | {100 * t['vacancy']:.1f} | |"
            )
    md_rows = [r for r in rows if "md_run" in r]
    if md_rows:
        m = md_rows[0]["md_run"]
        lines += [
            "",
            f"MD run: the domain query of each of {m['steps']} steps of a {m['atoms']}-atom in-distribution "
            "structure (five Cu clusters moving as Cu at 300 K in 2 fs steps, `_md_trajectory`), through the search a calculator keeps across steps "
            "(`one_structure_search`: every element keeps 64 candidates per atom (decoded codes, or the exact "
            "atoms), probe_base/domain/step_neighbours.py) and through a fresh FAISS search per step. ms per step: the mean "
            "over the run with the first step, the first step alone, and the mean of the later steps (what each step "
            "of a long run costs; minima over interleaved rounds). Searched afresh: atoms searched with the tuned "
            "nprobe / with one cell (settling: a bound at most half the threshold ends it). Novelty difference: the "
            "largest |kept - fresh| of an atom's novelty over the run, in units of the threshold.",
            "",
            "| reference atoms | index | fresh search ms/step | kept search ms/step | first step ms | later steps ms | "
            "later steps / SevenNet-0 step | searched afresh: tuned / one cell | max atom novelty difference | "
            "same atom decision every step |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in md_rows:
            m = r["md_run"]
            afresh = (
                "-"
                if m["atoms_searched_afresh_share"] is None
                else f"{100 * m['atoms_searched_afresh_share']:.1f} % / {100 * m['atoms_settle_searched_share']:.1f} %"
            )
            lines.append(
                f"| {r['reference_atoms']:.0e} | {r['index']} | {1e3 * m['seconds_per_step_fresh']:.2f} | "
                f"{1e3 * m['seconds_per_step_kept']:.2f} | {1e3 * m['seconds_first_step_kept']:.1f} | "
                f"{1e3 * m['seconds_per_later_step_kept']:.2f} | "
                f"{100 * r['md_run_later_steps_share_of_sevenn_step']:.2f} % | "
                f"{afresh} | {m['max_atom_novelty_difference']:.3f} | "
                f"{'yes' if m['same_decision_every_step'] else 'no'} |"
            )
    lines += [
        "",
        f"SevenNet-0 step at 99 atoms (11 ethanol molecules, one thread): {sevenn:.3f} s CPU, {sevenn_source}.",
    ]
    (RESULTS / "reference_scale.md").write_text("\n".join(lines) + "\n")
    _plot(rows)


def _plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for kind, marker in (("ivfsq", "o"), ("ivfpq", "s")):
        mine = [r for r in rows if r["index"] in (kind, "flat")]
        if not any(r["index"] == kind for r in mine):
            continue
        n = [r["reference_atoms"] for r in mine]
        axes[0].loglog(n, [r["build_seconds"] for r in mine], marker + "-", label=kind)
        axes[1].semilogx(n, [r["bytes_per_atom"] for r in mine], marker + "-", label=kind)
        axes[2].loglog(n, [100 * r["domain_share_of_sevenn_step"] for r in mine], marker + "-", label=f"{kind}, fresh")
        if all("md_run" in r for r in mine):
            axes[2].loglog(
                n, [100 * r["md_run_share_of_sevenn_step"] for r in mine], marker + ":", label=f"{kind}, kept (MD run)"
            )
    axes[0].set(xlabel="reference atoms", ylabel="build s")
    axes[1].set(xlabel="reference atoms", ylabel="index bytes / atom")
    axes[2].axhline(2.0, color="grey", ls="--", lw=1, label="2 % target")
    axes[2].set(xlabel="reference atoms", ylabel="domain query / SevenNet-0 step (%)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "reference_scale.png", dpi=110)
