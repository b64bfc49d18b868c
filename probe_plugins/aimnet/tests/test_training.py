"""Models trained on the fly by aimnet's own tools (`aimnet train`, `aimnet export`)."""

from __future__ import annotations

import numpy as np
from probe_aimnet import AIMNet2Adapter


def _errors(path, frames):
    out = AIMNet2Adapter([path]).run(frames, members=False)
    e = out.energies - np.array([a.get_potential_energy() for a in frames])
    f = np.concatenate(out.forces) - np.concatenate([a.get_forces() for a in frames])
    return np.abs(e - e.mean()).mean(), np.abs(f).mean()


def test_trained_model_learns_and_loads_as_v2(trained_path, model_paths, emt_data):
    import torch

    _, _, test = emt_data
    artifact = torch.load(trained_path, weights_only=True)
    assert artifact["format_version"] == 2 and artifact["needs_coulomb"]
    assert artifact["implemented_species"] == [1, 6, 8]
    assert artifact["state_dict"]["outputs.atomic_shift.shifts.weight"].dtype == torch.float64
    trained_e, trained_f = _errors(trained_path, test)
    untrained_e, untrained_f = _errors(model_paths[0], test)
    assert trained_f < 0.7 * untrained_f, (trained_f, untrained_f)
    assert trained_e < untrained_e, (trained_e, untrained_e)
