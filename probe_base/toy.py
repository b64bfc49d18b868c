"""A small, real message-passing MLIP (SchNet-style) and EMT-labelled metal clusters.

It exists so that the whole PROBE chain can be run and tested without any backbone
framework installed: ``train`` fits it in seconds on ASE EMT labels (``probe demo --backbone
toy`` and the tests do), and the ``toy`` adapter below reads its interaction layers.
The adapter is no installed plugin (``probe plugins`` does not list it): the tests' conftest
and ``probe demo --backbone toy`` call ``register_toy_adapter()`` to use it by name.
It is also the worked example of an adapter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from probe_base.adapter import Adapter, FeatureLayer
from probe_base.hookspecs import hookimpl

ELEMENTS = (28, 29, 46, 47, 78, 79)  # Ni Cu Pd Ag Pt Au: what ASE's EMT covers well


class Interaction(nn.Module):
    """Continuous-filter convolution followed by an atom-wise update (SchNet)."""

    def __init__(self, hidden, n_rbf, cutoff):
        super().__init__()
        self.cutoff = cutoff
        self.filter = nn.Sequential(nn.Linear(n_rbf, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.message = nn.Linear(hidden, hidden)
        self.update = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, rbf, envelope, senders, receivers):
        w = self.filter(rbf) * envelope[:, None]
        messages = self.message(h)[senders] * w
        aggregated = torch.zeros_like(h).index_add_(0, receivers, messages)
        return h + self.update(aggregated)


class TinyMLIP(nn.Module):
    def __init__(self, hidden=32, n_interactions=2, n_rbf=16, cutoff=4.5):
        super().__init__()
        self.config = dict(hidden=hidden, n_interactions=n_interactions, n_rbf=n_rbf, cutoff=cutoff)
        self.cutoff = cutoff
        self.embedding = nn.Embedding(119, hidden)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf))
        self.interactions = nn.ModuleList(Interaction(hidden, n_rbf, cutoff) for _ in range(n_interactions))
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.register_buffer("atom_energy", torch.zeros(119))
        self.register_buffer("energy_scale", torch.ones(()))

    def forward(self, numbers, positions, structure):
        """numbers (A,), positions (A, 3), structure (A,) index of each atom's structure.
        Returns energies (n_structures,). Isolated clusters (no periodic images)."""
        same = structure[:, None] == structure[None, :]
        distance = torch.cdist(positions, positions)
        pairs = same & (distance < self.cutoff) & ~torch.eye(len(numbers), dtype=torch.bool, device=positions.device)
        senders, receivers = pairs.nonzero(as_tuple=True)
        r = (positions[senders] - positions[receivers]).norm(dim=1)
        width = self.centers[1] - self.centers[0]
        rbf = torch.exp(-(((r[:, None] - self.centers) / width) ** 2))
        envelope = 0.5 * (torch.cos(np.pi * r / self.cutoff) + 1.0)
        h = self.embedding(numbers)
        for interaction in self.interactions:
            h = interaction(h, rbf, envelope, senders, receivers)
        atomic = self.readout(h).squeeze(-1) * self.energy_scale + self.atom_energy[numbers]
        n_structures = int(structure.max()) + 1 if len(structure) else 0
        return torch.zeros(n_structures, dtype=atomic.dtype, device=atomic.device).index_add_(0, structure, atomic)


def batch_tensors(atoms_list):
    numbers = torch.from_numpy(np.concatenate([a.numbers for a in atoms_list]).astype(np.int64))
    positions = torch.from_numpy(np.concatenate([a.positions for a in atoms_list]).astype(np.float32))
    structure = torch.from_numpy(np.repeat(np.arange(len(atoms_list)), [len(a) for a in atoms_list]))
    return numbers, positions, structure


def energies_and_forces(model, atoms_list, compute_forces=True):
    device = model.centers.device
    numbers, positions, structure = (t.to(device) for t in batch_tensors(atoms_list))
    with torch.enable_grad():
        positions.requires_grad_(compute_forces)
        energies = model(numbers, positions, structure)
        forces = None
        if compute_forces:
            forces = -torch.autograd.grad(energies.sum(), positions)[0]
    return energies.detach(), forces


def save_model(model: TinyMLIP, path):
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)


def load_model(path) -> TinyMLIP:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = TinyMLIP(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model


def train(
    atoms_list,
    energies,
    forces,
    seed=0,
    epochs=60,
    hidden=32,
    lr=3e-3,
    force_weight=10.0,
    batch_size=16,
    progress=False,
) -> TinyMLIP:
    """Fit a TinyMLIP to energies and forces (a few seconds for ~200 small clusters)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = TinyMLIP(hidden=hidden)
    n_atoms = np.array([len(a) for a in atoms_list])
    # per-atom mean energy as the reference, so the network learns the remainder
    mean_per_atom = float(np.mean(np.asarray(energies) / n_atoms))
    for z in {int(z) for a in atoms_list for z in a.numbers}:
        model.atom_energy[z] = mean_per_atom
    residual = np.asarray(energies) - mean_per_atom * n_atoms
    model.energy_scale.fill_(float(np.std(residual / n_atoms)) + 1e-3)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    e_ref = torch.tensor(np.asarray(energies), dtype=torch.float32)
    for _ in tqdm(range(epochs), desc="train toy MLIP", disable=not progress):
        order = rng.permutation(len(atoms_list))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [atoms_list[i] for i in idx]
            numbers, positions, structure = batch_tensors(batch)
            positions.requires_grad_(True)
            e = model(numbers, positions, structure)
            f = -torch.autograd.grad(e.sum(), positions, create_graph=True)[0]
            f_ref = torch.from_numpy(np.concatenate([forces[i] for i in idx]).astype(np.float32))
            counts = torch.from_numpy(n_atoms[idx]).float()
            loss = (((e - e_ref[idx]) / counts) ** 2).mean() + force_weight * ((f - f_ref) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def emt_clusters(n, seed=0, rattle=(0.02, 0.10), vacancy_fraction=0.0, strain=(1.0, 1.0), alloy_fraction=0.0):
    """``n`` EMT-labelled Cu clusters (13/19/38 atoms): random rattle amplitude, optional
    vacancies, strain and Au substitutions. Energies and forces sit in a
    SinglePointCalculator, as when read from an extxyz file."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.cluster import Icosahedron, Octahedron

    rng = np.random.default_rng(seed)
    templates = [Icosahedron("Cu", 2), Octahedron("Cu", 3, 1), Octahedron("Cu", 4, 1)]
    out = []
    for i in range(n):
        atoms = templates[rng.integers(len(templates))].copy()
        atoms.set_cell(None)
        atoms.pbc = False
        atoms.positions *= rng.uniform(*strain)
        if rng.random() < vacancy_fraction:
            del atoms[int(rng.integers(len(atoms)))]
        if rng.random() < alloy_fraction:
            numbers = atoms.numbers.copy()
            numbers[rng.choice(len(atoms), size=max(1, len(atoms) // 6), replace=False)] = 79
            atoms.numbers = numbers
        atoms.positions += rng.normal(0, rng.uniform(*rattle), atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        atoms.info["config_type"] = f"rattle{i}"
        out.append(atoms)
    return out


class ToyAdapter(Adapter):
    """Adapter for ``TinyMLIP`` files: features = the output of each interaction block."""

    name = "toy"
    version = "1"
    ase_calculator = "probe_base.toy:ToyCalculator"

    def load_model(self, path: Path):
        return load_model(path).to(self.device)

    def feature_layers(self):
        model = self.models[0]
        width = model.config["hidden"]
        return [
            FeatureLayer(f"interactions.{i}", width, "atom embedding after interaction block")
            for i in range(model.config["n_interactions"])
        ]

    def layer_module(self, model, layer):
        return model.get_submodule(layer)

    def invariant_features(self, layer, output):
        return output  # (n_atoms, hidden): already invariant scalars

    def predict(self, model, atoms_list, compute_forces):
        return energies_and_forces(model, atoms_list, compute_forces)

    def supported_elements(self):
        return set(ELEMENTS)

    @classmethod
    def example_models(cls, train_file, workdir, n_members, retrain=False):
        import ase.io

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        frames = ase.io.read(train_file, ":")
        paths = []
        for k in range(n_members):
            path = workdir / f"toy{k}.pt"
            if retrain or not path.exists():
                save_model(
                    train(
                        frames,
                        [a.get_potential_energy() for a in frames],
                        [a.get_forces() for a in frames],
                        seed=k,
                        epochs=40,
                        progress=True,
                    ),
                    path,
                )
            paths.append(path)
        return paths


class ToyCalculator(Calculator):
    """ASE calculator for a TinyMLIP file (energy, forces)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model_path):
        super().__init__()
        self.model = load_model(model_path)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energies, forces = energies_and_forces(self.model, [self.atoms])
        self.results = {
            "energy": float(energies[0]),
            "free_energy": float(energies[0]),
            "forces": forces.numpy().astype(np.float64),
        }


@hookimpl
def register_adapters(register):
    register(ToyAdapter)


def register_toy_adapter():
    """Make ``toy`` an adapter name in this process (``--adapter toy``, ``attach`` of a
    ``ToyCalculator``): this module registered as a plugin through the plugin manager."""
    import sys

    from probe_base.plugins import register_plugin

    register_plugin(sys.modules[__name__], name="toy")
