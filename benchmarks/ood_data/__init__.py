"""Data and backbones for the out-of-distribution (OOD) benchmark, with real GFN2-xTB labels.

Three stages, each cached (a finished file is never recomputed):

1. ``label`` (any environment with tblite and ASE): GFN2-xTB (tblite) energies and forces
   of the 1000 ethanol geometries of ``ethanol/train.xyz`` (the backbones' training set),
   500 of ``ethanol/test_MD.xyz`` (in distribution) and seven OOD sets built from ethanol
   geometries (test_MD frames 500-999, never in the held-out set): ``bond_scan``,
   ``atom_pulled``, ``fragments``, ``dimer``, ``compressed_stretched``, ``hot`` (xTB
   Langevin MD at 1500-2500 K) and ``other_molecules`` (methanol from test_eth_meth.xyz and
   other C/H/O molecules). Also the xTB isolated-atom energies (H doublet, C and O
   triplets), the backbones' reference energies. Frames where xTB fails are dropped and
   counted in ``data/labels.json``.
2. ``train`` (the backbone's environment): 4 seeds of a small backbone with the
   framework's own trainer (``mace_run_train``, ``nequip-train``, ``aimnet train``) via
   the hooks of ``benchmarks/backbones/<backbone>.py``, on ``train.xyz`` with the xTB isolated-atom
   energies as reference energies, two single-thread trainings at a time, ~3.5 min each.
3. ``extract`` (the backbone's environment): ``probe_base.store.extract`` of every set, seed 1
   probed and seeds 1-4 the ensemble (as ``benchmarks/suite/``), then per store the
   backbone's energy MAE and force RMSE (seed 1 vs xTB) and the median ensemble energy std,
   printed and merged into ``summary.json``.

    python -m benchmarks ood-data --backbone mace --stage all
    python -m benchmarks ood-data --backbone nequip --stage train
    python -m benchmarks ood-data --backbone aimnet --stage extract

(``python -m benchmarks.ood_data ...``, the spelling results/ood.md quotes, runs the same command.)

Layout under ``benchmarks/cache/ood/``: ``data/{train,heldout,ood_<kind>}.xyz`` and
``data/isolated_atoms.xyz``; ``models/<backbone>/seed{1..4}.<ext>``;
``stores/<backbone>_<set>.h5``; ``summary.json``.
"""
