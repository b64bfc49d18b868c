"""``probe predict``: every structure of a structure file scored and written back as
extxyz with the probe's per-structure and per-atom values.
"""

from __future__ import annotations

from pathlib import Path

from probe_base.artifact import atomic_write, load_probe
from probe_base.io.paths import check_output_file
from probe_base.scoring import score


def predict_file(
    probe_path,
    adapter,
    input_path,
    output_path,
    index=":",
    batch_size=32,
    allow_mismatch=False,
    progress=True,
    use_domain=True,
    on_batch=None,
    artifact=None,
):
    """Score every structure of ``input_path``; write extxyz with ``probe_reliability``,
    ``probe_in_domain``, ``probe_novelty`` per structure and ``probe_importance``,
    ``probe_atom_novelty``, ``probe_atom_error`` per atom (plus the backbone's energy).
    ``on_batch(batch, features)``, if given, sees each batch of input structures and its
    backbone features (e.g. ``chemiscope_export.PredictionCollector``). ``artifact``: the
    probe already loaded from ``probe_path``."""
    import ase.io
    from tqdm.auto import tqdm

    from probe_base.integrations.calculator import write_scores
    from probe_base.io.data import count_structures, iter_batches
    from probe_base.store import FeatureSet

    check_output_file(output_path, "extxyz", [input_path, probe_path, *adapter.model_paths])
    artifact = artifact if artifact is not None else load_probe(probe_path)
    artifact.check_backbone(adapter.fingerprint(), allow_mismatch, source=str(probe_path))
    annotated = []
    bar = tqdm(total=count_structures(input_path, index), unit="struct", desc="predict", disable=not progress)

    def score_batch(batch):
        atoms_list = [s.atoms for s in batch]
        out = adapter.run(
            atoms_list, compute_forces=False, members=False, source=str(input_path), indices=[s.index for s in batch]
        )
        features = FeatureSet.from_backbone_output(out, atoms_list)
        scores = score(artifact, features, use_domain)
        if on_batch is not None:
            on_batch(batch, features)
        for i, (atoms, energy) in enumerate(zip(atoms_list, out.energies)):
            atoms = atoms.copy()
            atoms.calc = None
            write_scores({}, scores, i, atoms, artifact.decision)
            atoms.info["probe_energy"] = float(energy)
            annotated.append(atoms)
        bar.update(len(batch))

    for batch in iter_batches(input_path, index, batch_size):
        score_batch(batch)
    bar.close()
    atomic_write(Path(output_path), lambda tmp: ase.io.write(str(tmp), annotated, format="extxyz"))
    return annotated
