"""Active learning: which unlabelled structures to label next.

``select_file`` scores a pool of structures with the probe (one backbone pass each) and
picks ``n``: the least reliable ones, or with ``diverse=True`` a farthest-point sample,
in the probe's embedding, of the ``candidate_factor * n`` least reliable ones, so that
a batch is not ``n`` near-copies of one failure. The embedding is the one the probe's
latent distance uses: the mean over atoms of the standardised backbone features
(``classifier.pooled_features``). The picked structures are written as extxyz with
``probe_reliability``, ``probe_pool_index``, ``probe_rank`` and per-atom
``probe_importance`` (which atoms made the probe doubt), ready for reference labelling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probe_base.errors import InputError


def farthest_point_sampling(embeddings, n, start=0) -> np.ndarray:
    """``n`` row indices of ``embeddings``: ``start`` first, then each time the row farthest
    (Euclidean) from all rows taken so far. Exact duplicates come last."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n = min(int(n), len(embeddings))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    picked = [int(start)]
    distance = np.linalg.norm(embeddings - embeddings[start], axis=1)
    for _ in range(n - 1):
        distance[picked] = -np.inf
        nxt = int(np.argmax(distance))  # ties: the lowest index, i.e. the least reliable
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(embeddings - embeddings[nxt], axis=1))
    return np.asarray(picked, dtype=np.int64)


def select_structures(p_reliable, n, embeddings=None, diverse=False, candidate_factor=5.0, tiebreak=None):
    """Indices (into the pool) of ``n`` structures to label, in pick order.

    Plain: the ``n`` lowest P(reliable) (``tiebreak``, lower first, orders equal ones: e.g.
    minus the novelty among the structures outside the domain, all at P = 0). Diverse: among
    the ``ceil(candidate_factor * n)`` lowest, start from the least reliable and add the
    farthest candidate in ``embeddings`` each time."""
    p = np.asarray(p_reliable, dtype=np.float64)
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    # least reliable first
    order = np.argsort(p, kind="stable") if tiebreak is None else np.lexsort((np.asarray(tiebreak), p))
    if not diverse:
        return order[:n]
    if embeddings is None:
        raise InputError("diverse selection needs the structures' embeddings")
    if candidate_factor < 1:
        raise InputError(f"candidate_factor must be >= 1, got {candidate_factor}")
    n_candidates = min(len(p), max(n, int(np.ceil(candidate_factor * n))))
    candidates = order[:n_candidates]
    chosen = farthest_point_sampling(np.asarray(embeddings)[candidates], n, start=0)
    return candidates[chosen]


def score_pool(artifact, adapter, input_path, index=":", batch_size=32, progress=False):
    """The ``Scores`` of every structure of ``input_path`` (no labels needed; the same as
    ``probe predict`` gives, domain test included), their pooled embeddings and backbone
    energies, with the structures themselves."""
    from tqdm.auto import tqdm

    from probe_base.io.data import count_structures, iter_batches
    from probe_base.net.classifier import pooled_features
    from probe_base.scoring import score as score_structures
    from probe_base.store import FeatureSet

    classifier = artifact.classifier
    atoms_all, source, scores_all, embeddings, energies = [], [], [], [], []
    bar = tqdm(total=count_structures(input_path, index), unit="struct", desc="score pool", disable=not progress)

    def score(batch):
        atoms_list = [s.atoms for s in batch]
        out = adapter.run(
            atoms_list, compute_forces=False, members=False, source=str(input_path), indices=[s.index for s in batch]
        )
        X = FeatureSet.from_backbone_output(out, atoms_list)
        scores_all.append(score_structures(artifact, X))
        embeddings.append(pooled_features(X, classifier.pool_mean_, classifier.pool_std_))
        energies.extend(out.energies)
        atoms_all.extend(atoms_list)
        source.extend(s.index for s in batch)
        bar.update(len(batch))

    for batch in iter_batches(input_path, index, batch_size):
        score(batch)
    bar.close()
    if not atoms_all:
        raise InputError(f"{input_path}: no structures to select from")
    batches = [(scores, i) for scores in scores_all for i in range(len(scores.p_reliable))]
    return {
        "atoms": atoms_all,
        "source_index": np.asarray(source),
        "p_reliable": np.concatenate([s.p_reliable for s in scores_all]),
        "novelty": None if scores_all[0].novelty is None else np.concatenate([s.novelty for s in scores_all]),
        "scores": batches,  # (the batch's Scores, position in it) per structure
        "importance": [scores.importance[i].astype(np.float64) for scores, i in batches],
        "embeddings": np.concatenate(embeddings),
        "energies": np.asarray(energies),
    }


def select_file(
    probe_path,
    adapter,
    input_path,
    output_path,
    n,
    diverse=False,
    candidate_factor=5.0,
    index=":",
    batch_size=32,
    allow_mismatch=False,
    progress=True,
):
    """Pick ``n`` structures of ``input_path`` to label next; write them to ``output_path``
    (extxyz). Returns the written structures, in pick order."""
    import ase.io

    from probe_base.artifact import atomic_write, load_probe
    from probe_base.integrations.calculator import write_scores

    artifact = load_probe(probe_path)
    artifact.check_backbone(adapter.fingerprint(), allow_mismatch, source=str(probe_path))
    pool = score_pool(artifact, adapter, input_path, index, batch_size, progress)
    tiebreak = None if pool["novelty"] is None else -pool["novelty"]  # the most novel first
    picked = select_structures(pool["p_reliable"], n, pool["embeddings"], diverse, candidate_factor, tiebreak)
    out = []
    for rank, i in enumerate(picked):
        atoms = pool["atoms"][i].copy()
        atoms.calc = None  # the input's labels, if any, are not the backbone's
        scores, position = pool["scores"][i]
        write_scores({}, scores, position, atoms, artifact.decision)  # the keys `probe predict` writes
        atoms.info["probe_energy"] = float(pool["energies"][i])
        atoms.info["probe_pool_index"] = int(pool["source_index"][i])
        atoms.info["probe_rank"] = rank
        out.append(atoms)
    atomic_write(Path(output_path), lambda tmp: ase.io.write(str(tmp), out, format="extxyz"))
    return out
