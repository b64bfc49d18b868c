"""Every member of a probe as one network, for inference: ``StackedProbe``.

Each member's weights are stacked on a leading member axis, so one call runs every member
with batched matrix products (no per-member Python, no vmap). Same outputs as each
``ProbeNet`` (probe_base.net.model) in ``eval()``. One unpadded structure (what an MD step
scores) runs through a graph traced once per atom count. Self-attention without the
importance map uses torch's fused attention kernel; with it, query chunks share one score
buffer, so memory stays linear in atoms.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from probe_base.net.model import AttentionBlock
from probe_base.net.one_structure import OneStructureNet

# fused members: attention scores computed this many elements at a time (float32: 16 MB)
SCORE_ELEMENTS = 1 << 22
TRACE_MAX_ATOMS = 1024  # one structure up to this size runs a traced graph
TRACED_SIZES = 8  # traced graphs kept (distinct atom counts)
# the folded network holds self-attention's n x n weights at once: above this, the chunked path
FOLDED_SELF_ATTENTION_ATOMS = 256


# probe_base.net.model's _chunked_attention does the same for ProbeNet with autograd; this one
# writes into one buffer in place, which autograd cannot differentiate: inference only
def _attention_with_received(q, k, v, key_mask):
    """Softmax attention that also returns the attention each key receives from the real
    queries: q, k, v (R, N, d), key_mask (R, N) bool or None. Query chunks share one score
    buffer, so memory stays at SCORE_ELEMENTS floats whatever N, and repeated calls reuse
    the same allocation (fresh N x chunk tensors per chunk fragment the heap: GBs of RSS)."""
    rows, n, d = q.shape
    chunk = max(1, min(n, SCORE_ELEMENTS // max(rows * n, 1)))
    scale = 1.0 / math.sqrt(d)
    bias = (
        None
        if key_mask is None
        else torch.zeros(key_mask.shape, dtype=q.dtype).masked_fill_(~key_mask, float("-inf"))[:, None, :]
    )
    query_weight = None if key_mask is None else key_mask.to(q.dtype)[:, None, :]
    keys_t = k.transpose(1, 2)
    attended = torch.empty(rows, n, d, dtype=q.dtype)
    received = torch.zeros(rows, n, dtype=q.dtype)
    buffer = torch.empty(rows, chunk, n, dtype=q.dtype)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        scores = buffer if size == chunk else buffer[:, :size].contiguous()
        torch.bmm(q[:, start : start + size], keys_t, out=scores)
        scores.mul_(scale)
        if bias is not None:
            scores.add_(bias)
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        scores.div_(scores.sum(-1, keepdim=True))
        attended[:, start : start + size] = torch.bmm(scores, v)
        if query_weight is None:
            received += scores.sum(1)
        else:
            received += torch.bmm(query_weight[:, :, start : start + size], scores)[:, 0]
    return attended, received


def _stack(nets, get):
    values = [get(net).detach() for net in nets]
    if all(torch.equal(values[0], v) for v in values[1:]):
        return values[0][None].contiguous()  # shared (e.g. the normalisation): broadcast
    return torch.stack(values).contiguous()


class _Linear:
    """Stacked ``nn.Linear``: weights (M, in, out), so x (M or 1, R, in) -> (M, R, out)."""

    def __init__(self, nets, get):
        self.weight = _stack(nets, lambda n: get(n).weight.transpose(0, 1))
        self.bias = _stack(nets, lambda n: get(n).bias)[:, None, :]

    def __call__(self, x):
        return (
            torch.baddbmm(self.bias, x, self.weight)
            if x.shape[0] == self.weight.shape[0]
            else torch.matmul(x, self.weight) + self.bias
        )


class _LayerNorm:
    def __init__(self, nets, get):
        self.weight = _stack(nets, lambda n: get(n).weight)[:, None, :]
        self.bias = _stack(nets, lambda n: get(n).bias)[:, None, :]
        self.eps = get(nets[0]).eps

    def __call__(self, x):
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


class _FeedForward:
    def __init__(self, nets, get):
        self.first, self.second = _Linear(nets, lambda n: get(n)[0]), _Linear(nets, lambda n: get(n)[3])

    def __call__(self, x):
        return self.second(F.gelu(self.first(x)))


class StackedProbe:
    """The members of a probe as one network in evaluation mode: each weight stacked on a
    leading member axis, so one call runs every member with batched matrix products (no
    per-member Python, no vmap). Same outputs as each ``ProbeNet`` in ``eval()``."""

    def __init__(self, nets):
        first = nets[0]
        self.members = len(nets)
        self._traced = {}  # atom count -> traced forward of one unpadded structure
        self._folded = None  # OneStructureNet, built on the first single structure
        self.attention = first.attention
        self.per_element_norm = first.per_element_norm
        self.feature_mean = _stack(nets, lambda n: n.feature_mean)
        self.feature_std = _stack(nets, lambda n: n.feature_std)
        self.extras = [
            _stack(nets, lambda n, k=k: getattr(n, k))[:, None, :]
            for k in ("extras_mean", "extras_std", "extras_low", "extras_high")
        ]
        self.encoder = _FeedForward(nets, lambda n: n.encoder)
        self.element = None if first.element is None else _stack(nets, lambda n: n.element.weight)
        self.blocks = []
        for i, block in enumerate(first.blocks):
            if isinstance(block, AttentionBlock):
                self.blocks.append(
                    dict(
                        heads=block.heads,
                        norm1=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm1),
                        qkv=_Linear(nets, lambda n, i=i: n.blocks[i].qkv),
                        out=_Linear(nets, lambda n, i=i: n.blocks[i].out),
                        norm2=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm2),
                        ffn=_FeedForward(nets, lambda n, i=i: n.blocks[i].ffn),
                    )
                )
            else:
                self.blocks.append(
                    dict(
                        norm=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm),
                        ffn=_FeedForward(nets, lambda n, i=i: n.blocks[i].ffn),
                    )
                )
        if first.pool is not None:
            self.pool = dict(
                heads=first.pool.heads,
                queries=_stack(nets, lambda n: n.pool.queries),
                norm=_LayerNorm(nets, lambda n: n.pool.norm),
                kv=_Linear(nets, lambda n: n.pool.kv),
                out=_Linear(nets, lambda n: n.pool.out),
                norm2=_LayerNorm(nets, lambda n: n.pool.norm2),
                ffn=_FeedForward(nets, lambda n: n.pool.ffn),
            )
        else:
            self.pool = None
        self.head = _FeedForward(nets, lambda n: n.head)

    @torch.inference_mode()
    def __call__(self, features, atomic_numbers, mask, extras, return_importance=False):
        """features (B, N, F), atomic_numbers (B, N), mask (B, N) bool, or None when every
        atom is real (no padding: fewer operations, what one structure per MD step needs),
        extras (B, E). Returns every member's logit (M, B) and, if asked, the member-mean
        importance (B, N)."""
        return self._forward(features, atomic_numbers, mask, extras, return_importance)

    def one(self, features, atomic_numbers, extras, return_importance=False):
        """One structure without padding (features (1, N, F)), through a graph traced once
        per atom count of the folded network (``OneStructureNet``; self-attention above
        FOLDED_SELF_ATTENTION_ATOMS: the chunked forward): an MD run keeps its count, so
        every step after the first runs a few dozen tensor operations and no Python."""
        n = features.shape[1]
        if n > TRACE_MAX_ATOMS:  # the operations' own cost dominates: nothing to save
            return self(features, atomic_numbers, None, extras, return_importance)
        graph = self._traced.get(n)
        if graph is None:
            if self._folded is None:
                self._folded = OneStructureNet(self) if OneStructureNet.supports(self) else False
            if self._folded and (self.pool is not None or n <= FOLDED_SELF_ATTENTION_ATOMS):
                folded = self._folded

                def forward(f, z, e):
                    return folded(f[0], z[0], e)
            else:

                def forward(f, z, e):
                    return self._forward(f, z, None, e, True)

            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning: the shapes are the key
                graph = torch.jit.trace(forward, (features, atomic_numbers, extras), check_trace=False)
            if len(self._traced) >= TRACED_SIZES:
                self._traced.pop(next(iter(self._traced)))
            self._traced[n] = graph
        with torch.inference_mode():
            logits, importance = graph(features, atomic_numbers, extras)
        return logits, importance if return_importance else None

    def _forward(self, features, atomic_numbers, mask, extras, return_importance):
        b, n, _ = features.shape
        rows = features.reshape(1, b * n, -1)
        if self.per_element_norm:
            z = atomic_numbers.reshape(-1)
            x = (rows - self.feature_mean[:, z]) / self.feature_std[:, z]
        else:
            x = (rows - self.feature_mean[:, None, :]) / self.feature_std[:, None, :]
        h = self.encoder(x)
        if h.shape[0] != self.members:
            h = h.expand(self.members, -1, -1)
        if self.element is not None:
            h = h + self.element[:, atomic_numbers.reshape(-1)]
        bias = None  # additive attention mask over atoms: -inf at padding
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=h.dtype).masked_fill(~mask, float("-inf"))
        received = None
        for i, block in enumerate(self.blocks):
            want = return_importance and i == len(self.blocks) - 1
            if "qkv" in block:
                h, received = self._attention_block(block, h, b, n, mask, bias, want)
            else:
                h = h + block["ffn"](block["norm"](h))
        h4 = h.view(self.members, b, n, -1)
        if mask is None:
            pooled = [h4.mean(2), h4.amax(2)]
        else:
            maskf = mask.to(h.dtype)[None, :, :, None]
            pooled = [
                (h4 * maskf).sum(2) / maskf.sum(2).clamp(min=1.0),
                h4.masked_fill(~mask[None, :, :, None], float("-inf")).amax(2),
            ]
        if self.pool is not None:
            by_query, weights = self._query_pooling(h4, bias)
            pooled.append(by_query)
            received = weights.flatten(2, 3)  # (M, B, heads * Q, N)
        mean, std, low, high = self.extras
        scaled = torch.clamp((extras[None] - mean) / std, low, high).expand(self.members, -1, -1)
        logits = self.head(torch.cat(pooled + [scaled], dim=-1)).squeeze(-1)
        if not return_importance:
            return logits, None
        if received is None:  # no attention layer: uniform over the real atoms
            received = torch.ones(1, b, 1, n) if mask is None else mask.to(h.dtype)[None, :, None, :]
        importance = received.mean(2)
        if mask is not None:
            importance = importance * mask
        importance = importance / importance.sum(2, keepdim=True).clamp(min=1e-12)
        return logits, importance.mean(0)

    def _attention_block(self, block, h, b, n, mask, bias, want_received):
        m, heads = self.members, block["heads"]
        dim = h.shape[-1]
        d = dim // heads
        qkv = block["qkv"](block["norm1"](h)).view(m, b, n, 3, heads, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = (t.reshape(m * b, heads, n, d) for t in qkv)
        received = None
        if not want_received:
            # 4-D inputs take torch's fused CPU kernel: blocked, never N x N in memory
            if bias is not None:
                bias = bias[None, :, None, None, :].expand(m, b, 1, 1, n).reshape(m * b, 1, 1, n)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attended, received = _attention_with_received(
                q.reshape(m * b * heads, n, d),
                k.reshape(m * b * heads, n, d),
                v.reshape(m * b * heads, n, d),
                None if mask is None else mask[None, :, None, :].expand(m, b, heads, n).reshape(m * b * heads, n),
            )
            received = received.view(m, b, heads, n)
        attended = attended.reshape(m, b, heads, n, d).permute(0, 1, 3, 2, 4).reshape(m, b * n, dim)
        h = h + block["out"](attended)
        h = h + block["ffn"](block["norm2"](h))
        return h, received

    def _query_pooling(self, h4, bias):
        pool = self.pool
        m, b, n, dim = h4.shape
        heads = pool["heads"]
        d = dim // heads
        kv = pool["kv"](pool["norm"](h4.reshape(m, b * n, dim))).view(m, b, n, 2, heads, d)
        k, v = kv.permute(3, 0, 1, 4, 2, 5)  # (M, B, heads, N, d)
        queries = pool["queries"].expand(m, -1, -1)  # (M, Q, D)
        q = queries.view(m, -1, heads, d).transpose(1, 2)[:, None]  # (M, 1, heads, Q, d)
        scores = (q @ k.transpose(-1, -2)).mul_(1.0 / math.sqrt(d))
        if bias is not None:
            scores = scores.add_(bias[None, :, None, None, :])
        weights = torch.softmax(scores, dim=-1)  # (M, B, heads, Q, N)
        pooled = (weights @ v).permute(0, 1, 3, 2, 4).reshape(m, -1, dim)  # (M, B * Q, D)
        pooled = (queries if b == 1 else queries.repeat(1, b, 1)) + pool["out"](pooled)
        pooled = pooled + pool["ffn"](pool["norm2"](pooled))
        return pooled.view(m, b, -1), weights
