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
and padding. ``probe_base.net.stacked.StackedProbe`` runs every member of a probe in one fused call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from probe_base.net.recipes import NET_ATTENTIONS as ATTENTIONS

MAX_Z = 119
QUERY_CHUNK = 1024


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
        q_chunk = q[:, :, start : start + QUERY_CHUNK]
        if not want_received:
            outputs.append(F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=bias))
            continue
        # the weights themselves are needed: one softmax serves output and importance
        weights = torch.softmax(q_chunk @ k.transpose(-1, -2) * scale + bias, dim=-1)
        outputs.append(weights @ v)
        query_mask = key_mask[:, start : start + QUERY_CHUNK].to(q.dtype)[:, None, :, None]
        received = received + (weights * query_mask).sum(dim=2)
    return torch.cat(outputs, dim=2), received


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
    def __init__(
        self,
        n_features,
        hidden=64,
        heads=4,
        attention_layers=1,
        dropout=0.1,
        n_extras=2,
        element_embedding=True,
        per_element_norm=False,
        attention="pooling",
        queries=4,
    ):
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
        self.encoder = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.element = nn.Embedding(MAX_Z, hidden) if element_embedding else None
        if attention == "self":
            self.blocks = nn.ModuleList(AttentionBlock(hidden, heads, dropout) for _ in range(attention_layers))
            self.pool = None
            pooled = 2 * hidden
        else:
            self.blocks = nn.ModuleList(FeedForwardBlock(hidden, dropout) for _ in range(attention_layers))
            self.pool = QueryPooling(hidden, heads, queries, dropout)
            pooled = (2 + queries) * hidden
        self.head = nn.Sequential(
            nn.Linear(pooled + n_extras, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

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
