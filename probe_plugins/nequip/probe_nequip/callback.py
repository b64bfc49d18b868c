"""PROBE from a ``nequip-train`` config: a Lightning callback for the test run.

    trainer:
      callbacks:
        - _target_: probe_nequip.ProbeCallback
          out_dir: ${hydra:runtime.output_dir}/probe

During ``run: [..., test]`` forward hooks on the model's convnet layer(s) capture the
per-atom features in the same passes that give the test metrics (no extra pass). At the
end of each test set, a probe is fitted on one part (``eval_fraction`` held out, default
half) and scored there against latent distance and random: ``probe/test{i}_auroc``,
``_aurc``, ``_ece``, ... are logged with nequip's test metrics (and printed in Lightning's
table); ``out_dir`` receives ``test{i}_metrics.json`` (every metric with a 95 % bootstrap
interval) and ``test{i}.probe``, a probe for this backbone (fitted on the fitting part):
use it with the packaged model, e.g. ``NequIPCalculator.from_saved_model(
"model.nequip.zip", probe="test0.probe")``. Labels, the domain test and the decision rule
are ``probe fit``'s (``probe_base.Probe``): ``target`` error above ``threshold`` (default
the absolute tolerance of ``probe_base.labels.DEFAULT_TOLERANCES``) or above a ``quantile``
of the fitting part; the decision flags ``false_alarm`` of reliable structures, set on
``calibration_fraction`` of the fitting part, and the report gives the rate measured on
the held-out part. A test set too small for that prints why and fits no probe.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class ProbeCallback(Callback):
    """PROBE on ``nequip-train``'s test set(s). ``layers``: convnet layers to read
    (default: the last; ``"all"``: every one). ``classifier``: keyword arguments of
    ``probe_base.ProbeClassifier`` (e.g. ``{preset: paper}`` for the published recipe).
    ``chemical_symbols``: the element of each model type, in the model's ``type_names``
    order (default: the type names are chemical symbols)."""

    def __init__(
        self,
        out_dir: str | None = None,
        target: str = "energy",
        threshold: float | None = None,
        quantile: float | None = None,
        false_alarm: float = 0.05,
        calibration_fraction: float = 0.25,
        alpha: float = 0.02,
        eval_fraction: float = 0.5,
        seed: int = 0,
        layers=None,
        classifier: dict | None = None,
        chemical_symbols: list[str] | None = None,
        n_bootstrap: int = 200,
    ):
        from probe_base.labels import LabelSpec

        self.label = LabelSpec(target, threshold=threshold, quantile=None if threshold is not None else quantile)
        self.false_alarm, self.calibration_fraction, self.alpha = false_alarm, calibration_fraction, alpha
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {eval_fraction}")
        self.out_dir = Path(out_dir) if out_dir else None
        self.eval_fraction, self.seed, self.layers = eval_fraction, seed, layers
        self.classifier = dict(classifier or {})
        self.chemical_symbols = chemical_symbols
        self.n_bootstrap = n_bootstrap
        self.results: dict[int, dict] = {}

    # ---- capture during the test passes ------------------------------------------
    def _graph_model(self, pl_module):
        from nequip.train.lightning import _SOLE_MODEL_KEY

        return pl_module.model[_SOLE_MODEL_KEY]

    def on_test_epoch_start(self, trainer, pl_module):
        from .plugin import NequIPAdapter, convnets

        model = self._graph_model(pl_module)
        layers = list(convnets(model)) if self.layers == "all" else self.layers
        self.adapter = NequIPAdapter.from_models([model], layers=layers)
        types = model.metadata["type_names"].split(" ")
        symbols = self.chemical_symbols or types
        from ase.data import atomic_numbers

        self.type_to_z = torch.tensor([atomic_numbers[s] for s in symbols])
        self.collected: dict[int, dict[str, list]] = {}
        self._hooks = None

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._hooks = ExitStack()
        self._captured = self._hooks.enter_context(self.adapter.capture(self._graph_model(pl_module)))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        from nequip.data import AtomicDataDict as K

        self._hooks.close()
        output = outputs[f"test_{dataloader_idx}_output"]
        n_atoms = batch[K.NUM_NODES_KEY].reshape(-1).cpu().numpy()
        rows = self.collected.setdefault(
            dataloader_idx, {k: [] for k in ("features", "z", "n_atoms", "e_pred", "e_ref", "f_err")}
        )
        rows["features"].append(self.adapter.features_from_capture(self._captured, int(n_atoms.sum())))
        rows["z"].append(self.type_to_z[batch[K.ATOM_TYPE_KEY].reshape(-1).cpu()].numpy())
        rows["n_atoms"].append(n_atoms)
        rows["e_pred"].append(output[K.TOTAL_ENERGY_KEY].detach().reshape(-1).double().cpu().numpy())
        rows["e_ref"].append(batch[K.TOTAL_ENERGY_KEY].detach().reshape(-1).double().cpu().numpy())
        if K.FORCE_KEY in batch and K.FORCE_KEY in output:
            diff = (output[K.FORCE_KEY].detach() - batch[K.FORCE_KEY].detach()).double().cpu()
            rows["f_err"].append(diff.numpy())

    # ---- fit, score, report ----------------------------------------------------------
    def on_test_epoch_end(self, trainer, pl_module):
        from probe_base.errors import ProbeError

        from .plugin import _default_dtype

        for index, rows in sorted(self.collected.items()):
            # the probe trains in float32 with autograd, inside Lightning's no-grad test loop
            # and nequip's float64 default dtype
            try:
                with torch.enable_grad(), _default_dtype(torch.float32):
                    result = self.evaluate(index, self.dataset(rows))
            except ProbeError as error:  # too few or too uniform test structures: training stands
                print(f"PROBE on test set {index}: no probe fitted: {error}", flush=True)
                continue
            self.results[index] = result
            pl_module.log_dict({f"probe/test{index}_{k}": v for k, v in result["logged"].items()})
        self.collected = {}

    def dataset(self, rows):
        from probe_base.store import StoredDataset

        n_atoms = np.concatenate(rows["n_atoms"]).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_atoms)])
        force_rmse = force_max = atom_error = None
        if rows["f_err"]:
            diff = np.concatenate(rows["f_err"])
            atom_error = np.linalg.norm(diff, axis=1)
            force_rmse = np.array([np.sqrt(np.mean(diff[a:b] ** 2)) for a, b in zip(offsets[:-1], offsets[1:])])
            force_max = np.array([atom_error[a:b].max() for a, b in zip(offsets[:-1], offsets[1:])])
        return StoredDataset(
            features=np.concatenate(rows["features"]),
            atomic_numbers=np.concatenate(rows["z"]),
            offsets=offsets,
            energy_pred=np.concatenate(rows["e_pred"]),
            energy_ref=np.concatenate(rows["e_ref"]),
            force_rmse=force_rmse,
            force_max_error=force_max,
            atom_force_error=atom_error,
            source_index=np.arange(len(n_atoms)),
            attrs={"fingerprint": self.adapter.fingerprint()},
        )

    def evaluate(self, index, data) -> dict:
        from probe_base.domain.conformal import min_calibration_size
        from probe_base.domain.model import DomainModel
        from probe_base.net.classifier import ProbeClassifier
        from probe_base.probe import Probe
        from probe_base.report.baselines import all_baselines
        from probe_base.report.bootstrap import evaluate_signal, format_table
        from probe_base.workflow.fit import split_holdout

        fit_idx, eval_idx = split_holdout(len(data), self.eval_fraction, self.seed)
        fit, held = data.subset(fit_idx), data.subset(eval_idx)
        params = dict(self.classifier)
        preset = params.pop("preset", None)
        classifier = (
            ProbeClassifier.from_preset(preset, seed=self.seed, **params)
            if preset
            else ProbeClassifier(seed=self.seed, **params)
        )
        domain, domain_note = None, None
        if len(fit) >= min_calibration_size(self.alpha):
            # the fitting part is the domain's reference (cross-fitted threshold)
            domain = DomainModel(alpha=self.alpha, scalars=None, seed=self.seed)
        else:
            domain_note = (
                f"no domain test in the probe file: alpha = {self.alpha:g} needs at least "
                f"{min_calibration_size(self.alpha)} fitting structures, the test set gives {len(fit)}"
            )
            print(domain_note, flush=True)
        probe = Probe(
            self.label, classifier, domain, "default", self.false_alarm, self.calibration_fraction, self.seed
        ).fit(fit, where=f"the fitting part of test set {index}")
        label = probe.label_
        errs = label.errors(held)
        unreliable = (errs > label.threshold).astype(int)
        scored = probe.scores(held)
        p_reliable = scored.p_reliable
        flagged = probe.decision_.flags(p_reliable, scored.in_domain)
        scores = {"PROBE": 1 - p_reliable, **all_baselines(fit, held, self.seed)}
        metrics = {
            name: evaluate_signal(
                score,
                unreliable,
                errs,
                p_reliable if name == "PROBE" else None,
                n_bootstrap=self.n_bootstrap,
                seed=self.seed,
            )
            for name, score in scores.items()
        }
        reliable = unreliable == 0
        decision = {
            **probe.decision_.to_dict(),
            "held_out_false_alarm": float(flagged[reliable].mean()) if reliable.any() else None,
            "held_out_detected": float(flagged[~reliable].mean()) if (~reliable).any() else None,
            "n_reliable": int(reliable.sum()),
        }
        logged = {k: v[0] for k, v in metrics["PROBE"].items() if np.isfinite(v[0])}
        for name, key in (("latent distance", "latent"), ("random", "random")):
            if name in metrics and np.isfinite(metrics[name]["auroc"][0]):
                logged[f"{key}_auroc"] = metrics[name]["auroc"][0]
        logged["unreliable_fraction"] = float(unreliable.mean())
        for key in ("held_out_false_alarm", "held_out_detected"):
            if decision[key] is not None:
                logged[key] = decision[key]
        result = {
            "test_set": index,
            "label": label.to_dict(),
            "label_offset": probe.label_offset_,
            "n_fit": len(fit),
            "n_eval": len(held),
            "unreliable_fraction": float(unreliable.mean()),
            "metrics": metrics,
            "decision": decision,
            "fingerprint": self.adapter.fingerprint(),
            "logged": logged,
            "eval_indices": eval_idx.tolist(),
            "eval_p_reliable": p_reliable.tolist(),
            "eval_p_network": scored.p_network.tolist(),
            "eval_flagged": flagged.tolist(),
            "eval_errors": errs.tolist(),
        }
        if domain_note:
            result["domain"] = domain_note
        print(
            f"PROBE on test set {index} ({len(fit)} fitting / {len(held)} held-out structures, "
            f"{label.describe()}):\n" + format_table(metrics) + f"\ndecision: {probe.decision_.describe()}; "
            f"held out: {decision['held_out_false_alarm']} of reliable flagged, "
            f"{decision['held_out_detected']} of unreliable",
            flush=True,
        )
        if self.out_dir is not None:
            from probe_base.io.paths import atomic_write

            self.out_dir.mkdir(parents=True, exist_ok=True)
            result["probe_file"] = str(self.out_dir / f"test{index}.probe")
            probe.save(
                result["probe_file"],
                self.adapter.fingerprint(),
                {
                    "source": "probe_nequip.ProbeCallback (nequip-train test run)",
                    "fit_indices": fit_idx.tolist(),
                    "eval_indices": eval_idx.tolist(),
                    "calibration_indices": fit_idx[probe.calibration_positions_].tolist(),
                    "n_fit": len(fit),
                },
            )
            payload = {k: v for k, v in result.items() if k != "logged"}
            text = json.dumps(payload, indent=2)
            atomic_write(self.out_dir / f"test{index}_metrics.json", lambda tmp: Path(tmp).write_text(text))
        return result
