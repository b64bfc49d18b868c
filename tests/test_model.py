import pytest
import torch

from probe_base.net import model as model_module
from probe_base.net.model import ProbeNet


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return ProbeNet(6, hidden=16, heads=4, n_extras=2, **kw).eval()


def _inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, n, 6, generator=g),
        torch.randint(1, 9, (1, n), generator=g),
        torch.ones(1, n, dtype=torch.bool),
        torch.randn(1, 2, generator=g),
    )


@pytest.mark.parametrize("attention", ["self", "pooling"])
def test_invariant_to_atom_order_and_importance_follows_atoms(attention):
    net = _net(attention=attention)
    feats, z, mask, extras = _inputs(11)
    perm = torch.randperm(11)
    with torch.no_grad():
        logit, imp = net(feats, z, mask, extras, return_importance=True)
        logit_p, imp_p = net(feats[:, perm], z[:, perm], mask, extras, return_importance=True)
    torch.testing.assert_close(logit, logit_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(imp[0, perm], imp_p[0], atol=1e-6, rtol=0)
    assert abs(float(imp.sum()) - 1) < 1e-5


@pytest.mark.parametrize("attention", ["self", "pooling"])
def test_invariant_to_padding(attention):
    net = _net(element_embedding=True, attention=attention)
    feats, z, mask, extras = _inputs(5)
    padded_feats = torch.cat([feats, torch.randn(1, 7, 6) * 100], dim=1)
    padded_z = torch.cat([z, torch.randint(1, 9, (1, 7))], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 7, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a, imp_a = net(feats, z, mask, extras, return_importance=True)
        b, imp_b = net(padded_feats, padded_z, padded_mask, extras, return_importance=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(imp_a[0], imp_b[0, :5], atol=1e-6, rtol=0)
    assert float(imp_b[0, 5:].abs().sum()) == 0


def test_query_chunking_is_exact(monkeypatch):
    net = _net(attention_layers=2, attention="self")
    feats, z, mask, extras = _inputs(50)
    with torch.no_grad():
        full, imp_full = net(feats, z, mask, extras, return_importance=True)
        monkeypatch.setattr(model_module, "QUERY_CHUNK", 7)
        chunked, imp_chunked = net(feats, z, mask, extras, return_importance=True)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=0)
    torch.testing.assert_close(imp_full, imp_chunked, atol=1e-6, rtol=0)


def test_per_element_normalisation_uses_each_elements_statistics():
    net = _net(per_element_norm=True)
    net.feature_mean[6] = 5.0
    feats = torch.full((1, 2, 6), 5.0)
    out = net.normalise(feats, torch.tensor([[6, 8]]))
    assert torch.all(out[0, 0] == 0) and torch.all(out[0, 1] == 5.0)
