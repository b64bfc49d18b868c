"""The feature store: one HDF5 file per (backbone, dataset), written by streaming.

Extraction writes ``<store>.partial`` chunk by chunk (a progress marker ``n_done`` is
updated after each flushed chunk) and renames it to ``<store>`` when complete. Running the
same command again resumes after the last flushed chunk. A lock file refuses a second
writer. Training and evaluation read only the finished store.

Under torchrun each rank writes one such store (a shard, ``<store>.shards/<r>-of-<w>.h5``)
and rank 0 then writes ``<store>``: HDF5 virtual datasets that concatenate the shards in
input order, so every reader sees one store (see ``probe_base.distributed``).

The modules, by role (``from probe_base.store import X`` gives every name below):

- ``dataset``: ``FeatureSet`` and ``StoredDataset``, what the probe reads;
- ``write``: ``extract``, streaming an input through a backbone into a store, resuming;
- ``read``: ``load_store`` (in memory or a lazy ``StoreView``) and ``require_labels``;
- ``identity``: what a store records about its input, and the checks of a rerun against it;
- ``layout``: the HDF5 datasets, appending rows, the writer's lock, disk space;
- ``shards``: the one store over torchrun shards (``write_virtual_store``).
"""

from probe_base.errors import StoreError
from probe_base.store.dataset import PER_ATOM_FIELDS, FeatureSet, StoredDataset

# the private helpers re-exported below ("as" themselves) are used by the torchrun extraction
# (probe_base.distributed) and the tests
from probe_base.store.identity import InputChanged, check_input_unchanged, frame_digest
from probe_base.store.identity import _content_sha256 as _content_sha256
from probe_base.store.identity import _identity as _identity
from probe_base.store.layout import FORMAT_VERSION, DiskFull, reserve_space
from probe_base.store.layout import _WriterLock as _WriterLock
from probe_base.store.read import (
    FEATURE_LIMIT,
    StoreView,
    check_store_values,
    feature_problem,
    load_store,
    require_labels,
    stored_count,
)
from probe_base.store.shards import write_virtual_store
from probe_base.store.write import extract

__all__ = [
    "FEATURE_LIMIT",
    "FORMAT_VERSION",
    "PER_ATOM_FIELDS",
    "DiskFull",
    "FeatureSet",
    "InputChanged",
    "StoreError",
    "StoreView",
    "StoredDataset",
    "check_input_unchanged",
    "check_store_values",
    "feature_problem",
    "stored_count",
    "extract",
    "frame_digest",
    "load_store",
    "require_labels",
    "reserve_space",
    "write_virtual_store",
]
