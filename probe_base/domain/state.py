"""A fitted ``DomainModel`` as arrays and JSON metadata, and back: what the artifact
module writes into the ``.probe`` file (no pickle).

``DomainModel.state_dict`` and ``DomainModel.from_state`` call these. Each element's
reference index goes in as FAISS's serialised bytes; files written before the FAISS index
hold the exact reference's features instead, and still load.
"""

from __future__ import annotations

import numpy as np

from probe_base.domain.reference_index import ElementIndex


def domain_state(model) -> tuple[dict, dict]:
    """(arrays, JSON metadata) of a fitted domain model."""
    arrays = {"mean": model.mean_, "std": model.std_, "calibration_scores": model.calibration_scores_}
    if getattr(model, "out_of_fold_scores_", None) is not None:  # self-calibrated: per reference structure
        arrays["out_of_fold_scores"] = np.asarray(model.out_of_fold_scores_, dtype=np.float64)
    ranges = {name: list(r) for name, r in model.ranges_.items()}
    indexes = {}
    for z, index in model.reference_.items():
        arrays[f"index.{z}"], indexes[str(z)] = index.state()
    meta = {
        "params": {**model.get_params(), "scalars": list(model.scalars)},
        "threshold": model.threshold_,
        "n_calibration": model.n_calibration_,
        "n_features": int(model.n_features_in_),
        "elements": [int(z) for z in model.elements_],
        "scale": {str(z): float(s) for z, s in model.scale_.items()},
        "ranges": ranges,
        "indexes": indexes,
    }
    return arrays, meta


def domain_from_state(cls, arrays: dict, meta: dict):
    """A fitted ``cls`` (``DomainModel``) from ``domain_state``'s arrays and metadata."""
    params = dict(meta["params"])
    params["scalars"] = tuple(params.get("scalars", ()))
    model = cls(**params)
    model.ranges_ = {name: tuple(r) for name, r in meta.get("ranges", {}).items()}
    model.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
    model.std_ = np.asarray(arrays["std"], dtype=np.float32)
    model.calibration_scores_ = np.asarray(arrays["calibration_scores"], dtype=np.float64)
    if "out_of_fold_scores" in arrays:
        model.out_of_fold_scores_ = np.asarray(arrays["out_of_fold_scores"], dtype=np.float64)
    model.threshold_ = float(meta["threshold"])
    model.n_calibration_ = int(meta["n_calibration"])
    model.n_features_in_ = int(meta["n_features"])
    model.elements_ = np.asarray(meta["elements"], dtype=np.int64)
    model.scale_ = {int(z): float(s) for z, s in meta["scale"].items()}
    model.reference_ = {}
    indexes = meta.get("indexes")
    for z in model.elements_:
        if indexes is None:  # files before the FAISS index: the exact reference's features
            points = np.asarray(arrays[f"reference.{int(z)}"], dtype=np.float32)
            model.reference_[int(z)] = ElementIndex.flat(points)
            continue
        index = ElementIndex.from_state(arrays[f"index.{int(z)}"], indexes[str(int(z))], f"domain index of Z={int(z)}")
        if index.n_features != model.n_features_in_:
            raise ValueError(
                f"domain index of Z={int(z)} has {index.n_features} features, the domain {model.n_features_in_}"
            )
        model.reference_[int(z)] = index
    return model
