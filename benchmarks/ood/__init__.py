"""Out-of-distribution benchmark: is PROBE safe on structures unlike the backbone's data?

Backbones (4 seeds each) trained on GFN2-xTB labels of 1000 ethanol geometries; every set
labelled with the same xTB (``python -m benchmarks ood-data``, benchmarks/ood_data/, builds
data, backbones and feature stores). The probe is fitted the way a user would, with defaults, on half of 500 held-out
ethanol structures (``--reference`` = the backbone's training-set store, alpha = 0.02) and
scored on the other half (in distribution) and on seven OOD sets: bond-dissociation scans,
an atom pulled away, fragments, dimers, compressed/stretched geometries, 1500-2500 K MD and
other C/H/O molecules.

Every method at one operating point: PROBE flags with its decision rule (5 % false alarms,
the cut set on its calibration structures); every other score is cut by the same
split-conformal rule at the same rate on the same calibration structures. Per set and
method: the fraction of *unreliable* structures flagged (detection) and of *reliable* ones
flagged (false alarms; on the held-out half, the in-distribution rate the rule states),
and the AUROC of telling the set's structures from the in-distribution ones. Labels: the
absolute tolerances (total-energy error above 1 kcal/mol, force RMSE above 0.1 eV/Å, with
the per-atom map's hit rate) and the paper's median label.

    python -m benchmarks ood --backbone mace        # in the backbone's environment
    python -m benchmarks ood --report               # results/ood.md from every backbone's JSON
"""
