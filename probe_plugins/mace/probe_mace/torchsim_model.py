"""``ProbedMaceModel``: TorchSim's ``MaceModel`` (``torch-sim-atomistic`` 0.3.0) that also
scores every system of the batch with a probe, from features its forward hooks capture in
TorchSim's own forward pass, with the ``ProbeRecord`` of a scored call. The class derives from
TorchSim's ``MaceModel``, so it is defined when first asked for (``torch_sim`` stays optional).
``probe_mace.torchsim.run_torchsim`` runs MD with it.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from probe_base.errors import InputError, ProbeError

INSTALL = "pip install 'probe-mace[torchsim]' (torch-sim-atomistic==0.3.0)"


def load_torch_sim():
    """The ``torch_sim`` module, or one line saying how to install it."""
    try:
        import torch_sim
        from torch_sim.models.mace import MaceModel  # noqa: F401 - the wrapper's base class
    except ImportError as exc:
        raise ProbeError(f"TorchSim is not installed here ({exc}); install it with {INSTALL}") from None
    return torch_sim


@dataclass
class ProbeRecord:
    """One scored model call: per system of the batch."""

    step: int
    reliability: np.ndarray  # (n_systems,) P(reliable), 0 outside the domain
    in_domain: np.ndarray  # (n_systems,) bool
    novelty: np.ndarray  # (n_systems,) largest atom novelty / threshold; NaN without a domain
    unreliable: np.ndarray  # (n_systems,) the decision rule's flag


@functools.cache
def probed_model_class():
    load_torch_sim()
    from torch_sim.models.mace import MaceModel

    from probe_base.artifact import ProbeArtifact, load_probe
    from probe_base.scoring import decision_rule, score
    from probe_base.store import FeatureSet

    from .plugin import MACEAdapter

    class ProbedMaceModel(MaceModel):
        """TorchSim's ``MaceModel`` that also scores every system of the batch with a probe.

        ``model``: a MACE ``.model`` file or a loaded MACE module (the backbone the probe was
        fitted on: checked by fingerprint). ``probe``: a ``.probe`` path or a loaded probe.
        ``threshold``: a P(reliable) cut instead of the probe's decision rule.
        ``use_domain=False``: the network alone. ``dtype``: default the model's own.
        ``keep_history``: append a ``ProbeRecord`` per scored call to ``history``.
        After each call: ``last_scores`` (``probe_base.scoring.Scores`` of the batch's systems),
        ``last_unreliable`` and ``last_features`` (the ``FeatureSet`` the probe read); the
        forward's output also holds ``probe_reliability``, ``probe_in_domain`` and
        ``probe_unreliable`` (one value per system).
        """

        def __init__(
            self,
            model,
            probe,
            *,
            threshold=None,
            use_domain=True,
            allow_mismatch=False,
            device=None,
            dtype=None,
            compute_stress=False,
            keep_history=True,
            **mace_options,
        ):
            artifact = probe if isinstance(probe, ProbeArtifact) else load_probe(probe)
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            layers = artifact.fingerprint.get("layers")
            if isinstance(model, (str, Path)):
                adapter = MACEAdapter([model], layers=layers, device=str(device))
            elif isinstance(model, torch.nn.Module):
                adapter = MACEAdapter.from_models([model.to(device)], layers=layers, device=str(device))
            else:
                raise InputError(
                    f"model is a {type(model).__name__}; pass a MACE .model file or a loaded MACE torch module"
                )
            source = "the probe" if isinstance(probe, ProbeArtifact) else str(probe)
            artifact.check_backbone(adapter.fingerprint(), allow_mismatch, source=source)
            module = adapter.models[0]
            if mace_options.get("enable_cueq"):
                raise InputError(
                    "enable_cueq=True converts the MACE module, whose product blocks the probe reads; "
                    "run ProbedMaceModel without it"
                )
            super().__init__(
                module,
                device=device,
                dtype=dtype or next(module.parameters()).dtype,
                compute_stress=compute_stress,
                **mace_options,
            )
            adapter.models[0] = self.model  # the module TorchSim runs (moved/cast in place)
            self.adapter = adapter
            self.artifact = artifact
            self.use_domain = use_domain
            self.rule = decision_rule(artifact, threshold)
            self.keep_history = keep_history
            self.history: list[ProbeRecord] = []
            self.scoring = True  # run_torchsim turns it off between scored steps
            self.n_calls = 0
            self.last_scores = None
            self.last_unreliable = None
            self.last_features = None
            self._checked_numbers = None
            # hooks stay on the module while this model lives (not added and removed each step)
            self._hooks = adapter.feature_hooks(self.model)
            weakref.finalize(self, self._hooks.remove)

        @property
        def threshold(self) -> float:
            return self.rule.cut

        def remove_hooks(self) -> None:
            """Take the probe's hooks off the MACE module (the model then only scores no more)."""
            self._hooks.remove()

        def _check_elements(self, numbers: torch.Tensor) -> None:
            if self._checked_numbers is not None and torch.equal(numbers, self._checked_numbers):
                return
            supported = self.adapter.known_elements()
            unknown = sorted(set(numbers.cpu().tolist()) - set(supported or ()))
            if supported is not None and unknown:
                from ase.data import chemical_symbols

                names = ", ".join(chemical_symbols[z] for z in unknown)
                known = ", ".join(chemical_symbols[z] for z in sorted(supported))
                raise InputError(
                    f"TorchSim state: element(s) {names} not known to the MACE backbone (trained on {known}); "
                    "drop these systems or use a backbone trained on them"
                )
            self._checked_numbers = numbers.clone()

        def forward(self, state):
            numbers = state.get("atomic_numbers") if isinstance(state, dict) else state.atomic_numbers
            if numbers is not None:
                self._check_elements(numbers)
            captured = self._hooks.captured
            captured.clear()  # a pass that skips a layer must fail, not reuse the last step's features
            out = super().forward(state)
            call = self.n_calls
            self.n_calls += 1
            if not self.scoring:
                captured.clear()
                return out
            features = self.adapter.features_from_capture(captured, int(self.total_atoms))
            captured.clear()
            # MaceModel's ptr: systems are contiguous in a SimState (it checks)
            X = FeatureSet(
                features,
                self.atomic_numbers.detach().cpu().numpy().astype(np.int64),
                self.ptr.detach().cpu().numpy().astype(np.int64),
                out["energy"].detach().to(torch.float64).cpu().numpy().reshape(-1),
            )
            scores = score(self.artifact, X, self.use_domain)
            flags = self.rule.flags(scores.p_reliable, scores.in_domain)
            self.last_scores, self.last_unreliable, self.last_features = scores, flags, X
            if self.keep_history:
                self.history.append(record_scores(call, scores, flags))
            out["probe_reliability"] = torch.as_tensor(scores.p_reliable, device=self.device)
            out["probe_in_domain"] = torch.as_tensor(scores.in_domain, device=self.device)
            out["probe_unreliable"] = torch.as_tensor(flags, device=self.device)
            return out

    ProbedMaceModel.__module__, ProbedMaceModel.__qualname__ = __name__, "ProbedMaceModel"
    return ProbedMaceModel


def __getattr__(name):
    # the class derives from TorchSim's MaceModel: defined when first asked for
    if name == "ProbedMaceModel":
        return probed_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def record_scores(step, scores, flags) -> ProbeRecord:
    n = len(scores.p_reliable)
    novelty = scores.novelty if scores.novelty is not None else np.full(n, np.nan)
    return ProbeRecord(
        int(step),
        np.asarray(scores.p_reliable, dtype=np.float64).copy(),
        np.asarray(scores.in_domain, dtype=bool).copy(),
        np.asarray(novelty, dtype=np.float64).copy(),
        np.asarray(flags, dtype=bool).copy(),
    )


# ProbedMaceModel: defined on first access (the module __getattr__ above)
__all__ = ["ProbeRecord", "ProbedMaceModel", "load_torch_sim"]  # noqa: F822
