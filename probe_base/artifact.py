"""The ``.probe`` file: safetensors weights + JSON metadata. No pickle anywhere.

One file holds every probe seed's weights and normalisation, the latent-distance
reference set, the backbone's domain (``domain.*``: reference atoms per element and the
conformal novelty threshold), the per-atom error head (``atom_errors.*``), calibration, the label definition, the backbone fingerprint and versions.
Loading uses ``safetensors`` only, so a crafted file can never execute code, whatever
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says, and a file whose weights do not match its declared
members exactly is refused (never completed with fresh weights). Writes go to a temporary
file that is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from probe_base.decision import DecisionRule
from probe_base.domain.model import DomainModel
from probe_base.errors import ArtifactError, FingerprintMismatch, ProbeError
from probe_base.io.paths import METADATA_KEY, atomic_write  # noqa: F401 - atomic_write: callers import it from here
from probe_base.labels import LabelSpec
from probe_base.net.atom_errors import AtomErrorModel
from probe_base.net.classifier import ProbeClassifier

FORMAT = "mlip-probe/1"
# sha256 of the metadata and every tensor: a flipped byte anywhere is refused, never read as
# a slightly different probe (files written before it have none and are checked for finiteness only)
HASH_KEY = "mlip_probe_sha256"


@dataclass
class ProbeArtifact:
    classifier: ProbeClassifier
    label: LabelSpec
    fingerprint: dict
    info: dict
    domain: DomainModel | None = None  # None: files without one, or fitted with --no-domain
    atom_errors: AtomErrorModel | None = None  # None: fitted without reference forces

    @property
    def decision(self) -> DecisionRule:
        """The rule every consumer flags with (``probe_base.decision``)."""
        return DecisionRule.from_info(self.info.get("info") or {})

    def check_backbone(self, backbone_fingerprint: dict, allow_mismatch: bool = False, source="probe"):
        check_fingerprint(self.fingerprint, backbone_fingerprint, allow_mismatch, source)


def _parts_to_tensors(prefix, part, tensors):
    """A part's (arrays, meta) state: arrays into ``tensors`` under ``prefix.``; its meta."""
    if part is None:
        return None
    arrays, meta = part.state_dict()
    for key, value in arrays.items():
        tensors[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    return meta


def _part_from_tensors(cls, prefix, meta, tensors):
    if meta is None:
        return None
    start = f"{prefix}."
    return cls.from_state({k[len(start) :]: v.numpy() for k, v in tensors.items() if k.startswith(start)}, meta)


def save_probe(
    path,
    classifier: ProbeClassifier,
    label: LabelSpec,
    fingerprint: dict,
    info=None,
    domain: DomainModel | None = None,
    atom_errors: AtomErrorModel | None = None,
):
    tensors, fitted = {}, {}
    for key, value in classifier.state_dict().items():
        if key == "members":  # one tensor per member weight, their count in the header
            fitted["n_members"] = len(value)
            tensors.update(
                {f"member{i}.{name}": weights for i, member in enumerate(value) for name, weights in member.items()}
            )
        elif isinstance(value, np.ndarray):
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            fitted[key] = value
    params = classifier.get_params()
    params["extras"] = list(params["extras"])
    meta = {
        "format": FORMAT,
        "params": params,
        **fitted,
        "domain": _parts_to_tensors("domain", domain, tensors),
        "atom_errors": _parts_to_tensors("atom_errors", atom_errors, tensors),
        "label": label.to_dict(),
        "fingerprint": fingerprint,
        "info": info or {},
        "versions": _versions(),
    }
    problem = _non_finite(tensors, meta)
    if problem:
        raise ArtifactError(
            f"{path}: not written: the fitted probe holds {problem} (training diverged or the fitting "
            "store holds out-of-range values); check the store's features and labels, then fit again"
        )
    write_tensors(path, tensors, meta)


def content_sha256(tensors: dict, meta_json: str) -> str:
    """sha256 over the metadata text and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_tensors(path, tensors: dict, meta: dict) -> None:
    """Write a ``.probe`` atomically, with its content hash."""
    meta_json = json.dumps(meta)
    metadata = {METADATA_KEY: meta_json, HASH_KEY: content_sha256(tensors, meta_json)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def rewrite_info(path, updates: dict, output=None) -> Path:
    """Rewrite a ``.probe`` with ``updates`` merged into its ``info``, the weights unchanged
    (checked on the way in, hashed anew on the way out). Atomic; returns the path written."""
    path = Path(path)
    load_probe(path)  # the same checks and messages as everywhere else
    tensors, meta = _read_checked(path)
    meta["info"] = {**meta.get("info", {}), **updates}
    target = Path(output) if output is not None else path
    write_tensors(target, tensors, meta)
    return target


def _numbers(value, where):
    """(where, number) for every number in a JSON-like value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{where}[{i}]")


#: header entries whose numbers enter a decision (the others are reports: split indices, ...)
DECIDING = ("label", "domain", "atom_errors", "temperature", "prior_log_odds", "params")


def _non_finite(tensors, meta) -> str | None:
    """What holds NaN or inf among the weights and the numbers that decide, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"NaN or inf in {name!r}"
    deciding = {key: meta.get(key) for key in DECIDING}
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    deciding["decision"] = info.get("decision")
    for where, number in _numbers(deciding, "header"):
        if isinstance(number, float) and not math.isfinite(number):
            return f"{where} is {number}"
    return None


def _read_checked(path: Path) -> tuple[dict, dict]:
    """Tensors and header of a ``.probe``, refused (ArtifactError) unless readable and, where
    the file has a content hash, equal to what was written."""
    from safetensors import safe_open

    damaged = f"{path}: not a valid .probe file"
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        meta_json = metadata[METADATA_KEY]
        meta = json.loads(meta_json)
    except (SafetensorError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"{damaged} (corrupted, truncated, or another format such as a pickle, which is never loaded): "
            f"{_one_line(exc)}. Re-create it with `probe fit`."
        ) from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{damaged}: its header is not a JSON object; re-create it with `probe fit`")
    stored = metadata.get(HASH_KEY)
    if stored is not None and stored != content_sha256(tensors, meta_json):
        raise ArtifactError(
            f"{path}: the file is damaged (its content hash does not match: bytes changed after it was "
            "written); re-create it with `probe fit` or restore a copy"
        )
    return tensors, meta


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


def _versions():
    import probe_base

    return {"mlip_probe": probe_base.__version__, "torch": torch.__version__}


def load_probe(path) -> ProbeArtifact:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: probe file not found; train one with `probe fit`")
    tensors, meta = _read_checked(path)
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{path}: unsupported probe format {meta.get('format')!r}; expected {FORMAT}")
    problem = _non_finite(tensors, meta)
    if problem:
        raise ArtifactError(f"{path}: the file is damaged ({problem}); re-create it with `probe fit`")
    try:
        params = dict(meta["params"])
        params.pop("domain_guard", None)  # files before the domain model: it replaced the guard
        params.setdefault("attention", "self")  # files before the pooling probe
        classifier = ProbeClassifier.from_state(params, _classifier_state(path, tensors, meta))
        domain = _part_from_tensors(DomainModel, "domain", meta.get("domain"), tensors)
        atom_errors = _part_from_tensors(AtomErrorModel, "atom_errors", meta.get("atom_errors"), tensors)
        label = LabelSpec(**meta["label"])
        DecisionRule.from_info(meta.get("info") or {})
    except ValueError as exc:  # values a part refuses: members that do not fit the net, NaN, ...
        raise ArtifactError(f"{path}: {_one_line(exc)}; the file is damaged: re-create it with `probe fit`") from None
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"{path}: probe file is incomplete or inconsistent ({_one_line(exc)}); re-create it with `probe fit`"
        ) from None
    except ProbeError as exc:
        raise ArtifactError(f"{path}: {_one_line(exc)}; the file is damaged: re-create it with `probe fit`") from None
    return ProbeArtifact(classifier, label, meta["fingerprint"], meta, domain, atom_errors)


MEMBER_KEY = re.compile(r"^member(\d+)\.(.+)$")
PARTS = ("domain", "atom_errors")  # tensors under "<part>." belong to that part
HEADER = {"format", "params", "n_members", *PARTS, "label", "fingerprint", "info", "versions"}


def _classifier_state(path, tensors, meta) -> dict:
    """What ``ProbeClassifier.from_state`` reads: the header's other scalars, the members'
    weights and the tensors that belong to no member and no part."""
    state = {key: value for key, value in meta.items() if key not in HEADER}
    state["members"] = _members(path, tensors, meta["n_members"])
    state.update(
        {
            key: value.numpy()
            for key, value in tensors.items()
            if not MEMBER_KEY.match(key) and key.split(".", 1)[0] not in PARTS
        }
    )
    return state


def _members(path, tensors, n_members) -> list[dict]:
    """The members' weights, refused unless the file holds exactly the declared members
    0..n-1 (whether each holds the right weights, ``ProbeClassifier.from_state`` checks)."""
    if not isinstance(n_members, int) or isinstance(n_members, bool) or n_members < 1:
        raise ArtifactError(
            f"{path}: the header declares {n_members!r} members; the file is damaged: re-create it with `probe fit`"
        )
    members: dict[int, dict] = {}
    for key, value in tensors.items():
        match = MEMBER_KEY.match(key)
        if match:
            members.setdefault(int(match.group(1)), {})[match.group(2)] = value
    extra = sorted(set(members) - set(range(n_members)))
    missing = [i for i in range(n_members) if i not in members]
    if extra or missing:
        found = f"weights of members {sorted(members)}" if members else "no member weights"
        raise ArtifactError(
            f"{path}: the header declares {n_members} members but the file holds "
            f"{found}; the file is damaged: re-create it with `probe fit`"
        )
    return [members[i] for i in range(n_members)]


def check_fingerprint(probe_fp: dict, backbone_fp: dict, allow_mismatch=False, source="probe"):
    """Refuse a probe trained on another backbone or other layers (unless overridden)."""
    problems = []
    if probe_fp.get("adapter") != backbone_fp.get("adapter"):
        problems.append(f"adapter {probe_fp.get('adapter')!r} vs {backbone_fp.get('adapter')!r}")
    if probe_fp.get("weights_sha256") != backbone_fp.get("weights_sha256"):
        problems.append("the backbone's weights differ (another model file or another training)")
    if probe_fp.get("layers") != backbone_fp.get("layers") or probe_fp.get("widths") != backbone_fp.get("widths"):
        problems.append(
            f"feature layers {probe_fp.get('layers')} {probe_fp.get('widths')} vs "
            f"{backbone_fp.get('layers')} {backbone_fp.get('widths')}"
        )
    if probe_fp.get("parameters", {}) != backbone_fp.get("parameters", {}):
        problems.append(
            f"adapter options {probe_fp.get('parameters', {})} vs {backbone_fp.get('parameters', {})} "
            "(--adapter-option)"
        )
    if not problems:
        return
    message = (
        f"{source} was trained on another backbone: "
        + "; ".join(problems)
        + ". Use the backbone it was trained on, or retrain it with `probe fit`; "
        "to use it anyway pass --allow-backbone-mismatch (allow_mismatch=True)."
    )
    if not allow_mismatch:
        raise FingerprintMismatch(message)
    if probe_fp.get("widths") != backbone_fp.get("widths"):
        raise FingerprintMismatch(f"{source}: feature widths differ; cannot be overridden. {message}")
    import warnings

    warnings.warn(message, stacklevel=3)
