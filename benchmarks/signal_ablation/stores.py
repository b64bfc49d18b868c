"""The held-out feature stores of the signal ablation: one per probed backbone seed, every
feature layer, every cached seed as an ensemble member (the probed one first). The suite,
the practice benchmarks and active learning reuse the same cached stores."""

from __future__ import annotations

from benchmarks.common import CACHE, heldout_path
from probe_base.plugins import get_adapter_class
from probe_base.store import extract


def stores_for(backbone, dataset, models):
    """One store per probed seed: all layers, every cached model as ensemble member."""
    heldout = heldout_path(dataset)
    adapter_class = get_adapter_class(backbone)
    stores = {}
    for primary in models:
        ordered = [primary] + [m for m in models if m != primary]
        probe_adapter = adapter_class(
            ordered, layers=[layer.name for layer in adapter_class(ordered[:1]).feature_layers()]
        )
        path = CACHE / "stores" / f"{backbone}_{dataset}_{primary.stem}_n{len(models)}.h5"
        extract(probe_adapter, heldout, path)
        stores[primary.stem] = (path, probe_adapter)
    return stores
