"""``extract``: stream an input file through a backbone adapter into a store, resuming an
unfinished ``.partial`` after its last flushed chunk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from probe_base.adapter import file_sha256
from probe_base.errors import InputError, StoreError
from probe_base.io.data import check_input_file, iter_structures, selected_frames
from probe_base.store.identity import (
    InputChanged,
    _content_sha256,
    _identity,
    _read_options,
    check_input_unchanged,
    frame_digest,
)
from probe_base.store.layout import (
    ADDED_IN_FORMAT_3,
    METADATA_RESERVE,
    _append,
    _bytes_needed,
    _create,
    _saved,
    _truncate_to_done,
    _WriterLock,
    reserve_space,
)
from probe_base.store.read import feature_problem


def _open_store_file(path, mode="r"):
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise StoreError(
            f"{path}: exists but is not a readable feature store ({exc}); it may have "
            "been damaged by a full disk or a crash: delete it, or pass --overwrite "
            "to start again"
        ) from None


def extract(
    adapter,
    input_path,
    store_path,
    *,
    index: str = ":",
    energy_key=None,
    forces_key=None,
    with_forces: bool = True,
    labels: bool = True,
    batch_size: int = 32,
    chunk_structures: int = 256,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    allow_empty: bool = False,
) -> Path:
    """Stream ``input_path`` through ``adapter`` into the HDF5 store ``store_path``.

    ``labels=False``: no reference energies or forces are read (a store of features,
    predictions and ensemble members for code that needs no labels; its reference fields
    are NaN). ``overwrite``: the new store is written beside the old one and replaces it
    only when complete; an unfinished extraction of the same input is resumed.
    ``allow_empty``: an empty selection gives an empty store (a torchrun shard)."""
    from probe_base.io.paths import check_output_file, partial_path

    if dtype not in ("float32", "float16"):
        raise InputError(f"feature dtype must be float32 or float16, not {dtype!r}")
    store_path, input_path = Path(store_path), Path(input_path)
    check_input_file(input_path)
    check_output_file(store_path, "store", inputs=[input_path, *adapter.model_paths])
    # refuses an unreadable selection, and an empty one unless a torchrun shard's block is empty
    n_total = len(selected_frames(input_path, index, allow_empty))
    partial = partial_path(store_path)
    identity = _identity(adapter, input_path, index, energy_key, forces_key, with_forces, dtype, labels)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with _WriterLock(store_path):
        if store_path.exists() and not overwrite:
            with _open_store_file(store_path) as h5:
                if json.loads(h5.attrs["identity"]) != identity:
                    raise StoreError(
                        f"{store_path} exists and was made from other input or another backbone; "
                        "pass --overwrite to replace it or choose another output path"
                    )
                check_input_unchanged(h5, store_path, input_path, identity)
            return store_path  # already complete
        input_sha256 = file_sha256(input_path)

        def write():
            _write_partial(
                adapter,
                input_path,
                partial,
                identity,
                dtype,
                overwrite,
                batch_size,
                chunk_structures,
                n_total,
                progress,
            )

        try:
            write()
        except InputChanged:
            if not overwrite:
                raise
            partial.unlink()  # --overwrite: start again from the new input
            write()
        reserve_space(partial, METADATA_RESERVE, n_total, "finishing the store")
        with h5py.File(partial, "r+") as h5:
            h5.attrs["content_sha256"] = _content_sha256(h5["frame_digest"][:])
            h5.attrs["input_sha256"] = input_sha256
            h5.attrs["complete"] = True
        os.replace(partial, store_path)
    return store_path


def _write_partial(
    adapter, input_path, partial, identity, dtype, overwrite, batch_size, chunk_structures, n_total, progress
):
    """Create or resume ``partial`` and stream the rest of the selection into it."""
    if partial.exists():
        try:
            h5 = h5py.File(partial, "r+")
            stored_identity = json.loads(h5.attrs["identity"])
        except (OSError, KeyError) as exc:
            if not overwrite:
                raise StoreError(
                    f"{partial}: the unfinished extraction cannot be resumed, it was damaged ({exc}), "
                    "probably by a full disk or a crash during a write: delete it or pass "
                    "--overwrite to start again"
                ) from None
            h5 = None
        if h5 is not None and stored_identity != identity:
            nothing_saved = int(h5.attrs.get("n_done", 0)) == 0
            h5.close()
            if not overwrite and not nothing_saved:
                raise StoreError(
                    f"{partial} is an unfinished extraction of other input or another "
                    "backbone; delete it or pass --overwrite"
                )
            h5 = None
        if h5 is None:
            partial.unlink()
    if not partial.exists():
        reserve_space(partial, METADATA_RESERVE, 0, "a new feature store")
        try:
            # the latest format checksums HDF5's own metadata (headers, attributes): with the
            # datasets' fletcher32, a flipped byte is refused when read, never read as data
            h5 = h5py.File(partial, "w", libver="latest")
            _create(h5, adapter.n_features, dtype, len(adapter.models), identity)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise StoreError(
                f"{partial}: cannot be created ({exc}); free disk space or choose another output path"
            ) from None
    with h5:
        n_done = _truncate_to_done(h5)
        _stream_into(
            h5, adapter, input_path, identity, n_done, n_total, batch_size, chunk_structures, progress, partial
        )


def _stream_into(h5, adapter, input_path, identity, n_done, n_total, batch_size, chunk_structures, progress, partial):
    labels, with_forces = identity.get("labels", True), identity["with_forces"]
    stored_digests = h5["frame_digest"][:n_done]
    # a .partial begun before format 3 is finished in its own layout: its first rows have no
    # predicted force magnitudes, so the store reads as format 2 (the field None), never half-filled
    not_in_file = {name for name in ADDED_IN_FORMAT_3 if name not in h5}
    pending_rows: list[dict] = []
    pending_count = 0

    def flush():
        nonlocal pending_rows, pending_count
        if not pending_rows:
            return
        merged = {k: np.concatenate([r[k] for r in pending_rows]) for k in pending_rows[0]}
        reserve_space(
            partial, _bytes_needed(h5, merged), int(h5.attrs["n_done"]), f"the next {pending_count} structures"
        )
        try:
            _append(h5, merged)
            h5.attrs["n_done"] = int(h5.attrs["n_done"]) + pending_count
            h5.flush()
        except (OSError, RuntimeError) as exc:  # HDF5 reports a failed write as either
            raise StoreError(
                f"{partial}: writing failed ({exc}); {_saved(int(h5.attrs['n_done']), partial)}: "
                "free disk space and run the same command again to resume"
            ) from None
        pending_rows, pending_count = [], 0

    def run_batch(batch):
        nonlocal pending_count
        output = adapter.run(
            [s.atoms for s in batch],
            compute_forces=with_forces,
            source=str(input_path),
            indices=[s.index for s in batch],
        )
        for item, features in zip(batch, output.features):
            problem = feature_problem(features)
            if problem:  # refused before it is stored: fit and evaluate would overflow on it
                raise InputError(
                    f"{input_path}: structure {item.index}: the backbone gave per-atom features with {problem}; "
                    "check this structure (overlapping atoms, absurd cell) or the model file"
                )
        rows = _rows_from_batch(batch, output, with_forces, labels)
        pending_rows.append({k: v for k, v in rows.items() if k not in not_in_file})
        pending_count += len(batch)

    bar = tqdm(total=n_total, initial=n_done, unit="struct", desc="extract", disable=not progress)
    batch = []
    position = 0
    try:
        for item in iter_structures(input_path, identity["index"], **_read_options(identity)):
            if position < n_done:  # already stored: it must be the same frame
                if not np.array_equal(frame_digest(item, labels), stored_digests[position]):
                    raise InputChanged(partial, input_path, item.index)
                position += 1
                continue
            position += 1
            adapter.check_structures([item.atoms], str(input_path), [item.index])
            batch.append(item)
            if len(batch) == batch_size:
                run_batch(batch)
                bar.update(len(batch))
                batch = []
                if pending_count >= chunk_structures:
                    flush()
        if position < n_done:
            raise InputChanged(partial, input_path, None)
        if batch:
            run_batch(batch)
            bar.update(len(batch))
        flush()
    except InputError as exc:
        if position < n_done:  # a frame that was stored is unreadable now
            raise InputChanged(partial, input_path, None) from exc
        # keep everything before the bad structure, then tell the user how to go on
        if batch:
            try:
                run_batch(batch)
            except InputError:
                pass
        flush()
        raise InputError(
            f"{exc}; {_saved(int(h5.attrs['n_done']), partial)}: fix the input and run the same command again to resume"
        ) from exc
    finally:
        bar.close()


def _rows_from_batch(batch, output, with_forces, labels=True):
    rows = {
        "features": np.concatenate(output.features),
        "atomic_numbers": np.concatenate([s.atoms.numbers for s in batch]).astype(np.int16),
        "n_atoms": np.array([len(s.atoms) for s in batch], dtype=np.int32),
        "source_index": np.array([s.index for s in batch], dtype=np.int64),
        "energy_pred": output.energies,
        "energy_ref": np.array([s.energy if labels else np.nan for s in batch], dtype=np.float64),
        "frame_digest": np.stack([frame_digest(s, labels) for s in batch]),
    }
    n_members = output.member_energies.shape[1] if output.member_energies is not None else 1
    rows["member_energies"] = output.member_energies if output.member_energies is not None else output.energies[:, None]
    if with_forces:  # also without labels: the predicted-|F| map needs no reference
        rows["atom_force_pred_norm"] = np.concatenate([np.linalg.norm(f, axis=1) for f in output.forces]).astype(
            np.float32
        )
    else:
        rows["atom_force_pred_norm"] = np.full(rows["atomic_numbers"].shape[0], np.nan, dtype=np.float32)
    if with_forces and labels:
        atom_err = [np.linalg.norm(f_pred - s.forces, axis=1) for f_pred, s in zip(output.forces, batch)]
        rows["atom_force_error"] = np.concatenate(atom_err).astype(np.float32)
        rows["force_rmse"] = np.array([np.sqrt(np.mean((f - s.forces) ** 2)) for f, s in zip(output.forces, batch)])
        rows["force_max_error"] = np.array([e.max() for e in atom_err])
    else:
        n_total = rows["atomic_numbers"].shape[0]
        rows["atom_force_error"] = np.full(n_total, np.nan, dtype=np.float32)
        rows["force_rmse"] = np.full(len(batch), np.nan)
        rows["force_max_error"] = np.full(len(batch), np.nan)
    if output.member_forces is not None and n_members > 1:
        # per atom: sqrt of the summed variance of the force vector over members
        rows["member_force_std"] = np.array(
            [np.sqrt(mf.var(axis=0).sum(axis=-1)).mean() for mf in output.member_forces]
        )
    else:
        rows["member_force_std"] = np.full(len(batch), np.nan)
    return rows
