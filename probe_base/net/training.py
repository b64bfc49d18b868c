"""``MemberTrainer``: trains the probe's members on cached features.

Each member: a class-balanced BCE loss, AdamW, early stopping on a validation split
(best validation AUROC, or loss), deterministic for a fixed seed. ``cross_fit`` trains
one member per fold (and seed), each early-stopped on the fold it never trains on, and
returns the out-of-fold logits that calibrate the averaged probe; ``split_fit`` is the
paper's single train / validation split, with a calibration split held out if asked.

Under torchrun (``comm`` a ``probe_base.distributed.Group``) every rank runs the same
calls: the same shuffled order, its share of each step's batch, gradients averaged by
DistributedDataParallel, validation logits gathered, so all ranks stop together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm.auto import tqdm

from probe_base.distributed import LOCAL
from probe_base.errors import LabelError
from probe_base.net.inputs import batch_indices, batch_tensors


@dataclass
class TrainedMembers:
    states: list  # each member's best state dict (CPU tensors)
    histories: list  # per member, one dict per epoch: train/val loss, val AUROC
    out_of_fold_logits: np.ndarray | None = None  # cross-fitting: every structure's, member-averaged
    calibration_indices: np.ndarray | None = None  # single split: the structures held out to calibrate


class MemberTrainer:
    """``new_net``: builds an untrained ``ProbeNet``; ``norm``: its normalisation buffers
    (``probe_base.net.inputs.normalisation``); ``selection``: "auroc" or "loss" for early
    stopping."""

    def __init__(
        self, new_net, norm, *, lr, weight_decay, batch_size, max_epochs, patience, selection="auroc", progress=False
    ):
        self.new_net = new_net
        self.norm = norm
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.selection = selection
        self.progress = progress

    def cross_fit(self, X, y, extras, folds, n_seeds, seed, comm=LOCAL) -> TrainedMembers:
        """Member (k, s) early-stops on fold k and never sees it; the out-of-fold logits
        (averaged over seeds) calibrate the averaged probe. All labelled data trains."""
        check_class_sizes(y, folds)
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
        out = TrainedMembers([], [], out_of_fold_logits=np.zeros(len(y)))
        jobs = [(k, s, train, val) for k, (train, val) in enumerate(splits) for s in range(n_seeds)]
        for k, s, train_idx, val_idx in tqdm(jobs, desc="probe members", disable=not self.progress):
            state, history = self.fit_member(X, y, extras, train_idx, val_idx, seed + 1000 * s + k, comm)
            out.states.append(state)
            out.histories.append(history)
            net = self.new_net()
            net.load_state_dict(state)
            out.out_of_fold_logits[val_idx] += member_logits(net, X, extras, val_idx, self.batch_size, comm) / n_seeds
        return out

    def split_fit(
        self, X, y, extras, n_seeds, seed, val_fraction, calibration_fraction=None, comm=LOCAL
    ) -> TrainedMembers:
        """One train/validation split (after holding out ``calibration_fraction`` to
        calibrate, unless None), as the paper's code does; ``n_seeds`` members on it."""
        indices = np.arange(len(X))
        calibration_idx = np.array([], dtype=np.int64)
        if calibration_fraction is not None:
            indices, calibration_idx = stratified_split(indices, y, calibration_fraction, seed)
        train_idx, val_idx = stratified_split(indices, y, val_fraction, seed + 1)
        out = TrainedMembers([], [], calibration_indices=calibration_idx)
        for member_seed in tqdm(
            range(seed, seed + n_seeds), desc="probe members", disable=not self.progress or n_seeds == 1
        ):
            state, history = self.fit_member(X, y, extras, train_idx, val_idx, member_seed, comm)
            out.states.append(state)
            out.histories.append(history)
        return out

    def fit_member(self, X, y, extras, train_idx, val_idx, seed, comm=LOCAL):
        """One member: (its best state dict, its per-epoch history)."""
        torch.manual_seed(seed)
        generator = np.random.default_rng(seed)
        net = self.new_net()
        net.load_state_dict({**net.state_dict(), **self.norm})
        model = comm.wrap(net.to(comm.device))
        comm.seed_rank(seed)
        optimiser = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        n_pos = y[train_idx].sum()
        pos_weight = torch.tensor((len(train_idx) - n_pos) / max(n_pos, 1), dtype=torch.float32)
        target = torch.from_numpy(y.astype(np.float32))
        on_device = target.to(comm.device), pos_weight.to(comm.device)
        batch_size = comm.per_rank(self.batch_size)
        best, best_state, stale, history = -np.inf, None, 0, []
        bar = tqdm(range(self.max_epochs), desc=f"probe fit (seed {seed})", disable=not self.progress, leave=False)
        for epoch in bar:
            model.train()
            total = 0.0
            order = comm.even_share(np.asarray(train_idx)[generator.permutation(len(train_idx))])
            for idx in batch_indices(order, batch_size):
                feats, z, mask, ex = batch_tensors(X, extras, idx, comm.device)
                logit, _ = model(feats, z, mask, ex)
                loss = F.binary_cross_entropy_with_logits(logit, on_device[0][idx], pos_weight=on_device[1])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            total = float(comm.all_sum(total))
            val_logits = member_logits(net, X, extras, val_idx, self.batch_size, comm)
            val_loss = float(
                F.binary_cross_entropy_with_logits(torch.from_numpy(val_logits), target[val_idx], pos_weight=pos_weight)
            )
            val_auroc = float(roc_auc_score(y[val_idx], val_logits))
            history.append(
                {"epoch": epoch, "train_loss": total / len(train_idx), "val_loss": val_loss, "val_auroc": val_auroc}
            )
            score = val_auroc if self.selection == "auroc" else -val_loss
            if score > best + 1e-6:
                best, stale = score, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
            bar.set_postfix(val_auroc=f"{val_auroc:.3f}", best=f"{best:.3f}", refresh=False)
        return best_state, history


def member_logits(net, X, extras, indices, batch_size, comm=LOCAL) -> np.ndarray:
    """Logits of one member ``net`` for structures ``indices``: each rank computes its
    share, then all gather."""
    share = _local_logits(net.to(comm.device), X, extras, comm.share(indices), batch_size, comm.device)
    return comm.gather(share, len(indices))


@torch.no_grad()
def _local_logits(net, X, extras, indices, batch_size, device="cpu"):
    net.eval()
    logits = [
        net(*batch_tensors(X, extras, idx, device), return_importance=False)[0].cpu().numpy()
        for idx in batch_indices(indices, batch_size)
    ]
    return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)


def check_class_sizes(y, needed):
    counts = np.bincount(y, minlength=2)
    smaller = int(counts.min())
    if smaller < needed:
        which = "unreliable" if counts[0] <= counts[1] else "reliable"
        hint = (
            "the backbone is within the tolerance almost everywhere here: label structures where it is not "
            "(hotter MD, strained or unusual geometries) or set a tighter --threshold"
            if which == "unreliable"
            else "the backbone misses the tolerance almost everywhere here: set a looser --threshold"
        )
        raise LabelError(
            f"only {smaller} {which} structure{'s' if smaller != 1 else ''} of {int(counts.sum())}; PROBE needs "
            f"at least {needed} of each class: {hint}"
        )


def stratified_split(indices, y, fraction, seed):
    """(rest, held_out) with ``fraction`` of ``indices`` held out, stratified by y."""
    labels = y[indices]
    check_class_sizes(labels, 2)
    rest, held = train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)
    return np.sort(rest), np.sort(held)
