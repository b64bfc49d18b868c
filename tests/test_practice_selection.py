"""Active-learning pick (probe_base.selection): lowest reliability vs diverse batches."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

from probe_base.selection import farthest_point_sampling, select_structures

torch.set_num_threads(1)

try:
    import practice_toy  # the tiny trained backbone + probe shared by the practice tests
except ImportError:  # tests/ imported as a package
    from tests import practice_toy


def test_diverse_spreads_over_clusters_synthetic():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    cluster = np.repeat(np.arange(4), 10)
    embeddings = centres[cluster] + rng.normal(0, 0.01, (40, 2))  # near-duplicates per cluster
    p = np.where(cluster == 0, 0.05, 0.3) + rng.uniform(0, 0.01, 40)  # cluster 0 least reliable
    p[cluster == 3] = 0.9  # reliable cluster: never a candidate
    plain = select_structures(p, 4)
    assert set(cluster[plain]) == {0}
    diverse = select_structures(p, 4, embeddings, diverse=True, candidate_factor=5)
    assert diverse[0] == np.argmin(p)  # starts from the least reliable structure
    assert sorted(cluster[diverse][:3]) == [0, 1, 2]  # one per unreliable cluster first
    assert 3 not in set(cluster[select_structures(p, 3, embeddings, diverse=True, candidate_factor=2)])


def test_farthest_point_sampling_basics():
    points = np.array([[0.0], [1.0], [1.0], [5.0], [2.5]])
    assert list(farthest_point_sampling(points, 3)) == [0, 3, 4]
    assert len(farthest_point_sampling(points, 10)) == 5
    assert set(farthest_point_sampling(points, 5)) == set(range(5))


def test_select_cli_on_pool_with_near_duplicates(tmp_path):
    """A pool where the worst structure has 8 near-copies: the plain pick is 4 copies of one
    failure, the diverse pick takes one of them and three other structures."""
    from probe_base import toy as toy_module
    from probe_base.artifact import load_probe
    from probe_base.cli import main
    from probe_base.selection import score_pool

    toy = practice_toy.toy_probe()
    base = toy_module.emt_clusters(30, seed=11, rattle=(0.02, 0.3), vacancy_fraction=0.3)
    for atoms in base:
        atoms.calc = None
    ase.io.write(tmp_path / "base.xyz", base)
    scored = score_pool(load_probe(toy["probe"]), toy["adapter"], tmp_path / "base.xyz")
    worst = base[int(np.argmin(scored["p_reliable"]))]
    rng = np.random.default_rng(0)
    copies = []
    for _ in range(8):
        copy = worst.copy()
        copy.positions += rng.normal(0, 1e-4, copy.positions.shape)
        copies.append(copy)
    pool = base + copies  # pool indices 30..37 are the copies (plus the original)
    ase.io.write(tmp_path / "pool.xyz", pool)
    duplicate_group = {int(np.argmin(scored["p_reliable"]))} | set(range(30, 38))

    common = [
        "select",
        "--adapter",
        "toy",
        "--model",
        str(toy["model"]),
        "--probe",
        str(toy["probe"]),
        "--input",
        str(tmp_path / "pool.xyz"),
        "--n",
        "4",
    ]
    assert main(common + ["--output", str(tmp_path / "plain.xyz")]) == 0
    assert main(common + ["--diverse", "--output", str(tmp_path / "diverse.xyz")]) == 0
    plain = ase.io.read(tmp_path / "plain.xyz", ":")
    diverse = ase.io.read(tmp_path / "diverse.xyz", ":")
    plain_idx = [a.info["probe_pool_index"] for a in plain]
    diverse_idx = [a.info["probe_pool_index"] for a in diverse]
    assert set(plain_idx) <= duplicate_group
    assert len(set(diverse_idx) & duplicate_group) == 1 and len(set(diverse_idx)) == 4
    # annotated for labelling: reliability per structure, importance per atom
    for atoms in plain + diverse:
        assert 0 <= atoms.info["probe_reliability"] <= 1
        assert atoms.arrays["probe_importance"].shape == (len(atoms),)
        assert atoms.arrays["probe_importance"].sum() == pytest.approx(1.0, abs=1e-5)
    assert [a.info["probe_rank"] for a in diverse] == [0, 1, 2, 3]
    p_plain = [a.info["probe_reliability"] for a in plain]
    assert p_plain == sorted(p_plain)
