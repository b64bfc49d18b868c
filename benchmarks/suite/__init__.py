"""The benchmark suite: PROBE vs ensemble disagreement on real DFT data, and the cost.

For one backbone x dataset x size (``run``), or every combination this environment can
run (``run --all``; each backbone plugin lives in its own environment, so ``nox -s
benchmarks`` runs ``--all`` once per backbone environment and then ``report``):

1. the backbone's 4 seeds, trained with the framework's own tool by
   ``python -m benchmarks train <backbone>`` (benchmarks/backbones/) and cached (re-runs
   skip training);
2. one feature extraction of the held-out DFT set (seed 1 probed, all 4 seeds as the
   ensemble), and of the out-of-distribution set (methanol for the ethanol backbone;
   the 3BPA held-out set is itself out of distribution: 300-1200 K vs a 300 K training set);
3. PROBE fitted on one half of the held-out set (split seed 0), evaluated on the other half
   and on the OOD set, at three labels: total-energy error above chemical accuracy
   (1 kcal/mol = 0.0434 eV) and force RMSE above 0.1 eV/Å (the defaults), and total-energy
   error above the fitting median (the official PROBE label); the probe has its domain test
   on (P = 0 outside), and the same network without it (the paper's
   PROBE) is scored alongside;
4. AUROC, AUPRC, AURC, E-AURC, Spearman, ECE with 95 % bootstrap intervals for PROBE,
   ensemble energy std, ensemble force std, latent distance and random; every method at
   one operating point (PROBE's decision rule, 5 % false alarms set on its calibration
   structures, a quarter of the fitting half or more where that holds fewer than 20 reliable
   ones; each baseline cut at the same rate on the same structures: measured false alarms
   and detection, paired differences); the cost table.

    python -m benchmarks run --backbone mace --dataset ethanol
    python -m benchmarks run --backbone mace --dataset 3bpa --size large
    python -m benchmarks run --all                 # whatever this environment can run
    python -m benchmarks scaling --backbone mace   # probe time / memory vs atoms (benchmarks/scaling.py)
    python -m benchmarks report                    # results/README.md from every results JSON

Writes ``benchmarks/results/<backbone>_<dataset>[_<size>].{json,md}`` and the plots of each
evaluation under ``benchmarks/results/<backbone>_<dataset>[_<size>]/<label>_<set>/``.
"""
