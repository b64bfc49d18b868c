"""``MemberEnsemble``: a fitted probe's members for inference.

It owns the members' weights (one ``ProbeNet`` state dict each), the nets built from
them and those nets fused into one ``StackedProbe`` (both built once, on first use), and
averages the members' logits. One structure (a calculator's MD step) runs unpadded
through ``StackedProbe.one``; several run in padded batches.
"""

from __future__ import annotations

import numpy as np
import torch

from probe_base.net.inputs import batch_indices, batch_tensors
from probe_base.net.stacked import StackedProbe

# structures sorted by size together (a window of a store read from disk stays in order)
SORT_WINDOW = 4096


class MemberEnsemble:
    """``states``: the members' state dicts; ``new_net``: builds an untrained ``ProbeNet`` of
    the probe's shape; ``batch_size``: structures per padded batch."""

    def __init__(self, states: list[dict], new_net, batch_size: int):
        self.states = states
        self.new_net = new_net
        self.batch_size = batch_size
        self._nets = None
        self._stacked = None

    @classmethod
    def from_state(cls, states: list[dict], new_net, batch_size: int) -> MemberEnsemble:
        """Members from saved weights, refused (ValueError) unless every member holds every
        parameter of the net, no unknown weight, and the same buffers as the others (a
        buffer newer than the weights takes its default, but only if every member lacks
        it). The nets are built here, so bad weights fail now, not at the first prediction."""
        net = new_net()
        parameters = {name for name, _ in net.named_parameters()}
        expected = set(net.state_dict())
        absent_buffers = None
        for i, state in enumerate(states):
            keys = set(state)
            unknown = sorted(keys - expected)
            lost = expected - keys
            if lost & parameters:
                raise ValueError(f"member {i} lacks {sorted(lost & parameters)[:3]}")
            if unknown:
                raise ValueError(f"member {i} has unknown weights {unknown[:3]}")
            if absent_buffers is not None and lost != absent_buffers:
                raise ValueError(f"member {i} holds other buffers than member 0")
            absent_buffers = lost
        ensemble = cls(states, new_net, batch_size)
        ensemble.nets()
        return ensemble

    def state_dict(self) -> list[dict]:
        """Each member's weights as detached, contiguous CPU tensors."""
        return [{key: value.detach().cpu().contiguous() for key, value in state.items()} for state in self.states]

    def nets(self) -> list:
        """One ``ProbeNet`` per member, in evaluation mode."""
        if self._nets is None or len(self._nets) != len(self.states):
            self._nets = []
            for state in self.states:
                net = self.new_net()
                net.load_state_dict({**net.state_dict(), **state})  # files older than a buffer: its default
                self._nets.append(net.eval())
            self._stacked = None
        return self._nets

    def stacked(self) -> StackedProbe:
        """All members fused into one network, built once: scoring one structure per MD
        step pays the per-module Python overhead once, not once per member."""
        nets = self.nets()
        if self._stacked is None:
            self._stacked = StackedProbe(nets)
        return self._stacked

    def logits(self, X, extras, importance=False):
        """Member-averaged logits (and per-atom importance) of every structure in ``X``,
        ``extras`` its scalar inputs (the fused members run in inference mode)."""
        stacked = self.stacked()
        if len(X) == 1 and X.features is not None:  # a calculator's step: no padding, no batching
            feats = torch.from_numpy(np.ascontiguousarray(X.features, dtype=np.float32))[None]
            z = torch.from_numpy(np.asarray(X.atomic_numbers, dtype=np.int64))[None]
            logit, imp = stacked.one(feats, z, torch.from_numpy(extras.astype(np.float32)), importance)
            out = logit.mean(0).numpy()
            return (out, [imp[0].numpy()]) if importance else out
        out = np.zeros(len(X), dtype=np.float32)
        importances = [None] * len(X)
        for idx in batch_indices(size_sorted(X.n_atoms), self.batch_size):
            logit, imp = stacked(*batch_tensors(X, extras, idx), return_importance=importance)
            out[idx] = logit.mean(0).numpy()
            if importance:
                for i, row, count in zip(idx, imp, X.n_atoms[idx]):
                    importances[i] = row[:count].numpy()
        return (out, importances) if importance else out


def size_sorted(n_atoms, window: int | None = None) -> np.ndarray:
    """Structure indices with each run of ``window`` consecutive structures sorted by atom
    count: a padded batch then holds structures of about one size (half the time at a
    spread of 13-38 atoms), and a store read from disk is still read in order, a window at
    a time."""
    n_atoms = np.asarray(n_atoms)
    window = window or SORT_WINDOW
    return np.concatenate(
        [start + np.argsort(n_atoms[start : start + window], kind="stable") for start in range(0, len(n_atoms), window)]
        or [np.zeros(0, dtype=np.int64)]
    )
