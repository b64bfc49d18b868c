"""The probe network: atom encoder -> attention -> mean/max pooling (+ backbone energy
per atom, atom count) -> logit. Two kinds of attention (``attention=``):

``"pooling"``  a few learned queries attend to the atoms (the pooling by multi-head
               attention of the Set Transformer), after per-atom feed-forward blocks:
               time and memory linear in the number of atoms. Per-atom importance = the
               attention the queries give each atom, averaged over queries and heads.
``"self"``     multi-head self-attention among all atoms of a structure (the first probe
               design; time quadratic in atoms). Fused blocked attention (or, for importance,
               query chunks sharing one score buffer) keeps memory linear: no B x H x N x N
               tensor is kept. Per-atom importance =
               attention each atom receives in the last block, averaged over heads.

Importance is normalised to sum to one per structure. Both are invariant to atom order
and padding. ``StackedProbe`` runs every member of a probe in one fused call.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

MAX_Z = 119
QUERY_CHUNK = 1024
ATTENTIONS = ("pooling", "self")
# fused members: attention scores computed this many elements at a time (float32: 16 MB)
SCORE_ELEMENTS = 1 << 22
TRACE_MAX_ATOMS = 1024  # one structure up to this size runs a traced graph
TRACED_SIZES = 8  # traced graphs kept (distinct atom counts)


def _chunked_attention(q, k, v, key_mask, want_received):
    """q, k, v: (B, H, N, d); key_mask: (B, N) True = real atom.
    Returns outputs (B, H, N, d) and, if asked, attention received per key (B, H, N)."""
    n = q.shape[2]
    bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~key_mask, float("-inf"))[:, None, None, :]  # (B,1,1,N)
    outputs, received = [], None
    if want_received:
        received = torch.zeros(q.shape[0], q.shape[1], n, dtype=q.dtype, device=q.device)
    scale = 1.0 / math.sqrt(q.shape[-1])
    for start in range(0, n, QUERY_CHUNK):
        q_chunk = q[:, :, start:start + QUERY_CHUNK]
        if not want_received:
            outputs.append(F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=bias))
            continue
        # the weights themselves are needed: one softmax serves output and importance
        weights = torch.softmax(q_chunk @ k.transpose(-1, -2) * scale + bias, dim=-1)
        outputs.append(weights @ v)
        query_mask = key_mask[:, start:start + QUERY_CHUNK].to(q.dtype)[:, None, :, None]
        received = received + (weights * query_mask).sum(dim=2)
    return torch.cat(outputs, dim=2), received


def _attention_with_received(q, k, v, key_mask):
    """Softmax attention that also returns the attention each key receives from the real
    queries: q, k, v (R, N, d), key_mask (R, N) bool or None. Query chunks share one score
    buffer, so memory stays at SCORE_ELEMENTS floats whatever N, and repeated calls reuse
    the same allocation (fresh N x chunk tensors per chunk fragment the heap: GBs of RSS)."""
    rows, n, d = q.shape
    chunk = max(1, min(n, SCORE_ELEMENTS // max(rows * n, 1)))
    scale = 1.0 / math.sqrt(d)
    bias = None if key_mask is None else \
        torch.zeros(key_mask.shape, dtype=q.dtype).masked_fill_(~key_mask, float("-inf"))[:, None, :]
    query_weight = None if key_mask is None else key_mask.to(q.dtype)[:, None, :]
    keys_t = k.transpose(1, 2)
    attended = torch.empty(rows, n, d, dtype=q.dtype)
    received = torch.zeros(rows, n, dtype=q.dtype)
    buffer = torch.empty(rows, chunk, n, dtype=q.dtype)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        scores = buffer if size == chunk else buffer[:, :size].contiguous()
        torch.bmm(q[:, start:start + size], keys_t, out=scores)
        scores.mul_(scale)
        if bias is not None:
            scores.add_(bias)
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        scores.div_(scores.sum(-1, keepdim=True))
        attended[:, start:start + size] = torch.bmm(scores, v)
        if query_weight is None:
            received += scores.sum(1)
        else:
            received += torch.bmm(query_weight[:, :, start:start + size], scores)[:, 0]
    return attended, received


def _feed_forward(dim, dropout):
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block over the atoms of each structure."""

    def __init__(self, dim, heads, dropout):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = _feed_forward(dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, mask, want_received=False):
        b, n, dim = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended, received = _chunked_attention(q, k, v, mask, want_received)
        attended = attended.transpose(1, 2).reshape(b, n, dim)
        h = h + self.dropout(self.out(attended))
        h = h + self.dropout(self.ffn(self.norm2(h)))
        return h, received


class FeedForwardBlock(nn.Module):
    """Pre-norm per-atom feed-forward block (the pooling probe's atom-wise layers)."""

    def __init__(self, dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ffn = _feed_forward(dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, mask, want_received=False):
        return h + self.dropout(self.ffn(self.norm(h))), None


class QueryPooling(nn.Module):
    """``queries`` learned vectors attend to the atoms (multi-head); each returns one pooled
    vector, refined by a residual feed-forward step. Cost linear in atoms."""

    def __init__(self, dim, heads, queries, dropout):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} must be divisible by the number of heads {heads}")
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(queries, dim) / math.sqrt(dim))
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = _feed_forward(dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, mask):
        """h (B, N, D), mask (B, N) -> pooled (B, Q * D), weights (B, heads, Q, N)."""
        b, n, dim = h.shape
        d = dim // self.heads
        k, v = self.kv(self.norm(h)).view(b, n, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        q = self.queries.view(-1, self.heads, d).transpose(0, 1)  # (heads, Q, d)
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, float("-inf"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + bias[:, None, None, :]
        weights = torch.softmax(scores, dim=-1)
        pooled = (weights @ v).permute(0, 2, 1, 3).reshape(b, -1, dim)  # (B, Q, D)
        pooled = self.queries + self.dropout(self.out(pooled))
        pooled = pooled + self.dropout(self.ffn(self.norm2(pooled)))
        return pooled.reshape(b, -1), weights


class ProbeNet(nn.Module):
    def __init__(self, n_features, hidden=64, heads=4, attention_layers=1, dropout=0.1,
                 n_extras=2, element_embedding=True, per_element_norm=False, attention="pooling",
                 queries=4):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
        self.attention = attention
        self.per_element_norm = per_element_norm
        shape = (MAX_Z, n_features) if per_element_norm else (n_features,)
        self.register_buffer("feature_mean", torch.zeros(shape))
        self.register_buffer("feature_std", torch.ones(shape))
        self.register_buffer("extras_mean", torch.zeros(n_extras))
        self.register_buffer("extras_std", torch.ones(n_extras))
        # standardised range of the fitting set: scalar inputs are clamped to it, so that a
        # structure far outside (another molecule's energy per atom) cannot drive the logit
        # by linear extrapolation to a confident answer
        self.register_buffer("extras_low", torch.full((n_extras,), float("-inf")))
        self.register_buffer("extras_high", torch.full((n_extras,), float("inf")))
        self.encoder = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, hidden))
        self.element = nn.Embedding(MAX_Z, hidden) if element_embedding else None
        if attention == "self":
            self.blocks = nn.ModuleList(AttentionBlock(hidden, heads, dropout) for _ in range(attention_layers))
            self.pool = None
            pooled = 2 * hidden
        else:
            self.blocks = nn.ModuleList(FeedForwardBlock(hidden, dropout) for _ in range(attention_layers))
            self.pool = QueryPooling(hidden, heads, queries, dropout)
            pooled = (2 + queries) * hidden
        self.head = nn.Sequential(nn.Linear(pooled + n_extras, hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 1))

    def normalise(self, features, atomic_numbers):
        if self.per_element_norm:
            return (features - self.feature_mean[atomic_numbers]) / self.feature_std[atomic_numbers]
        return (features - self.feature_mean) / self.feature_std

    def forward(self, features, atomic_numbers, mask, extras, return_importance=False):
        """features (B, N, F), atomic_numbers (B, N), mask (B, N) bool, extras (B, E).
        Returns the reliability logit (B,) and, if asked, importance (B, N)."""
        h = self.encoder(self.normalise(features, atomic_numbers))
        if self.element is not None:
            h = h + self.element(atomic_numbers)
        received = None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            h, received = block(h, mask, want_received=return_importance and last)
        maskf = mask.to(h.dtype)[..., None]
        mean = (h * maskf).sum(1) / maskf.sum(1).clamp(min=1.0)
        peak = h.masked_fill(~mask[..., None], float("-inf")).amax(1)
        pooled = [mean, peak]
        if self.pool is not None:
            by_query, weights = self.pool(h, mask)
            pooled.append(by_query)
            received = weights.flatten(1, 2)  # (B, heads * Q, N): each row sums to one
        extras = torch.clamp((extras - self.extras_mean) / self.extras_std, self.extras_low, self.extras_high)
        logit = self.head(torch.cat(pooled + [extras], dim=-1)).squeeze(-1)
        if not return_importance:
            return logit, None
        if received is None:  # no attention layer: fall back to uniform importance
            received = mask.to(h.dtype)[:, None, :]
        importance = received.mean(1) * mask
        importance = importance / importance.sum(1, keepdim=True).clamp(min=1e-12)
        return logit, importance


# ---- every member in one call ----------------------------------------------------------
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
        return torch.baddbmm(self.bias, x, self.weight) if x.shape[0] == self.weight.shape[0] \
            else torch.matmul(x, self.weight) + self.bias


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
        self._traced = {}  # (atoms, importance) -> traced forward of one unpadded structure
        self.attention = first.attention
        self.per_element_norm = first.per_element_norm
        self.feature_mean = _stack(nets, lambda n: n.feature_mean)
        self.feature_std = _stack(nets, lambda n: n.feature_std)
        self.extras = [_stack(nets, lambda n, k=k: getattr(n, k))[:, None, :]
                       for k in ("extras_mean", "extras_std", "extras_low", "extras_high")]
        self.encoder = _FeedForward(nets, lambda n: n.encoder)
        self.element = None if first.element is None else _stack(nets, lambda n: n.element.weight)
        self.blocks = []
        for i, block in enumerate(first.blocks):
            if isinstance(block, AttentionBlock):
                self.blocks.append(dict(
                    heads=block.heads, norm1=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm1),
                    qkv=_Linear(nets, lambda n, i=i: n.blocks[i].qkv),
                    out=_Linear(nets, lambda n, i=i: n.blocks[i].out),
                    norm2=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm2),
                    ffn=_FeedForward(nets, lambda n, i=i: n.blocks[i].ffn)))
            else:
                self.blocks.append(dict(norm=_LayerNorm(nets, lambda n, i=i: n.blocks[i].norm),
                                        ffn=_FeedForward(nets, lambda n, i=i: n.blocks[i].ffn)))
        if first.pool is not None:
            self.pool = dict(heads=first.pool.heads, queries=_stack(nets, lambda n: n.pool.queries),
                             norm=_LayerNorm(nets, lambda n: n.pool.norm),
                             kv=_Linear(nets, lambda n: n.pool.kv), out=_Linear(nets, lambda n: n.pool.out),
                             norm2=_LayerNorm(nets, lambda n: n.pool.norm2),
                             ffn=_FeedForward(nets, lambda n: n.pool.ffn))
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
        per atom count: an MD run keeps its count, so every step after the first skips the
        Python of the forward (about a third of the time for small structures)."""
        n = features.shape[1]
        if n > TRACE_MAX_ATOMS:  # the operations' own cost dominates: nothing to save
            return self(features, atomic_numbers, None, extras, return_importance)
        key = (n, bool(return_importance))
        graph = self._traced.get(key)
        if graph is None:
            def forward(f, z, e):
                logits, importance = self._forward(f, z, None, e, return_importance)
                return (logits, importance) if return_importance else logits

            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning: the shapes are the key
                graph = torch.jit.trace(forward, (features, atomic_numbers, extras), check_trace=False)
            if len(self._traced) >= TRACED_SIZES:
                self._traced.pop(next(iter(self._traced)))
            self._traced[key] = graph
        with torch.inference_mode():
            out = graph(features, atomic_numbers, extras)
        return out if return_importance else (out, None)

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
            pooled = [(h4 * maskf).sum(2) / maskf.sum(2).clamp(min=1.0),
                      h4.masked_fill(~mask[None, :, :, None], float("-inf")).amax(2)]
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
                q.reshape(m * b * heads, n, d), k.reshape(m * b * heads, n, d), v.reshape(m * b * heads, n, d),
                None if mask is None else mask[None, :, None, :].expand(m, b, heads, n).reshape(m * b * heads, n))
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
