"""One unpadded structure through every member of a probe, in as few tensor operations as
the network allows: what a calculator's MD step runs (``StackedProbe.one`` traces it once
per atom count).

For a few atoms the cost of the fused members is the number of operations (a few µs each),
not their arithmetic, so the weights are folded once, exactly up to float32 rounding:
the feature normalisation into the encoder's first layer (all members in one matrix
product), each LayerNorm's scale and shift into the linear layer after it, the element
embedding into the encoder's last bias, the pooling queries into their keys (the key bias
adds the same to every atom's score, so the softmax drops it) and the value bias, the
queries' residual and the output bias into one per-query bias (the attention weights sum to
one). Shapes are fixed per atom count, so the traced graph holds no shape arithmetic.
Same outputs as ``StackedProbe`` (tests/test_one_structure.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _members(t, m):
    """A stacked tensor with its member axis at full length (shared ones are stored once)."""
    return t.expand(m, *t.shape[1:]).contiguous() if t.shape[0] != m else t


def _fold_norm(norm, linear, m):
    """LayerNorm affine (weight, bias (M, 1, D)) into the linear layer after it:
    (x̂ g + b) W + c = x̂ (g W) + (b W + c)."""
    scale = _members(norm.weight, m).transpose(1, 2)  # (M, D, 1)
    weight = _members(linear.weight, m)
    return scale * weight, torch.baddbmm(_members(linear.bias, m), _members(norm.bias, m), weight)


class OneStructureNet:
    """The folded weights of a ``StackedProbe`` and its forward for one structure: features
    (n, F), atomic numbers (n,), extras (1, E) -> every member's logit (M, 1) and the
    member-mean importance (1, n)."""

    @staticmethod
    def supports(stacked) -> bool:
        """Feature moments shared by the members (they are: one fitting set)."""
        return stacked.feature_mean.shape[0] == 1 and stacked.feature_std.shape[0] == 1

    @torch.inference_mode()
    def __init__(self, stacked):
        m = self.members = stacked.members
        self.per_element_norm = stacked.per_element_norm
        first = stacked.encoder.first
        hidden = first.weight.shape[-1]
        # (F, M * H): every member's first layer as one matrix
        w1 = _members(first.weight, m).permute(1, 0, 2).reshape(-1, m * hidden)
        b1 = _members(first.bias, m).permute(1, 0, 2).reshape(1, m * hidden)
        inv_std = 1.0 / stacked.feature_std[0]
        shift = stacked.feature_mean[0] * inv_std
        if self.per_element_norm:  # (119, F): x = f inv[z] - shift[z]
            self.inv_std, self.w1 = inv_std, w1
            self.b1_of_z = b1 - shift @ w1  # (119, M * H)
        else:
            self.w1 = inv_std[:, None] * w1
            self.b1 = b1 - shift[None] @ w1
        second = stacked.encoder.second
        self.w2 = _members(second.weight, m)
        bias = _members(second.bias, m)  # (M, 1, H)
        self.b2_of_z = None if stacked.element is None else bias + _members(stacked.element, m)  # (M, 119, H)
        self.b2 = bias
        self.blocks = []
        for block in stacked.blocks:
            if "qkv" in block:
                heads = block["heads"]
                w, b = _fold_norm(block["norm1"], block["qkv"], m)
                d = hidden // heads
                scale = torch.ones(3 * hidden, dtype=w.dtype)
                scale[:hidden] = 1.0 / math.sqrt(d)  # the query's 1/sqrt(d), folded in
                attention = dict(heads=heads, qkv=(w * scale, b * scale), eps=block["norm1"].eps)
                attention["out"] = (_members(block["out"].weight, m), _members(block["out"].bias, m))
                attention["ffn"] = self._feed_forward(block["norm2"], block["ffn"], m)
                self.blocks.append(attention)
            else:
                self.blocks.append(dict(ffn=self._feed_forward(block["norm"], block["ffn"], m)))
        self.pool = None if stacked.pool is None else self._fold_pool(stacked.pool, m, hidden)
        mean, std, low, high = (_members(t, m)[:, 0] for t in stacked.extras)  # (M, E)
        self.extras_scale, self.extras_shift = 1.0 / std, -mean / std
        self.extras_low, self.extras_high = low, high
        self.head = self._linear_pair(stacked.head, m)

    @staticmethod
    def _linear_pair(ffn, m):
        return [(_members(lin.weight, m), _members(lin.bias, m)) for lin in (ffn.first, ffn.second)]

    @staticmethod
    def _feed_forward(norm, ffn, m):
        """A pre-norm feed-forward step, the norm's affine folded into its first layer."""
        first = _fold_norm(norm, ffn.first, m)
        return dict(eps=norm.eps, first=first, second=(_members(ffn.second.weight, m), _members(ffn.second.bias, m)))

    @staticmethod
    def _fold_pool(pool, m, hidden):
        heads = pool["heads"]
        d = hidden // heads
        w, b = _fold_norm(pool["norm"], pool["kv"], m)  # (M, H, 2H), (M, 1, 2H)
        w_key, w_value = w[..., :hidden], w[..., hidden:]
        value_bias = b[..., hidden:]
        queries = _members(pool["queries"], m)  # (M, Q, H)
        q = queries.view(m, -1, heads, d)  # (M, Q, heads, d)
        # scores of atom a for (head, query): x̂_a · (W_key[:, head] q[query, head]) / sqrt(d)
        key_of_query = torch.einsum("mihd,mqhd->mihq", w_key.view(m, hidden, heads, d), q) / math.sqrt(d)
        out_w, out_b = _members(pool["out"].weight, m), _members(pool["out"].bias, m)
        return dict(
            heads=heads,
            eps=pool["norm"].eps,
            keys=key_of_query.reshape(m, hidden, heads * q.shape[1]).contiguous(),  # (M, H, heads * Q)
            values=w_value.view(m, hidden, heads, d).permute(0, 2, 1, 3).contiguous(),  # (M, heads, H, d)
            out=(out_w, queries + torch.baddbmm(out_b, value_bias, out_w)),  # per-query bias (M, Q, H)
            ffn=OneStructureNet._feed_forward(pool["norm2"], pool["ffn"], m),
        )

    # ---- forward ---------------------------------------------------------------------------
    @staticmethod
    def _residual_ffn(h, ffn):
        x = F.layer_norm(h, h.shape[-1:], eps=ffn["eps"])
        w, b = ffn["first"]
        w2, b2 = ffn["second"]
        return torch.baddbmm(h, F.gelu(torch.baddbmm(b, x, w)), w2) + b2

    def __call__(self, features, atomic_numbers, extras):
        m = self.members
        n = features.shape[0]
        # the members' dtype: nets built under another default (nequip sets float64) keep it
        features, extras = features.to(self.w1.dtype), extras.to(self.w1.dtype)
        if self.per_element_norm:
            h = torch.addmm(self.b1_of_z[atomic_numbers], features * self.inv_std[atomic_numbers], self.w1)
        else:
            h = torch.addmm(self.b1, features, self.w1)
        h = F.gelu(h).view(n, m, -1).transpose(0, 1)  # (M, n, H)
        bias = self.b2 if self.b2_of_z is None else self.b2_of_z[:, atomic_numbers]
        h = torch.baddbmm(bias, h, self.w2)
        received = None
        for block in self.blocks:
            if "qkv" in block:
                h, received = self._attention(h, block, n)
            else:
                h = self._residual_ffn(h, block["ffn"])
        pooled = [h.mean(1), h.amax(1)]
        if self.pool is not None:
            by_query, weights = self._pool(h, n)
            pooled.append(by_query)
            importance = weights.mean(2)  # (M, n): each (head, query) column sums to one
        else:
            importance = received / received.sum(1, keepdim=True)
        scaled = torch.clamp(
            torch.addcmul(self.extras_shift, extras, self.extras_scale), self.extras_low, self.extras_high
        )
        (w1, b1), (w2, b2) = self.head
        x = torch.cat(pooled + [scaled], dim=-1)[:, None, :]  # (M, 1, P)
        logits = torch.baddbmm(b2, F.gelu(torch.baddbmm(b1, x, w1)), w2).view(m, 1)
        return logits, importance.mean(0, keepdim=True)

    def _attention(self, h, block, n):
        m, heads = self.members, block["heads"]
        dim = h.shape[-1]
        d = dim // heads
        w, b = block["qkv"]
        qkv = torch.baddbmm(b, F.layer_norm(h, (dim,), eps=block["eps"]), w)
        q, k, v = qkv.view(m, n, 3, heads, d).permute(2, 0, 3, 1, 4).reshape(3, m * heads, n, d).unbind(0)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (M * heads, n, n)
        attended = torch.bmm(weights, v).view(m, heads, n, d).transpose(1, 2).reshape(m, n, dim)
        received = weights.view(m, heads, n, n).sum(2).mean(1)  # (M, n): attention each atom receives
        w_out, b_out = block["out"]
        h = torch.baddbmm(h, attended, w_out) + b_out
        return self._residual_ffn(h, block["ffn"]), received

    def _pool(self, h, n):
        pool, m = self.pool, self.members
        x = F.layer_norm(h, h.shape[-1:], eps=pool["eps"])
        weights = torch.softmax(torch.bmm(x, pool["keys"]), dim=1)  # (M, n, heads * Q)
        heads = pool["heads"]
        summed = torch.bmm(weights.transpose(1, 2), x).view(m, heads, -1, x.shape[-1])  # (M, heads, Q, H)
        values = torch.matmul(summed, pool["values"])  # (M, heads, Q, d)
        by_query = values.transpose(1, 2).reshape(m, -1, x.shape[-1])  # (M, Q, H)
        w_out, bias = pool["out"]
        pooled = self._residual_ffn(torch.baddbmm(bias, by_query, w_out), pool["ffn"])
        return pooled.reshape(m, -1), weights
