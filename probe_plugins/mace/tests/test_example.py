"""probe demo's shipped MACE ensemble: copied (never trained here), loadable, and an actual
Cu cluster potential (EMT energies to a few meV/atom on the training distribution)."""

from __future__ import annotations

import numpy as np
from probe_mace import MACEAdapter
from probe_mace.example import SHIPPED_MEMBERS, shipped_model

from probe_base.toy import emt_clusters


def test_shipped_example_models_predict_emt_energies(tmp_path):
    shipped = [shipped_model(k) for k in range(SHIPPED_MEMBERS)]
    assert all(path is not None for path in shipped), "example_models/*.model not packaged"
    assert all(path.stat().st_size < 1_000_000 for path in shipped)

    # retrain=False with shipped members: the train file is never read (no training).
    paths = MACEAdapter.example_models(tmp_path / "absent.xyz", tmp_path / "models", SHIPPED_MEMBERS, retrain=False)
    assert [p.name for p in paths] == [f"member{k}.model" for k in range(SHIPPED_MEMBERS)]
    assert all(p.parent == tmp_path / "models" and p.is_file() for p in paths)

    adapter = MACEAdapter(paths)
    assert adapter.supported_elements() == {29}
    clusters = emt_clusters(24, seed=123, rattle=(0.02, 0.08))  # demo's training distribution
    reference = np.array([a.get_potential_energy() for a in clusters])
    n_atoms = np.array([len(a) for a in clusters])
    out = adapter.run(clusters, compute_forces=False, members=True)
    members = np.asarray(out.member_energies).T  # (members, structures)
    assert members.shape == (SHIPPED_MEMBERS, len(clusters))
    for energies in members:
        mae = np.mean(np.abs(energies - reference) / n_atoms)
        assert mae < 0.015, f"energy MAE {mae * 1e3:.1f} meV/atom"
    # members differ by seed: a non-degenerate ensemble
    assert np.std(members, axis=0).mean() > 1e-5
