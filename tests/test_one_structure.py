"""The folded single-structure network (probe_base/net/one_structure.py) gives what the fused
members give (StackedProbe's padded forward, itself checked against each ProbeNet)."""

import numpy as np
import pytest
import torch

from probe_base.net.model import ProbeNet
from probe_base.net.one_structure import OneStructureNet
from probe_base.net.stacked import StackedProbe


def _members(attention, per_element_norm, element_embedding, n_features=12, members=3, layers=1):
    torch.manual_seed(0)
    nets = []
    mean = torch.randn((119, n_features) if per_element_norm else (n_features,))
    std = torch.rand(mean.shape) + 0.5
    for _ in range(members):
        net = ProbeNet(
            n_features,
            hidden=16,
            heads=4,
            attention_layers=layers,
            dropout=0.0,
            n_extras=2,
            element_embedding=element_embedding,
            per_element_norm=per_element_norm,
            attention=attention,
            queries=3,
        ).eval()
        with torch.no_grad():
            for p in net.parameters():  # LayerNorm affine away from (1, 0), so folding it matters
                p.add_(0.3 * torch.randn_like(p))
        net.feature_mean.copy_(mean)
        net.feature_std.copy_(std)
        net.extras_mean.copy_(torch.tensor([-3.0, 2.0]))
        net.extras_std.copy_(torch.tensor([0.5, 0.3]))
        net.extras_low.copy_(torch.tensor([-2.0, -1.5]))
        net.extras_high.copy_(torch.tensor([2.0, 1.0]))
        nets.append(net)
    return nets


@pytest.mark.parametrize("attention", ["pooling", "self"])
@pytest.mark.parametrize("per_element_norm", [False, True])
@pytest.mark.parametrize("element_embedding", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_folded_network_matches_the_fused_members(attention, per_element_norm, element_embedding, layers):
    stacked = StackedProbe(_members(attention, per_element_norm, element_embedding, layers=layers))
    assert OneStructureNet.supports(stacked)
    folded = OneStructureNet(stacked)
    rng = np.random.default_rng(1)
    for n in (1, 7, 40):
        features = torch.from_numpy(rng.normal(size=(1, n, 12)).astype(np.float32))
        z = torch.from_numpy(rng.choice([1, 6, 8], n))[None]
        # one extra inside the clamp range, one far outside: the clamp must act alike
        extras = torch.tensor([[-3.2, 9.0]])
        want_logits, want_importance = stacked(features, z, None, extras, return_importance=True)
        with torch.inference_mode():
            logits, importance = folded(features[0], z[0], extras)
        np.testing.assert_allclose(logits.numpy(), want_logits.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(importance.numpy(), want_importance.numpy(), rtol=1e-4, atol=1e-6)
        assert importance.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_one_traces_the_folded_network_once_per_atom_count():
    stacked = StackedProbe(_members("pooling", False, True))
    features, z, extras = torch.randn(1, 9, 12), torch.full((1, 9), 6), torch.tensor([[-3.0, 2.0]])
    first = stacked.one(features, z, extras, return_importance=True)
    again = stacked.one(features + 0.1, z, extras, return_importance=True)
    assert isinstance(stacked._folded, OneStructureNet) and list(stacked._traced) == [9]
    want = stacked(features + 0.1, z, None, extras, return_importance=True)
    np.testing.assert_allclose(again[0].numpy(), want[0].numpy(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first[0], again[0])  # the graph reads its inputs, not the first call's
    logits, none = stacked.one(features, z, extras, return_importance=False)
    assert none is None and torch.allclose(logits, first[0])


def test_structure_scorer_gives_what_score_gives(toy_files, fitted_probe):
    """What a calculator's step computes equals scoring the structure as a one-structure
    set, for structures inside and outside the domain, and after the atoms change."""
    import ase.io

    from probe_base.artifact import load_probe
    from probe_base.scoring import StructureScorer, score
    from probe_base.store import FeatureSet
    from probe_base.toy import ToyAdapter

    artifact = load_probe(fitted_probe)
    assert artifact.domain is not None and artifact.atom_errors is not None
    adapter = ToyAdapter(toy_files["models"][:1])
    scorer = StructureScorer(artifact)
    frames = ase.io.read(toy_files["heldout"], ":4")
    stretched = frames[0].copy()
    stretched.positions *= 1.6  # far outside: the domain must say so, with its reasons
    seen_outside = False
    for atoms in [*frames, stretched, frames[1]]:
        out = adapter.run([atoms], members=False)
        X = FeatureSet.from_backbone_output(out, [atoms])
        want = score(artifact, X)
        got = scorer(X.features, X.atomic_numbers, float(X.energy_pred[0]))
        np.testing.assert_allclose(got.p_network, want.p_network, rtol=1e-5)
        np.testing.assert_array_equal(got.in_domain, want.in_domain)
        np.testing.assert_allclose(got.p_reliable, want.p_reliable, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got.novelty, want.novelty, rtol=1e-6)
        np.testing.assert_allclose(got.atom_novelty[0], want.atom_novelty[0], rtol=1e-6)
        np.testing.assert_allclose(got.atom_error[0], want.atom_error[0], rtol=1e-4)
        np.testing.assert_allclose(got.importance[0], want.importance[0], rtol=1e-4, atol=1e-7)
        assert got.reasons == want.reasons
        seen_outside |= not bool(got.in_domain[0])
    assert seen_outside
    from probe_base.errors import ProbeError

    with pytest.raises(ProbeError, match="features per atom"):
        scorer(X.features[:, :-1], X.atomic_numbers, 0.0)


@pytest.mark.parametrize("distances", [1 << 20, 1])  # one product for all elements; per element
def test_one_structure_domain_search_equals_the_per_element_one(distances, monkeypatch):
    """novelty_of_one (what a calculator's step calls) gives ``novelty``'s numbers, with an
    element the reference never had (Z = 9) among the atoms."""
    from probe_base.domain import one_structure_search as search_module
    from probe_base.domain.model import DomainModel
    from probe_base.domain.one_structure_search import OneStructureSearch
    from probe_base.store import FeatureSet

    monkeypatch.setattr(search_module, "ONE_STRUCTURE_DISTANCES", distances)
    rng = np.random.default_rng(0)

    def structures(n, seed, elements=(1, 6, 8)):
        r = np.random.default_rng(seed)
        counts = r.integers(4, 10, n)
        z = r.choice(elements, counts.sum())
        feats = np.stack([np.full(6, 3.0 * e % 7) for e in z]) + r.normal(size=(len(z), 6))
        return FeatureSet(feats.astype(np.float32), z, np.concatenate([[0], np.cumsum(counts)]), r.normal(size=n))

    domain = DomainModel().fit(structures(300, 0), structures(100, 1))
    for z in ([1, 6, 6, 8, 1, 1], [1, 6, 9, 8]):
        z = np.array(z)
        feats = (rng.normal(size=(len(z), 6)) + np.array([3.0 * e % 7 for e in z])[:, None]).astype(np.float32)
        X = FeatureSet(feats, z, np.array([0, len(z)]), np.array([0.1]))
        search = domain.one_structure_search(z)
        assert isinstance(search, OneStructureSearch) == (distances > 1)
        structure, atoms = domain.novelty_of_one(feats, search, 0.1)
        want_structure, want_atoms = domain.novelty(X)
        assert structure == pytest.approx(want_structure[0], rel=1e-5)
        np.testing.assert_allclose(atoms, want_atoms[0], rtol=1e-5)
    assert atoms[2] > 1e3  # the unseen fluorine


def test_members_built_in_float64_take_float32_features():
    """nequip sets torch's default dtype to float64, so probe nets built after importing it
    are float64 while the features stay float32 (the fused path promotes them alike)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        stacked = StackedProbe(_members("self", False, True))
    finally:
        torch.set_default_dtype(previous)
    features, z, extras = torch.randn(1, 6, 12), torch.full((1, 6), 8), torch.tensor([[-3.0, 2.0]])
    logits, importance = stacked.one(features, z, extras, return_importance=True)
    want = stacked(features, z, None, extras, return_importance=True)
    np.testing.assert_allclose(logits.numpy(), want[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(importance.numpy(), want[1].numpy(), rtol=1e-6)
