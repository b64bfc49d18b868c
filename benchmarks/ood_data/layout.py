"""Where the OOD benchmark's data, models and stores live (``benchmarks/cache/ood/``), the
names of its sets and the fixed settings of its stages; every other module of
``benchmarks.ood_data`` and the experiments that read its stores take them from here."""

from __future__ import annotations

from benchmarks.common import CACHE

OOD = CACHE / "ood"
LABELS = OOD / "data"
MODELS = OOD / "models"
STORES = OOD / "stores"
SUMMARY = OOD / "summary.json"

TRAIN = LABELS / "train.xyz"
ISOLATED = LABELS / "isolated_atoms.xyz"
N_HELDOUT = 500
OOD_KINDS = ("bond_scan", "atom_pulled", "fragments", "dimer", "compressed_stretched", "hot", "other_molecules")
SETS = ("train", "heldout", *(f"ood_{kind}" for kind in OOD_KINDS))
# ground-state spin multiplicities of the free atoms (GFN2-xTB, no spin polarisation)
ATOM_MULTIPLICITY = {"H": 2, "C": 3, "O": 3}
SEEDS = (1, 2, 3, 4)
TRAIN_MINUTES = 3.5
# mace_run_train has no wall-time cap: epochs sized to the cap. Measured: ~80 s per epoch
# (900 ethanol structures, 32 channels, L=0, one thread on a loaded 2-core machine), so 4
# epochs, the last one the high-energy-weight stage two (SWA)
MACE_EPOCHS, MACE_START_SWA = 4, 3
