"""Running ``probe extract`` and ``probe fit`` under torchrun (one node or many).

Nothing here runs unless torchrun (or SLURM through torchrun) set ``WORLD_SIZE`` > 1: one
process stays the default and never touches ``torch.distributed``.

extract
    The selected frames are split into ``world`` contiguous blocks; rank r reads only its
    block (``ase.io.iread`` with a slice) into its own store, a shard
    ``<store>.shards/<r>-of-<world>.h5`` (the usual ``.partial`` / ``n_done`` resume and
    lock, per shard). When every shard is done, rank 0 writes ``<store>``: HDF5 virtual
    datasets over the shards, in input order, with the same identity as a one-process
    extraction, so ``fit`` / ``evaluate`` / ``load_store`` read it as one store. A killed
    rank's shard resumes on the next run; finished shards are not recomputed. With
    ``--overwrite`` the new shards are written to ``<store>.shards.new/`` and replace the old
    store and shards only when every shard is complete.

fit
    Every rank holds the per-structure arrays (energies, labels) and streams per-atom
    features from the store batch by batch (``StoreView``), so its memory does not grow
    with the atoms. Splits, folds and seeds are those of a one-process fit. Each member is
    trained with ``DistributedDataParallel``: an epoch's shuffled order is the same on all
    ranks and rank r takes every world-th structure of it (padded to equal length, as
    ``DistributedSampler`` does), with ``batch_size / world`` structures per rank per step,
    so the global batch stays ``batch_size``. Validation and out-of-fold logits are
    computed on each rank's share and gathered, so early stopping and calibration see
    all structures and decide identically on every rank. Rank 0 writes the ``.probe`` file,
    in the same format as a one-process fit. A fixed seed gives the same probe for the
    same world size; another world size gives a probe of the same quality, not the same
    weights (other batches). ``latent_distance`` as a probe input needs every fitting
    structure's pooled features in one place and is refused under torchrun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np

from probe_base.errors import InputError


class Local:
    """One process: every collective is the identity (the default path)."""

    rank, world = 0, 1
    device = "cpu"

    def share(self, indices):
        """This rank's part of ``indices``."""
        return np.asarray(indices)

    def even_share(self, indices):
        """This rank's part, padded so that every rank gets as many (training steps match)."""
        return np.asarray(indices)

    def gather(self, values, n):
        """Undo ``share``: the values of all ranks for all ``n`` indices, in their order."""
        return values

    def all_sum(self, array):
        return array

    def per_rank(self, batch_size):
        return batch_size

    def wrap(self, net):
        return net

    def seed_rank(self, seed):
        pass

    def barrier(self):
        pass


LOCAL = Local()


class Group(Local):
    """The ranks of a torchrun job (``torch.distributed`` initialised)."""

    def __init__(self, rank, world, device):
        self.rank, self.world, self.device = rank, world, device

    def share(self, indices):
        return np.asarray(indices)[self.rank :: self.world]

    def even_share(self, indices):
        per_rank = -(-len(indices) // self.world)
        return np.resize(np.asarray(indices), per_rank * self.world)[self.rank :: self.world]

    def gather(self, values, n):
        import torch
        import torch.distributed as dist

        per_rank = -(-n // self.world)
        local = torch.zeros(per_rank, dtype=torch.float64)
        local[: len(values)] = torch.as_tensor(np.asarray(values, dtype=np.float64))
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        out = np.empty(n, dtype=np.float32)
        for r, part in enumerate(parts):
            out[r :: self.world] = part.numpy()[: len(range(r, n, self.world))]
        return out

    def all_sum(self, array):
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(np.array(array, dtype=np.float64))
        dist.all_reduce(tensor)
        return tensor.numpy()

    def per_rank(self, batch_size):
        return max(1, batch_size // self.world)

    def wrap(self, net):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device] if str(self.device).startswith("cuda") else None
        return DistributedDataParallel(net, device_ids=device_ids)

    def seed_rank(self, seed):
        """Different dropout masks on each rank (weights were already broadcast)."""
        import torch

        torch.manual_seed(seed * 7919 + self.rank)

    def barrier(self):
        import torch.distributed as dist

        dist.barrier()

    def broadcast(self, value):
        """``value`` of rank 0, on every rank (a small picklable object)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched() -> bool:
    """True under torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def session(device="cpu"):
    """``None`` in one process; under torchrun the ``Group`` of ranks, with the process
    group initialised (``gloo`` on CPU; ``nccl`` for CUDA tensors and ``gloo`` for the CPU
    bookkeeping on GPUs; ``PROBE_DIST_BACKEND`` overrides) and torn down afterwards.
    ``device="cuda"`` becomes ``cuda:<LOCAL_RANK>``. Collectives wait up to
    ``PROBE_DIST_TIMEOUT_S`` seconds (default a day: ranks of an extraction finish their
    shards at different times)."""
    if not launched():
        yield None
        return
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if str(device).startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    backend = os.environ.get("PROBE_DIST_BACKEND", backend)
    timeout = timedelta(seconds=float(os.environ.get("PROBE_DIST_TIMEOUT_S", 86400)))
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield Group(rank, world, device)
    finally:
        dist.destroy_process_group()


# ---- extraction -------------------------------------------------------------------------
def shard_path(store_path, rank, world) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".shards") / f"{rank}-of-{world}.h5"


def _selection(input_path, index):
    """(first frame, step, count) of the frames that ``index`` selects in ``input_path``."""
    from ase.io.formats import string2index

    from probe_base.io.data import count_structures

    selection = string2index(index)
    if isinstance(selection, int) or (selection.step or 1) < 0:
        raise InputError(
            f"--index {index!r}: under torchrun the frames must be a forward slice "
            "(such as ':' or '1000:5000'), so that each rank reads a block of them"
        )
    frames = range(count_structures(input_path, ":"))[selection]
    return frames.start, frames.step, len(frames)


def block(n, rank, world):
    """Rank ``rank``'s contiguous block of ``n`` items: [lo, hi)."""
    return n * rank // world, n * (rank + 1) // world


def extract_sharded(
    adapter,
    input_path,
    store_path,
    group,
    *,
    index=":",
    energy_key=None,
    forces_key=None,
    with_forces=True,
    labels=True,
    dtype="float32",
    overwrite=False,
    progress=True,
    **options,
) -> Path:
    """``store.extract`` for one rank of ``group``: its block into its shard, then (rank 0)
    the virtual store over all shards. Every rank returns once the store is complete."""
    import h5py

    from probe_base.store import StoreError, _identity, check_input_unchanged, extract, write_virtual_store

    store_path = Path(store_path)
    identity = _identity(adapter, input_path, index, energy_key, forces_key, with_forces, dtype, labels)
    folder = shard_path(store_path, 0, 1).parent
    # --overwrite: new shards go beside the old ones and replace them only when all are done
    target = folder.with_name(folder.name + ".new") if overwrite else folder
    if store_path.exists() and not overwrite:
        with h5py.File(store_path, "r") as h5:
            if json_equal(h5.attrs["identity"], identity):
                check_input_unchanged(h5, store_path, input_path, identity)
                return store_path
        raise StoreError(
            f"{store_path} exists and was made from other input or another backbone; "
            "pass --overwrite to replace it or choose another output path"
        )
    start, step, n = group.broadcast(_selection(input_path, index) if group.rank == 0 else None)
    lo, hi = block(n, group.rank, group.world)
    extract(
        adapter,
        input_path,
        target / f"{group.rank}-of-{group.world}.h5",
        index=f"{start + lo * step}:{start + hi * step}:{step}",
        energy_key=energy_key,
        forces_key=forces_key,
        with_forces=with_forces,
        labels=labels,
        dtype=dtype,
        progress=progress and group.rank == 0,
        overwrite=overwrite,
        allow_empty=True,
        **options,
    )
    group.barrier()
    if group.rank == 0:
        if overwrite:
            _replace_shards(folder, target)
        write_virtual_store(store_path, [shard_path(store_path, r, group.world) for r in range(group.world)], identity)
        shutil.rmtree(folder.with_name(folder.name + ".old"), ignore_errors=True)
    group.barrier()
    return store_path


def _replace_shards(folder: Path, new: Path):
    """Put the finished shards of ``new`` in place of ``folder`` (two renames; the old
    shards are kept as ``.old`` until the new store file has replaced the old one)."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    new.rename(folder)


def json_equal(stored: str, identity: dict) -> bool:
    import json

    return json.loads(stored) == identity
