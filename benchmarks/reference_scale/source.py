"""The features the reference-scale benchmark indexes: TinyMLIP features of EMT Cu clusters,
a reference of any size streamed from the real atoms replicated with noise
(``ReplicatedSource``, also read by ``benchmarks.evaluate_scale``), its exact neighbours for
recall, and the MD run the kept search is timed on."""

from __future__ import annotations

import numpy as np


def _features(model, frames):
    """(features (atoms, 64), atomic numbers, offsets, energies) of ``frames``."""
    import torch

    from probe_base.toy import batch_tensors

    layers = [model.get_submodule(f"interactions.{i}") for i in range(model.config["n_interactions"])]
    feats, zs, energies, counts = [], [], [], []
    captured = []
    handles = [layer.register_forward_hook(lambda m, i, o: captured.append(o.detach())) for layer in layers]
    try:
        for start in range(0, len(frames), 64):
            batch = frames[start : start + 64]
            captured.clear()
            with torch.no_grad():
                numbers, positions, structure = batch_tensors(batch)
                energy = model(numbers, positions, structure)
            feats.append(torch.cat(captured, dim=1).numpy())
            zs.append(numbers.numpy())
            energies.append(energy.numpy())
            counts += [len(a) for a in batch]
    finally:
        for h in handles:
            h.remove()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate(feats).astype(np.float32), np.concatenate(zs), offsets, np.concatenate(energies)


class ReplicatedSource:
    """``n`` reference atoms: the real atoms, then replicas of them with Gaussian noise (a
    ``build_reference`` source, streamed in chunks)."""

    def __init__(self, real, z, energies, counts, n, noise, chunk=1 << 18, seed=0):
        self.real, self.z, self.n, self.chunk, self.seed = real, z, int(n), chunk, seed
        self.sigma = noise * real.std(0)
        self.n_features = real.shape[1]
        self.n_atoms = self.n
        reps = max(1, -(-self.n // len(real)))
        self._scalars = (np.tile(energies, reps), np.tile(counts.astype(np.float64), reps))

    def structure_scalars(self):
        return self._scalars

    def block(self, start, stop):
        rows = np.arange(start, stop) % len(self.real)
        x = self.real[rows].copy()
        noisy = np.arange(start, stop) >= len(self.real)
        if noisy.any():
            rng = np.random.default_rng([self.seed, start])
            x[noisy] += (rng.standard_normal((int(noisy.sum()), self.n_features), dtype=np.float32)) * self.sigma
        return x, self.z[rows]

    def identity(self):
        return {"replicated": self.n, "real_atoms": len(self.real), "seed": self.seed, "chunk_atoms": self.chunk}

    def chunks(self, features=True, skip=0):
        for start in range(skip * self.chunk, self.n, self.chunk):
            x, z = self.block(start, min(self.n, start + self.chunk))
            yield (x if features else None), z


def _exact_neighbours(source, queries, k, mean, std):
    """Exact k nearest (labels, squared distances) of standardised ``queries`` over the
    whole streamed reference, chunk by chunk (FAISS brute-force k-NN, merged)."""
    import faiss

    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    position = 0
    for x, _ in source.chunks():
        x = ((x - mean) / std).astype(np.float32)
        d, i = faiss.knn(queries, x, k)
        d_all = np.concatenate([best_d, d], 1)
        i_all = np.concatenate([best_i, i + position], 1)
        order = np.argsort(d_all, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
        position += len(x)
    return best_i, best_d


def _md_trajectory(model, steps, temperature=300.0, rattle=0.05, seed=0):
    """Features of ``steps`` steps of a 140-atom in-distribution "MD run": five Cu clusters
    of the reference's kinds (38 x 3 + 13 x 2 atoms), each frame the ideal cluster plus a
    Gaussian displacement of ``rattle`` A per coordinate (what the reference's structures
    are), the displacements an Ornstein-Uhlenbeck process whose change per 2 fs step is the
    thermal motion of Cu at ``temperature`` (sqrt(kT/m) x 2 fs, 0.004 A at 300 K). Not
    EMT dynamics: a Langevin run relaxes the clusters away from the ideal geometry the
    reference holds, and every frame of it is flagged. Read by the backbone at every step."""
    from ase import units
    from ase.cluster import Icosahedron, Octahedron

    rng = np.random.default_rng(seed)
    clusters = [Octahedron("Cu", 4, 1) for _ in range(3)] + [Icosahedron("Cu", 2) for _ in range(2)]
    for atoms in clusters:
        atoms.set_cell(None)
        atoms.pbc = False
    step = float(np.sqrt(units.kB * temperature / clusters[0].get_masses()[0]) * 2 * units.fs)
    keep = 1.0 - step**2 / (2 * rattle**2)  # the OU correlation that gives this change per step
    ideal = [a.positions.copy() for a in clusters]
    shift = [rng.normal(0, rattle, p.shape) for p in ideal]
    frames = []
    for _ in range(steps):
        shift = [keep * d + np.sqrt(1 - keep**2) * rng.normal(0, rattle, d.shape) for d in shift]
        for atoms, p, d in zip(clusters, ideal, shift):
            atoms.positions = p + d
        frames.append(np.concatenate([_features(model, [atoms])[0] for atoms in clusters]))
    return frames
