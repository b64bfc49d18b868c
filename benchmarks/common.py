"""Where the benchmarks read and write, and the data sets and held-out splits they share.

Every benchmark module takes its paths and held-out sets from here:

- ``REPO``: the repository; ``DATA``: the reference DFT data next to it
  (``../shared/data``); ``CACHE``: trained models, feature stores and fitted probes
  (``benchmarks/cache``, git-ignored); ``RESULTS``: the committed result files.
- ``heldout_structures`` / ``heldout_path``: the held-out DFT set of each training set.
  ethanol: ``ethanol/test_MD.xyz``. 3bpa: the ``train_mixedT`` configurations (300, 600 and
  1200 K MD) that are not in ``train_300K`` (the training set), a configuration being its
  atomic numbers and its positions rounded to 1e-5 Å.

  The stored 3BPA results (``<backbone>_3bpa*``, ``signal_*_3bpa_*``,
  ``practice_guarantee_*``, ``active_learning_mace_3bpa``) were produced with a second
  definition that keyed on the rounded positions only. Every 3BPA frame is the same molecule
  with its atoms in the same order (one atomic-numbers array across train_300K and the 469
  held-out frames), so both keys select the same 469 structures: the results stand.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "benchmarks" / "cache"
RESULTS = REPO / "benchmarks" / "results"

BACKBONES = ("mace", "nequip", "aimnet")  # the ones the suite trains; sevenn ships pretrained
DATASETS = ("ethanol", "3bpa")
SIZES = ("small", "large")

ETHANOL_HELDOUT = DATA / "ethanol" / "test_MD.xyz"
HELDOUT_3BPA = CACHE / "3bpa_heldout.xyz"  # written once by heldout_path("3bpa")


def _configuration(atoms) -> bytes:
    import numpy as np  # here: distributed_extract's ranks import this module and measure their memory

    return atoms.numbers.tobytes() + np.round(atoms.positions, 5).tobytes()


def heldout_structures(dataset: str, data: Path = DATA) -> list:
    """The held-out structures of ``dataset`` (see the module docstring), read from ``data``."""
    from ase.io import read

    if dataset == "ethanol":
        return read(data / "ethanol" / "test_MD.xyz", ":")
    if dataset != "3bpa":
        raise ValueError(f"no held-out set for {dataset!r}")
    seen = {_configuration(a) for a in read(data / "3bpa" / "train_300K.xyz", ":")}
    return [a for a in read(data / "3bpa" / "train_mixedT.xyz", ":") if _configuration(a) not in seen]


def heldout_path(dataset: str) -> Path:
    """The held-out set of ``dataset`` as a file (the 3BPA one is written to the cache on
    first use), for the tools that read structures from a path (``extract``)."""
    if dataset == "ethanol":
        return ETHANOL_HELDOUT
    if not HELDOUT_3BPA.exists():
        import ase.io

        HELDOUT_3BPA.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(HELDOUT_3BPA, heldout_structures(dataset))
    return HELDOUT_3BPA
