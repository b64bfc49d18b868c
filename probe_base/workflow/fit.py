"""``probe fit``: a probe fitted on a feature store and written to a ``.probe`` file.

``fit_probe`` holds out an optional fraction of the store for evaluation
(``split_holdout``), loads the backbone's training set as the domain's reference
(``load_reference``: a store or a ``.reference`` build, refused for another backbone),
fits ``Probe`` and writes the file. Used by the CLI, the demo and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probe_base.decision import DEFAULT_ALPHA, DEFAULT_CALIBRATION_FRACTION, DEFAULT_FALSE_ALARM
from probe_base.domain.model import DomainModel
from probe_base.errors import FingerprintMismatch, InputError
from probe_base.io.paths import check_output_file
from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.probe import Probe
from probe_base.store import check_store_values, load_store, require_labels


def split_holdout(n, fraction, seed):
    """Deterministic split of ``n`` structures: (fit indices, held-out indices)."""
    if not 0 <= fraction < 1:
        raise InputError(
            f"--eval-fraction {fraction:g}: the fraction of the store kept out of "
            "fitting must be at least 0 and below 1 (e.g. 0.5)"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_eval = int(round(fraction * n))
    if n_eval >= n:
        raise InputError(
            f"--eval-fraction {fraction:g} keeps all {n} structures out of fitting; lower it or extract more structures"
        )
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def load_reference(reference_path, fingerprint, fit_store=""):
    """The backbone's training-set store for the domain (labels optional); refused if it
    was extracted with another backbone or other layers."""
    from probe_base.domain.reference_file import is_reference_file, load_built_reference

    if is_reference_file(reference_path):  # `probe reference build`: per-element indexes, not a store
        return load_built_reference(reference_path, fingerprint, fit_store)
    reference = load_store(reference_path)
    mine = reference.fingerprint
    if (mine.get("adapter"), mine.get("weights_sha256"), mine.get("layers"), mine.get("widths")) != (
        fingerprint.get("adapter"),
        fingerprint.get("weights_sha256"),
        fingerprint.get("layers"),
        fingerprint.get("widths"),
    ):
        differences = []
        if mine.get("adapter") != fingerprint.get("adapter"):
            differences.append(f"adapter {mine.get('adapter')} vs {fingerprint.get('adapter')}")
        if mine.get("weights_sha256") != fingerprint.get("weights_sha256"):
            differences.append("the model weights differ (another model file or training)")
        if (mine.get("layers"), mine.get("widths")) != (fingerprint.get("layers"), fingerprint.get("widths")):
            differences.append(f"feature layers {mine.get('layers')} vs {fingerprint.get('layers')}")
        raise FingerprintMismatch(
            f"{reference_path}: this reference store does not match {fit_store}: {'; '.join(differences)}; "
            "extract the backbone's training set with the same --adapter, --model and --layers "
            "(`probe extract --no-labels`)"
        )
    return reference


def fit_probe(
    store_path,
    output,
    label: LabelSpec,
    classifier: ProbeClassifier,
    eval_fraction: float = 0.0,
    split_seed: int = 0,
    comm=None,
    reference=None,
    domain=True,
    alpha=DEFAULT_ALPHA,
    atom_errors=True,
    false_alarm=DEFAULT_FALSE_ALARM,
    calibration_fraction=DEFAULT_CALIBRATION_FRACTION,
) -> Probe:
    """``Probe.fit`` on a feature store (minus an optional held-out fraction); write
    ``output``; return the fitted ``Probe``.

    ``reference``: a store (or ``.reference``) of the backbone's training set, the domain's
    reference atoms; without it the fitting set is the reference. ``domain``: True, a
    ``DomainModel`` to fit, or False (no domain test); ``alpha``: its false-alarm rate.
    ``atom_errors``: fit the per-atom force-error head where the store has forces.
    ``false_alarm`` / ``calibration_fraction``: the decision rule (``Probe``).
    ``comm`` (a ``probe_base.distributed.Group``): every rank of a torchrun job calls this,
    features are streamed from the store, and rank 0 writes ``output``."""
    check_output_file(output, "probe", [store_path, reference])
    distributed = comm is not None and comm.world > 1
    data = require_labels(load_store(store_path, lazy=distributed), store_path, "fit")
    check_store_values(data, store_path)
    fit_idx, eval_idx = split_holdout(len(data), eval_fraction, split_seed)
    fit_data = data.subset(fit_idx)
    if isinstance(domain, DomainModel):
        domain_model = domain
    else:
        domain_model = DomainModel(alpha=alpha, scalars=None, seed=split_seed) if domain else None
    probe = Probe(
        label,
        classifier,
        domain_model,
        "default" if atom_errors else None,
        false_alarm,
        calibration_fraction,
        split_seed,
    )
    reference_data = load_reference(reference, data.fingerprint, store_path) if reference else None
    rank0 = comm is None or comm.rank == 0
    loaded = load_store(store_path).subset(fit_idx) if distributed and rank0 else None
    probe.fit(fit_data, reference_data, comm=comm, loaded=loaded, where=str(store_path))
    if rank0:
        info = {
            "fit_store": str(Path(store_path).resolve()),
            "store_identity": data.attrs,
            "reference_store": str(Path(reference).resolve()) if reference else None,
            "fit_indices": fit_idx.tolist(),
            "eval_indices": eval_idx.tolist(),
            "calibration_indices": fit_idx[probe.calibration_positions_].tolist(),  # the decision cut's structures
            "n_fit": int(len(fit_idx)),
        }
        probe.save(output, data.fingerprint, info)
    if comm is not None:
        comm.barrier()  # every rank returns once the file is there
    return probe
