"""The fused members (StackedProbe) and the linear-time pooling probe."""

import numpy as np
import pytest
import torch

from probe_base.net import stacked as stacked_module
from probe_base.net.model import ProbeNet
from probe_base.net.stacked import StackedProbe


def _members(attention, n=3, **kw):
    torch.manual_seed(0)
    nets = [
        ProbeNet(6, hidden=16, heads=4, attention_layers=2, n_extras=2, attention=attention, **kw).eval()
        for _ in range(n)
    ]
    for net in nets:  # distinct, non-trivial weights and normalisation for every member
        for p in net.parameters():
            p.data.normal_(0, 0.3)
        net.feature_mean.normal_()
        net.extras_mean.normal_()
    return nets


def _batch(seed=0, b=3, n=9):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n, dtype=torch.bool)
    if b == 3:  # three sizes of structure in one padded batch
        mask[1, 5:] = False
        mask[2, 2:] = False
    return (
        torch.randn(b, n, 6, generator=g),
        torch.randint(1, 9, (b, n), generator=g),
        mask,
        torch.randn(b, 2, generator=g),
    )


@pytest.mark.parametrize("attention", ["self", "pooling"])
@pytest.mark.parametrize("per_element_norm", [False, True])
def test_stacked_members_equal_each_member(attention, per_element_norm, monkeypatch):
    nets = _members(attention, per_element_norm=per_element_norm)
    feats, z, mask, extras = _batch()
    with torch.no_grad():
        outs = [net(feats, z, mask, extras, return_importance=True) for net in nets]
    expected_logits = torch.stack([o[0] for o in outs])
    expected_importance = torch.stack([o[1] for o in outs]).mean(0)
    stacked = StackedProbe(nets)
    logits, importance = stacked(feats, z, mask, extras, return_importance=True)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(importance, expected_importance, atol=1e-6, rtol=1e-5)
    without, none = stacked(feats, z, mask, extras)
    assert none is None
    torch.testing.assert_close(without, expected_logits, atol=1e-5, rtol=1e-5)
    # one structure without padding: the mask-free path gives each member's result
    one = [net(feats[:1, :7], z[:1, :7], mask[:1, :7], extras[:1], return_importance=True) for net in nets]
    logits_one, importance_one = stacked(feats[:1, :7], z[:1, :7], None, extras[:1], return_importance=True)
    torch.testing.assert_close(logits_one, torch.stack([o[0] for o in one]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(importance_one, torch.stack([o[1] for o in one]).mean(0), atol=1e-6, rtol=1e-5)
    monkeypatch.setattr(stacked_module, "SCORE_ELEMENTS", 3 * 4 * 9 * 2)  # 2 queries per chunk
    chunked, chunked_importance = stacked(feats, z, mask, extras, return_importance=True)
    torch.testing.assert_close(chunked, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked_importance, expected_importance, atol=1e-6, rtol=1e-5)


def test_shared_weights_are_broadcast_not_copied():
    nets = _members("pooling", n=2)
    nets[1].load_state_dict(nets[0].state_dict())
    nets[1].head[3].bias.data += 1.0  # only the last bias differs
    stacked = StackedProbe(nets)
    assert stacked.encoder.first.weight.shape[0] == 1 and stacked.head.second.bias.shape[0] == 2
    feats, z, mask, extras = _batch()
    logits, _ = stacked(feats, z, mask, extras)
    torch.testing.assert_close(logits[1] - logits[0], torch.ones(3), atol=1e-5, rtol=0)


def test_pooling_probe_is_invariant_to_atom_order_and_padding():
    net = _members("pooling", n=1)[0]
    feats, z, mask, extras = _batch(b=1, n=11)
    perm = torch.randperm(11)
    padded = (
        torch.cat([feats, 100 * torch.randn(1, 4, 6)], 1),
        torch.cat([z, torch.ones(1, 4, dtype=torch.long)], 1),
        torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], 1),
    )
    with torch.no_grad():
        logit, imp = net(feats, z, mask, extras, return_importance=True)
        logit_p, imp_p = net(feats[:, perm], z[:, perm], mask, extras, return_importance=True)
        logit_pad, imp_pad = net(*padded, extras, return_importance=True)
    torch.testing.assert_close(logit, logit_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(imp[0, perm], imp_p[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(logit, logit_pad, atol=1e-5, rtol=0)
    assert float(imp_pad[0, 11:].abs().sum()) == 0 and abs(float(imp.sum()) - 1) < 1e-5


def test_pooling_importance_is_the_queries_attention():
    net = _members("pooling", n=1)[0]
    feats, z, mask, extras = _batch(b=1, n=7)
    captured = {}
    net.pool.register_forward_hook(lambda m, i, out: captured.update(weights=out[1]))
    with torch.no_grad():
        _, imp = net(feats, z, mask, extras, return_importance=True)
    torch.testing.assert_close(imp[0], captured["weights"][0].mean((0, 1)), atol=1e-6, rtol=0)


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention must be one of"):
        ProbeNet(4, attention="global")


@pytest.mark.parametrize("attention", ["self", "pooling"])
def test_one_structure_path_equals_the_batched_path(attention):
    from conftest import synthetic_features

    from probe_base.net.classifier import ProbeClassifier

    X, y = synthetic_features(120)
    clf = ProbeClassifier(max_epochs=3, patience=2, cv_folds=2, attention=attention).fit(X, y)
    batch_p, batch_imp = clf.predict_with_importance(X.subset([4, 5, 6]))
    one_p, one_imp = clf.predict_with_importance(X.subset([5]))
    np.testing.assert_allclose(one_p, batch_p[1:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_imp[0], batch_imp[1], rtol=1e-4, atol=1e-6)
    assert len(clf.members_) == 2 and clf._stacked_members() is clf._stacked_members()


def test_probe_files_from_before_the_pooling_probe_load_as_self_attention(tmp_path, monkeypatch):
    from conftest import synthetic_features

    from probe_base.artifact import load_probe, save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier

    X, y = synthetic_features(80)
    clf = ProbeClassifier(max_epochs=2, patience=1, cv_folds=2, attention="self").fit(X, y)
    params = clf.get_params()
    older = {k: v for k, v in params.items() if k not in ("attention", "queries")}
    monkeypatch.setattr(ProbeClassifier, "get_params", lambda self, deep=True: dict(older))
    save_probe(tmp_path / "old.probe", clf, LabelSpec("energy", threshold=1.0), {"adapter": "toy"})
    monkeypatch.undo()
    loaded = load_probe(tmp_path / "old.probe").classifier
    assert loaded.attention == "self"
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", ["self", "pooling"])
def test_traced_one_structure_path_equals_the_eager_one(attention, monkeypatch):
    stacked = StackedProbe(_members(attention))
    monkeypatch.setattr(stacked_module, "TRACED_SIZES", 2)
    for n in (5, 7, 5, 11):  # a new atom count traces anew; the oldest graph is dropped
        feats, z, _, extras = _batch(seed=n, b=1, n=n)
        with torch.inference_mode():  # callers may already be in inference mode
            traced = stacked.one(feats, z, extras, return_importance=True)
        eager = stacked(feats, z, None, extras, return_importance=True)
        torch.testing.assert_close(traced[0], eager[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(traced[1], eager[1], atol=1e-7, rtol=1e-6)
        logits_only, none = stacked.one(feats, z, extras)
        assert none is None
        torch.testing.assert_close(logits_only, eager[0], atol=1e-6, rtol=1e-6)
    assert sorted(stacked._traced) == [7, 11]  # one graph per atom count; the oldest (5) went
    n = stacked_module.FOLDED_SELF_ATTENTION_ATOMS + 1  # self-attention: the chunked graph
    feats, z, _, extras = _batch(seed=3, b=1, n=n)
    traced = stacked.one(feats, z, extras, return_importance=True)
    eager = stacked(feats, z, None, extras, return_importance=True)
    torch.testing.assert_close(traced[0], eager[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced[1], eager[1], atol=1e-7, rtol=1e-5)
    assert n in stacked._traced
    big = stacked_module.TRACE_MAX_ATOMS + 1
    feats, z, _, extras = _batch(b=1, n=big)
    torch.testing.assert_close(stacked.one(feats, z, extras)[0], stacked(feats, z, None, extras)[0])
    assert big not in stacked._traced


def test_size_sorted_batches_give_each_structure_its_own_answer_in_input_order(monkeypatch):
    """Structures run in batches of about one size (sorted within windows); every output
    goes back to its structure: equal to scoring each structure alone."""
    from conftest import synthetic_features

    from probe_base.net import ensemble as ensemble_module
    from probe_base.net.classifier import ProbeClassifier

    X, y = synthetic_features(60)
    assert len(set(X.n_atoms.tolist())) > 3  # the sort reorders something
    clf = ProbeClassifier(max_epochs=2, patience=1, cv_folds=2, attention="self", batch_size=4).fit(X, y)
    monkeypatch.setattr(ensemble_module, "SORT_WINDOW", 16)
    order = ensemble_module.size_sorted(X.n_atoms, window=16)
    assert sorted(order) == list(range(len(X))) and not np.array_equal(order, np.arange(len(X)))
    assert all(np.all(np.diff(X.n_atoms[order[s : s + 16]]) >= 0) for s in range(0, len(X), 16))
    rows = [3, 17, 40, 41, 59]
    p, importance = clf.predict_with_importance(X)
    for i in rows:
        one_p, one_imp = clf.predict_with_importance(X.subset([i]))
        np.testing.assert_allclose(p[i], one_p[0], rtol=1e-5, atol=1e-6)
        assert len(importance[i]) == X.n_atoms[i]
        np.testing.assert_allclose(importance[i], one_imp[0], rtol=1e-4, atol=1e-6)
