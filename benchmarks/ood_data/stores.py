"""Stage ``extract``: one feature store per set and backbone (seed 1 probed, every trained
seed the ensemble, as ``benchmarks/suite/``), and per store the backbone's errors against
xTB and the ensemble's energy spread, merged into ``summary.json``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO
from benchmarks.ood_data.layout import LABELS, MODELS, SEEDS, SETS, STORES
from benchmarks.ood_data.summary import update_summary
from benchmarks.ood_data.training import model_path


def store_figures(store: Path) -> dict:
    """Seed 1 vs xTB, and the ensemble's energy spread, from one store."""
    from probe_base.store import load_store

    data = load_store(store)
    error = data.energy_pred - data.energy_ref
    figures = {
        "n_structures": len(data),
        "energy_mae_meV": 1000 * float(np.mean(np.abs(error))),
        "energy_mean_signed_error_meV": 1000 * float(np.mean(error)),
        # as benchmarks/suite/runner.py: sqrt of the mean squared per-structure force RMSE
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.nanmean(data.force_rmse**2))),
    }
    if data.member_energies is not None:
        std = data.member_energies.std(axis=1)
        figures["ensemble_energy_std_median_meV"] = 1000 * float(np.median(std))
        figures["n_members"] = int(data.member_energies.shape[1])
        figures["member_energy_mae_meV"] = [
            1000 * float(np.mean(np.abs(m - data.energy_ref))) for m in data.member_energies.T
        ]
    return figures


def stage_extract(backbone: str, sets=SETS) -> dict:
    import torch

    from probe_base.plugins import get_adapter_class
    from probe_base.store import extract

    torch.set_num_threads(1)
    models = [model_path(backbone, s) for s in SEEDS if model_path(backbone, s).exists()]
    if len(models) < 2:
        raise SystemExit(f"{backbone}: need >= 2 trained seeds in {MODELS / backbone}, found {len(models)}")
    adapter_class = get_adapter_class(backbone)
    # as benchmarks/suite/runner.py: every feature layer; the first model probed, all the ensemble
    layers = [layer.name for layer in adapter_class(models[:1]).feature_layers()]
    adapter = adapter_class(models, layers=layers)
    figures = {}
    for name in sets:
        source = LABELS / f"{name}.xyz"
        if not source.exists():
            print(f"{name}: {source} missing (run --stage label), skipped", flush=True)
            continue
        store = STORES / f"{backbone}_{name}.h5"
        started = time.perf_counter()
        extract(adapter, source, store)
        figures[name] = {"store": str(store.relative_to(REPO)), **store_figures(store)}
        if time.perf_counter() - started > 1:
            figures[name]["extract_seconds"] = time.perf_counter() - started
        f = figures[name]
        print(
            f"{backbone} {name:28s} n={f['n_structures']:5d}  E MAE {f['energy_mae_meV']:9.1f} meV  "
            f"F RMSE {f['force_rmse_meV_per_A']:8.1f} meV/A  ensemble E std median "
            f"{f.get('ensemble_energy_std_median_meV', float('nan')):8.1f} meV",
            flush=True,
        )
        update_summary(
            {
                "stores": {backbone: {name: figures[name]}},
                "backbones": {backbone: {"models": [str(m.relative_to(REPO)) for m in models], "layers": layers}},
            }
        )
    return figures
