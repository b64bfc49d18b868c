"""One small structure through every probe member in numpy: what an MD step scores.

For a few dozen atoms the probe's arithmetic takes microseconds; what a step paid was the
per-operation overhead of torch (dispatch, even in a traced graph): ~0.7 ms for 9 atoms and
5 members. numpy's per-operation cost is several times smaller, so ``StackedProbe.one``
hands structures of up to ``NUMPY_MAX_ATOMS`` atoms to ``NumpyProbe``: the same
operations on the same stacked weights (float32), the same outputs to float rounding
(tests/test_fused_probe.py compares them). Larger structures stay in torch, where fused
kernels matter more than overhead.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

NUMPY_MAX_ATOMS = 128
_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _array(tensor):
    return tensor.detach().cpu().numpy().astype(np.float32, copy=False)


class _Linear:
    def __init__(self, linear):
        self.weight, self.bias = _array(linear.weight), _array(linear.bias)  # (M, in, out), (M, 1, out)

    def __call__(self, x):
        return np.matmul(x, self.weight) + self.bias


class _LayerNorm:
    def __init__(self, norm):
        self.weight, self.bias, self.eps = _array(norm.weight), _array(norm.bias), norm.eps

    def __call__(self, x):
        centred = x - x.mean(-1, keepdims=True)
        scale = 1.0 / np.sqrt((centred * centred).mean(-1, keepdims=True) + self.eps)
        return centred * scale * self.weight + self.bias


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))  # exact (erf) GELU, as torch's default


class _FeedForward:
    def __init__(self, ffn):
        self.first, self.second = _Linear(ffn.first), _Linear(ffn.second)

    def __call__(self, x):
        return self.second(_gelu(self.first(x)))


def _softmax(scores):
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True)


class NumpyProbe:
    """``StackedProbe``'s forward for one unpadded structure, in numpy."""

    def __init__(self, stacked):
        self.members = stacked.members
        self.per_element_norm = stacked.per_element_norm
        self.feature_mean, self.feature_std = _array(stacked.feature_mean), _array(stacked.feature_std)
        self.extras_mean, self.extras_std, self.extras_low, self.extras_high = (
            _array(t) for t in stacked.extras)
        self.encoder = _FeedForward(stacked.encoder)
        self.element = None if stacked.element is None else _array(stacked.element)
        self.blocks = []
        for block in stacked.blocks:
            if "qkv" in block:
                self.blocks.append(dict(heads=block["heads"], norm1=_LayerNorm(block["norm1"]),
                                        qkv=_Linear(block["qkv"]), out=_Linear(block["out"]),
                                        norm2=_LayerNorm(block["norm2"]), ffn=_FeedForward(block["ffn"])))
            else:
                self.blocks.append(dict(norm=_LayerNorm(block["norm"]), ffn=_FeedForward(block["ffn"])))
        pool = stacked.pool
        self.pool = None if pool is None else dict(
            heads=pool["heads"], queries=_array(pool["queries"]), norm=_LayerNorm(pool["norm"]),
            kv=_Linear(pool["kv"]), out=_Linear(pool["out"]), norm2=_LayerNorm(pool["norm2"]),
            ffn=_FeedForward(pool["ffn"]))
        self.head = _FeedForward(stacked.head)

    def __call__(self, features, atomic_numbers, extras, return_importance=False):
        """features (N, F), atomic_numbers (N,), extras (E,) -> every member's logit (M,)
        and, if asked, the member-mean importance (N,)."""
        m = self.members
        n = len(features)
        if self.per_element_norm:
            x = (features[None] - self.feature_mean[:, atomic_numbers]) / self.feature_std[:, atomic_numbers]
        else:
            x = (features[None] - self.feature_mean[:, None, :]) / self.feature_std[:, None, :]
        h = self.encoder(x)
        if h.shape[0] != m:
            h = np.broadcast_to(h, (m,) + h.shape[1:])
        if self.element is not None:
            h = h + self.element[:, atomic_numbers]
        received = None
        for block in self.blocks:
            if "qkv" in block:
                h, received = self._attention_block(block, h, n)
            else:
                h = h + block["ffn"](block["norm"](h))
        pooled = [h.mean(1), h.max(1)]
        if self.pool is not None:
            by_query, weights = self._query_pooling(h, n)
            pooled.append(by_query)
            received = weights.reshape(m, -1, n)  # (M, heads * Q, N)
        scaled = np.clip((extras[None] - self.extras_mean[:, 0]) / self.extras_std[:, 0],
                         self.extras_low[:, 0], self.extras_high[:, 0])
        scaled = np.broadcast_to(scaled, (m, scaled.shape[-1]))
        logits = self.head(np.concatenate(pooled + [scaled], axis=-1)[:, None, :])[:, 0, 0]
        if not return_importance:
            return logits, None
        if received is None:  # no attention layer: uniform over the atoms
            return logits, np.full(n, 1.0 / n, dtype=np.float32)
        importance = received.mean(1)  # (M, N)
        importance = importance / np.maximum(importance.sum(1, keepdims=True), 1e-12)
        return logits, importance.mean(0)

    @staticmethod
    def _attention_block(block, h, n):
        m, dim = h.shape[0], h.shape[-1]
        heads = block["heads"]
        d = dim // heads
        qkv = block["qkv"](block["norm1"](h)).reshape(m, n, 3, heads, d).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (M, heads, N, d)
        weights = _softmax(np.matmul(q, k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(d)))
        attended = np.matmul(weights, v).transpose(0, 2, 1, 3).reshape(m, n, dim)
        h = h + block["out"](attended)
        h = h + block["ffn"](block["norm2"](h))
        return h, weights.sum(2)  # attention each atom receives: (M, heads, N)

    def _query_pooling(self, h, n):
        pool = self.pool
        m, dim = h.shape[0], h.shape[-1]
        heads = pool["heads"]
        d = dim // heads
        k, v = pool["kv"](pool["norm"](h)).reshape(m, n, 2, heads, d).transpose(2, 0, 3, 1, 4)
        queries = np.broadcast_to(pool["queries"], (m,) + pool["queries"].shape[1:])  # (M, Q, D)
        q = queries.reshape(m, -1, heads, d).transpose(0, 2, 1, 3)  # (M, heads, Q, d)
        weights = _softmax(np.matmul(q, k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(d)))  # (M, heads, Q, N)
        pooled = np.matmul(weights, v).transpose(0, 2, 1, 3).reshape(m, -1, dim)  # (M, Q, D)
        pooled = queries + pool["out"](pooled)
        pooled = pooled + pool["ffn"](pool["norm2"](pooled))
        return pooled.reshape(m, -1), weights
