"""Chemiscope files of scored structures (``--chemiscope scored.json.gz``).

Chemiscope (https://chemiscope.org, Ceriotti lab) shows a map of per-structure properties
next to the structures, atoms coloured by per-atom properties. The file holds, per
structure, P(reliable), the error where the reference is known and the energy per atom;
per atom, the probe's map(s); and a 2-D map of the structures: the first two principal
components of the pooled (atom-averaged, standardised) backbone features, so structures
the backbone sees alike sit together and the untrusted ones show where they cluster.
Written with chemiscope's own ``write_input``; open it at chemiscope.org (the file stays on
the computer) or with ``chemiscope.show_input``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probe_base.errors import InputError
from probe_base.io.frames import frames_for_structures
from probe_base.labels import TARGETS, UNITS


def require_chemiscope(path=None):
    """The chemiscope module, or a clear error; also checks the file name chemiscope will
    accept. Called before long runs, so that they do not fail at the end."""
    if path is not None and not str(path).endswith((".json", ".json.gz")):
        raise InputError(f"{path}: a chemiscope file is named *.json.gz (or *.json)")
    try:
        import chemiscope
    except ImportError:
        raise InputError("--chemiscope needs the chemiscope package: pip install 'mlip-probe[chemiscope]'") from None
    return chemiscope


def structure_map(pooled: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates: PCA of per-structure feature vectors after standardising each
    feature (so no single wide feature decides the map). Fewer than two usable components
    (one structure, one feature) leave the missing axes at 0."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    pooled = np.asarray(pooled, dtype=np.float64)
    coordinates = np.zeros((len(pooled), 2))
    n_components = min(2, len(pooled) - 1, pooled.shape[1]) if len(pooled) else 0
    if n_components >= 1:
        scaled = StandardScaler().fit_transform(pooled)
        coordinates[:, :n_components] = PCA(n_components=n_components).fit_transform(scaled)
    return coordinates


def mean_features(features) -> np.ndarray:
    """Atom-averaged features of every structure of a FeatureSet: (n_structures, F)."""
    sums = np.add.reduceat(features.features.astype(np.float64), features.offsets[:-1], axis=0)
    return sums / features.n_atoms[:, None]


def _property(values, target, description, units=None):
    entry = {"target": target, "values": values, "description": description}
    if units:
        entry["units"] = units
    return entry


def write_chemiscope(
    path,
    frames,
    structure_properties: dict,
    atom_properties: dict,
    pooled,
    name: str,
    description: str,
    color_atoms_by: str | None,
) -> Path:
    """One chemiscope file. ``frames``: ase Atoms (None: a map without structures, atom
    properties dropped); properties: ``{name: chemiscope property dict}``."""
    chemiscope = require_chemiscope()
    coordinates = structure_map(pooled)
    properties = {"PCA": _property(coordinates, "structure", "principal components of the pooled backbone features")}
    properties.update(structure_properties)
    environments = None
    if frames is not None:
        properties.update(atom_properties)
        # every atom is an environment: chemiscope shows atom properties only for those
        environments = chemiscope.all_atomic_environments(frames)
    periodic = frames is not None and any(atoms.pbc.any() for atoms in frames)
    settings = chemiscope.quick_settings(
        x="PCA[1]",
        y="PCA[2]",
        map_color="P(reliable)",
        target="structure",
        periodic=periodic,
        structure_color=color_atoms_by if frames is not None else None,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name with the same ending (chemiscope picks gzip from it), then a rename:
    # a reader never sees half a file
    partial = path.with_name(f".{os.getpid()}.{path.name}")
    try:
        chemiscope.write_input(
            str(partial),
            structures=frames,
            properties=properties,
            environments=environments,
            settings=settings,
            metadata={"name": name, "description": description},
        )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def chemiscope_from_evaluation(evaluation, path) -> str | None:
    """The evaluated structures as a chemiscope file. Returns None, or why the structures
    themselves are missing (the input file is gone: then a map without them is written)."""
    arrays = evaluation["arrays"]
    data = arrays["data"]
    label = evaluation["label"]
    unit = UNITS.get(label["target"], "")
    frames, why = frames_for_structures(data, np.arange(len(data)))
    energy_per_atom = data.energy_pred / data.n_atoms
    structure_properties = {
        "P(reliable)": _property(
            arrays["p_reliable"], "structure", "PROBE's probability that the backbone's prediction is reliable"
        ),
        f"{label['target']} error": _property(arrays["errors"], "structure", TARGETS[label["target"]], unit),
        "unreliable": _property(
            ["unreliable" if u else "reliable" for u in arrays["unreliable"]],
            "structure",
            f"{label['target']} error > {label['threshold']:.4g} {unit}",
        ),
        "energy per atom": _property(energy_per_atom, "structure", "backbone energy per atom", "eV/atom"),
        "frame": _property(
            np.asarray(data.source_index, dtype=np.float64), "structure", "position in the input file's selection"
        ),
    }
    if data.energy_ref is not None and np.all(np.isfinite(data.energy_ref)):
        structure_properties["reference energy per atom"] = _property(
            data.energy_ref / data.n_atoms, "structure", "reference energy per atom", "eV/atom"
        )
    for method, score in arrays["scores"].items():
        if method != "PROBE":  # PROBE's risk score is 1 - P(reliable), already there
            structure_properties[f"risk score: {method}"] = _property(
                score, "structure", f"{method}: higher = trusted less"
            )
    structure_properties.update(_optional_structure_properties(arrays))
    atom_properties = _evaluation_atom_properties(arrays, data)
    description = (
        f"{evaluation['n_structures']} structures evaluated by PROBE; reliable = "
        f"{label['target']} error <= {label['threshold']:.4g} {unit}. Map: PCA of the pooled "
        "backbone features, coloured by P(reliable)."
    )
    write_chemiscope(
        path,
        frames,
        structure_properties,
        atom_properties,
        _stored_mean_features(data),
        "PROBE evaluation",
        description,
        "predicted force error" if "predicted force error" in atom_properties else "importance",
    )
    return why


def _stored_mean_features(data) -> np.ndarray:
    if data.features is not None:
        return mean_features(data)
    return np.stack([f.mean(axis=0) for f, _ in data.reader.read(data.rows)])  # a lazy StoreView


def _optional_structure_properties(arrays) -> dict:
    out = {}
    if arrays.get("novelty") is not None:
        out["novelty"] = _property(
            np.asarray(arrays["novelty"], dtype=np.float64),
            "structure",
            "distance from the probe's fitting domain; > 1 = outside it",
        )
    if arrays.get("in_domain") is not None:
        out["in domain"] = _property(
            ["yes" if v else "no" for v in arrays["in_domain"]], "structure", "inside the probe's domain"
        )
    return out


def _concatenated(per_structure) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in per_structure])


def _evaluation_atom_properties(arrays, data) -> dict:
    out = {
        "importance": _property(
            _concatenated(arrays["importance"]),
            "atom",
            "attention importance: the atom's share of the structure's score",
        )
    }
    if arrays.get("atom_error") is not None:
        out["predicted force error"] = _property(
            _concatenated(arrays["atom_error"]), "atom", "PROBE's per-atom reliability map", "eV/Å"
        )
    if arrays.get("atom_novelty") is not None:
        out["atom novelty"] = _property(
            _concatenated(arrays["atom_novelty"]), "atom", "> 1 = unlike the atoms the probe was fitted on"
        )
    actual = getattr(data, "atom_force_error", None)
    if actual is not None and len(actual) and np.all(np.isfinite(actual)):
        out["actual force error"] = _property(
            np.asarray(actual, dtype=np.float64), "atom", "|F_pred - F_ref| of the backbone", "eV/Å"
        )
    return out


class PredictionCollector:
    """Pass as ``on_batch`` to ``predict_file``: keeps what the chemiscope file needs and the
    extxyz does not hold (pooled features; reference energies, where the input has them)."""

    def __init__(self, path=None):
        require_chemiscope(path)
        self.feature_means, self.reference_energies = [], []

    def __call__(self, batch, features):
        self.feature_means.append(mean_features(features))
        for item in batch:
            results = getattr(item.atoms.calc, "results", None) or {}
            energy = results.get("energy", results.get("free_energy"))
            self.reference_energies.append(np.nan if energy is None else float(energy))


# annotated extxyz keys -> chemiscope names; other probe_* keys keep their name without prefix
PREDICTION_NAMES = {
    "probe_reliability": "P(reliable)",
    "probe_energy": "energy",
    "probe_in_domain": "in domain",
    "probe_novelty": "novelty",
    "probe_importance": "importance",
    "probe_atom_error": "predicted force error",
    "probe_atom_novelty": "atom novelty",
}


def _chemiscope_values(values):
    """Numbers as floats, flags and text as categories (chemiscope's two kinds of values)."""
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return ["yes" if v else "no" for v in values]
    if all(isinstance(v, str) for v in values):
        return list(values)
    return np.asarray(values, dtype=np.float64)


def chemiscope_from_predictions(annotated, collector: PredictionCollector, path) -> Path:
    """The structures ``predict_file`` scored (``annotated``) as a chemiscope file."""
    if not annotated:
        raise InputError(f"no structures were scored, so there is nothing to write to {path}")
    n_atoms = np.array([len(a) for a in annotated], dtype=np.float64)
    structure_properties, atom_properties = {}, {}
    for key in annotated[0].info if annotated else ():
        if key.startswith("probe_") and all(np.isscalar(a.info.get(key)) for a in annotated):
            name = PREDICTION_NAMES.get(key, key[len("probe_") :])
            structure_properties[name] = _property(
                _chemiscope_values([a.info[key] for a in annotated]), "structure", f"{key} in the scored extxyz"
            )
    energies = np.array([a.info["probe_energy"] for a in annotated], dtype=np.float64)
    structure_properties["energy"]["units"] = "eV"
    structure_properties["energy per atom"] = _property(
        energies / n_atoms, "structure", "backbone energy per atom", "eV/atom"
    )
    reference = np.asarray(collector.reference_energies, dtype=np.float64)
    if len(reference) == len(annotated) and np.all(np.isfinite(reference)):
        structure_properties["energy error"] = _property(
            np.abs(energies - reference), "structure", TARGETS["energy"], "eV"
        )
        structure_properties["energy per atom error"] = _property(
            np.abs(energies - reference) / n_atoms, "structure", TARGETS["energy_per_atom"], "eV/atom"
        )
    for key, column in annotated[0].arrays.items() if annotated else ():
        if key.startswith("probe_") and column.ndim == 1:
            name = PREDICTION_NAMES.get(key, key[len("probe_") :])
            atom_properties[name] = _property(
                _concatenated(a.arrays[key] for a in annotated), "atom", f"{key} in the scored extxyz"
            )
    frames = [a.copy() for a in annotated]
    for atoms in frames:  # the properties travel separately; keep the structures plain
        atoms.info.clear()
        for key in [k for k in atoms.arrays if k not in ("numbers", "positions")]:
            del atoms.arrays[key]
    pooled = np.concatenate(collector.feature_means) if collector.feature_means else np.zeros((0, 1))
    colour = "predicted force error" if "predicted force error" in atom_properties else "importance"
    return write_chemiscope(
        path,
        frames,
        structure_properties,
        atom_properties,
        pooled,
        "PROBE predictions",
        f"{len(annotated)} structures scored by PROBE. Map: PCA of "
        "the pooled backbone features, coloured by P(reliable).",
        colour,
    )
