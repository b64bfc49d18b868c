"""What ``torchsim-cost`` times: a small randomly initialised MACE model, rattled ethanol
molecules, and a probe with ``probe fit``'s parts fitted on that model's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _mace(seed: int):
    import mace  # noqa: F401  (mace before e3nn)
    import torch
    from e3nn import o3
    from mace import modules

    elements = [1, 6, 8]
    e0s = {1: -13.568, 6: -1025.277, 8: -2035.571}
    torch.manual_seed(seed)
    model = modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(elements),
        hidden_irreps=o3.Irreps("32x0e"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([e0s[z] for z in elements]),
        avg_num_neighbors=8.0,
        atomic_numbers=elements,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    return model.double().eval()


def _ethanols(n: int, seed: int, scales=(0.03,)):
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=scales[k % len(scales)], size=atoms.positions.shape)
        out.append(atoms)
    return out


def _backbone_and_probe(folder: Path):
    """The model file and a probe fitted on its features (domain + per-atom head)."""
    import torch
    from probe_mace import MACEAdapter

    from probe_base.artifact import save_probe
    from probe_base.domain.model import DomainModel
    from probe_base.labels import LabelSpec
    from probe_base.net.atom_errors import AtomErrorModel
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import FeatureSet

    paths = []
    for seed in (1, 2):
        path = folder / f"seed{seed}.model"
        torch.save(_mace(seed), path)
        paths.append(path)
    scales = np.linspace(0.0, 0.2, 100)
    structures = _ethanols(len(scales), seed=5, scales=scales)
    out = MACEAdapter(paths).run(structures, members=True)
    X = FeatureSet.from_backbone_output(out, structures)
    y = (scales < 0.1).astype(int)
    classifier = ProbeClassifier(max_epochs=20, patience=5, seed=0).fit(X, y)
    errors = np.concatenate([np.linalg.norm(f[0] - f[1], axis=1) for f in out.member_forces])
    head = AtomErrorModel(seed=0).fit(X, errors)
    domain = DomainModel().fit(X.subset(np.flatnonzero(y == 1)))
    probe = folder / "ethanol.probe"
    fingerprint = MACEAdapter(paths[:1]).fingerprint()
    save_probe(probe, classifier, LabelSpec("energy", threshold=0.1), fingerprint, {}, domain, head)
    return paths[0], probe
