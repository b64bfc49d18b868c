"""Does PROBE beat ensemble disagreement on small real data? Recipe ablation + cost.

For each backbone seed k (the probed backbone; the ensemble is all cached seeds, k first),
the held-out DFT set is extracted once (all feature layers, cached and resumable). For each
recipe and probe seed s, the held-out set is split in two halves (split seed s): the probe
fits on one half, and PROBE, ensemble-of-N energy std, latent distance and random are
scored on the other half, on the same structures. Label: total-energy error above the
median error of the fitting half (the official PROBE boundary) unless --target/--threshold.

    python -m benchmarks signal-ablation --backbone mace --dataset ethanol
    python -m benchmarks signal-ablation --backbone mace --dataset 3bpa --recipes default paper
    (``python -m benchmarks.signal_ablation ...`` runs the same command)
    python -m benchmarks ablation-table       # results/ablation.md from every signal_*.json
    python -m benchmarks ablation-table --bootstrap benchmarks/results/signal_aimnet_ethanol_energy_main.json

Writes benchmarks/results/signal_<backbone>_<dataset>_<target>[_<tag>].json, an .md table and
a .png; ``ablation-table`` writes benchmarks/results/ablation.md (every run: recipe x dataset,
mean ± std over backbone seeds x probe seeds, the 95 % CI of the mean for PROBE and the
ensemble-of-N energy std, the paired difference per run with its 95 % CI), and with
``--bootstrap`` one run's per-seed bootstrap intervals (``<run>_bootstrap.md``).
"""
