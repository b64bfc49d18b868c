"""An ensemble of AIMNet2 models that reports member disagreement, AIMNet2 style.

``AIMNet2Ensemble`` has the call interface of ``aimnet.calculators.AIMNet2Calculator``
(``calc(data, forces=True)``; ``AIMNet2ASE(AIMNet2Ensemble([...]))`` works): every member
runs through its own ``AIMNet2Calculator`` (external Coulomb included), and the output
holds the member mean of ``energy``, ``forces``, ``charges`` (and ``stress``), their
standard deviation over members as ``energy_std``, ``forces_std``, ``charges_std`` (the
keys ``AIMNet2Calculator.keep_only`` already lets through; torch's default n - 1
normalisation, as AIMNet2's former ``EnsembledModel``), and ``energy_members`` (each
member's energy, members on the last axis, the first model first).
"""

from __future__ import annotations

from pathlib import Path

import torch


class AIMNet2Ensemble:
    """``models``: model files / registry names, ``nn.Module`` s or ``AIMNet2Calculator`` s;
    other keywords go to each ``AIMNet2Calculator``."""

    def __init__(self, models, device: str | None = None, **calculator_kwargs):
        from aimnet.calculators import AIMNet2Calculator

        if isinstance(models, (str, Path, torch.nn.Module, AIMNet2Calculator)):
            models = [models]
        self.calculators = [
            m
            if isinstance(m, AIMNet2Calculator)
            else AIMNet2Calculator(str(m) if isinstance(m, Path) else m, device=device, **calculator_kwargs)
            for m in models
        ]
        if not self.calculators:
            raise ValueError("AIMNet2Ensemble needs at least one model")
        self.last_results: dict[str, torch.Tensor] | None = None

    # the attributes AIMNet2ASE and users read from a calculator: the first member's
    @property
    def model(self):
        return self.calculators[0].model

    @property
    def models(self):
        return [calc.model for calc in self.calculators]

    def __getattr__(self, name):
        if name == "calculators":
            raise AttributeError(name)
        return getattr(self.calculators[0], name)

    def __len__(self):
        return len(self.calculators)

    def __call__(self, data, forces=False, stress=False, hessian=False, validate_species=True):
        return self.eval(data, forces=forces, stress=stress, hessian=hessian, validate_species=validate_species)

    def eval(self, data, forces=False, stress=False, hessian=False, validate_species=True):
        if hessian:
            raise NotImplementedError("AIMNet2Ensemble: Hessians are per member; call a member")
        outputs = [
            calc(dict(data), forces=forces, stress=stress, validate_species=validate_species)
            for calc in self.calculators
        ]
        result: dict[str, torch.Tensor] = {}
        for key, value in outputs[0].items():
            if not isinstance(value, torch.Tensor):
                continue
            stacked = torch.stack([out[key].detach() for out in outputs], dim=-1)
            result[key] = stacked.mean(dim=-1)
            result[f"{key}_std"] = stacked.std(dim=-1) if len(outputs) > 1 else torch.zeros_like(result[key])
            if key == "energy":
                result["energy_members"] = stacked
        self.last_results = dict(result)  # AIMNet2ASE converts the returned dict in place
        return result

    def set_lrcoulomb_method(self, *args, **kwargs):
        for calc in self.calculators:
            calc.set_lrcoulomb_method(*args, **kwargs)
