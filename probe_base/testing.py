"""The conformance suites every plugin runs: ``AdapterConformance`` for the adapter,
``CalculatorConformance`` for its drop-in ASE calculator with ``probe=``.

In a plugin's tests::

    from probe_base.testing import AdapterConformance

    class TestMyAdapter(AdapterConformance):
        @pytest.fixture(scope="class")
        def adapter(self):          # an Adapter built from >= 2 model files (an ensemble)
            ...
        @pytest.fixture(scope="class")
        def structures(self):       # a few ase.Atoms the backbone knows, >= 2 atoms each
            ...

    class TestMyCalculator(CalculatorConformance):
        @pytest.fixture()
        def make_calculator(self):  # (probe=None, **probe keywords) -> the drop-in calculator
            return lambda **kw: MyCalculator("my.model", device="cpu", **kw)
        # plus the `adapter` and `structures` fixtures above (the adapter's first model
        # must be the calculator's model)

Each test names the contract it checks; a failing one says what the adapter must fix.

``skip_outside_ci`` is for tests that need something a machine may lack (a browser, the
shared data set): skipped on such a machine, failed in CI, where a suite that skipped
everything would pass having tested nothing.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from probe_base.adapter import Adapter
from probe_base.errors import InputError


def skip_outside_ci(missing: str, ci_provides: str):
    """Skip the running test because ``missing`` (what is absent, and how to get it); in CI
    (env ``CI`` set, as .ci/run does) fail it instead, saying ``ci_provides`` (how CI gets it)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI runs this test, but {missing}; {ci_provides}", pytrace=False)
    pytest.skip(f"{missing}; CI runs this test")


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


class AdapterConformance:
    """Behaviour every ``Adapter`` subclass must show. Tolerances suit float32 backbones."""

    atol = 1e-4

    def test_is_registered_adapter(self, adapter):
        assert isinstance(adapter, Adapter)
        assert adapter.name, "set the class attribute `name` (the --adapter value)"

    def test_layers_are_declared_with_widths(self, adapter):
        layers = adapter.feature_layers()
        names = [layer.name for layer in layers]
        assert len(names) == len(set(names)), "layer names must be unique"
        assert all(int(layer.width) > 0 for layer in layers)
        assert set(adapter.default_layers()) <= set(names)

    def test_features_have_declared_shape(self, adapter, structures):
        out = adapter.run(structures, compute_forces=True)
        assert len(out.features) == len(structures)
        for atoms, feats in zip(structures, out.features):
            assert feats.shape == (len(atoms), adapter.n_features)
            assert feats.dtype == np.float32 and np.all(np.isfinite(feats))
        assert out.energies.shape == (len(structures),)
        for atoms, forces in zip(structures, out.forces):
            assert forces.shape == (len(atoms), 3)

    def test_hooks_are_removed_afterwards(self, adapter, structures):
        before = [_hook_count(m) for m in adapter.models]
        adapter.run(structures)
        assert [_hook_count(m) for m in adapter.models] == before

    def test_hooks_do_not_change_predictions(self, adapter, structures):
        plain_e, plain_f = adapter.predict(adapter.models[0], structures, True)
        out = adapter.run(structures, compute_forces=True)
        np.testing.assert_allclose(out.energies, _np(plain_e), rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.concatenate(out.forces), _np(plain_f), rtol=0, atol=1e-8)

    def test_features_come_from_the_same_single_pass(self, adapter, structures, monkeypatch):
        calls = []
        original = adapter.predict

        def counting(model, atoms_list, compute_forces):
            calls.append(model)
            return original(model, atoms_list, compute_forces)

        monkeypatch.setattr(adapter, "predict", counting)
        adapter.run(structures, members=False)
        assert len(calls) == 1, "run() must call the primary model exactly once"

    def test_ensemble_members(self, adapter, structures):
        assert len(adapter.models) >= 2, "give the `adapter` fixture at least two model files"
        out = adapter.run(structures)
        assert out.member_energies.shape == (len(structures), len(adapter.models))
        np.testing.assert_allclose(out.member_energies[:, 0], out.energies)
        assert np.any(np.abs(out.member_energies[:, 1] - out.energies) > 0), "ensemble members must be different models"
        for atoms, mf in zip(structures, out.member_forces):
            assert mf.shape == (len(adapter.models), len(atoms), 3)

    def test_features_follow_atom_order(self, adapter, structures):
        atoms = structures[0]
        order = np.random.default_rng(0).permutation(len(atoms))
        base = adapter.run([atoms], members=False).features[0]
        permuted = adapter.run([atoms[order]], members=False).features[0]
        np.testing.assert_allclose(permuted, base[order], atol=self.atol, rtol=1e-4)

    def test_reliability_does_not_depend_on_atom_order(self, adapter, structures):
        from probe_base.net.classifier import ProbeClassifier
        from probe_base.store import FeatureSet

        out = adapter.run(structures, members=False)
        X = FeatureSet.from_backbone_output(out, structures)
        X = X.subset(np.tile(np.arange(len(structures)), 4))
        y = np.arange(len(X)) % 2
        probe = ProbeClassifier(hidden=8, heads=2, max_epochs=2, cv_folds=2, calibration=None).fit(X, y)
        atoms = structures[0]
        order = np.random.default_rng(1).permutation(len(atoms))
        p = []
        for variant in (atoms, atoms[order]):
            run = adapter.run([variant], members=False)
            p.append(probe.predict_proba(FeatureSet.from_backbone_output(run, [variant]))[0, 1])
        assert abs(p[0] - p[1]) < 1e-4, "reliability changed when the atoms were reordered"

    def test_batching_does_not_change_features(self, adapter, structures):
        batched = adapter.run(structures, members=False).features
        for atoms, feats in zip(structures, batched):
            alone = adapter.run([atoms], members=False).features[0]
            np.testing.assert_allclose(alone, feats, atol=self.atol, rtol=1e-4)

    def test_fingerprint_identifies_backbone_and_layers(self, adapter):
        fp = adapter.fingerprint()
        assert fp["adapter"] == adapter.name
        assert len(fp["weights_sha256"]) == 64
        assert fp["layers"] == list(adapter.layers) and fp["widths"] == list(adapter.widths)
        assert fp == adapter.fingerprint(), "the fingerprint must be stable"
        other = type(adapter).from_models(adapter.models[1:2], layers=adapter.layers)
        assert other.fingerprint()["weights_sha256"] != fp["weights_sha256"]

    def test_rejects_unknown_elements(self, adapter, structures):
        supported = adapter.supported_elements()
        if supported is None:
            pytest.skip("this backbone accepts every element")
        atoms = structures[0].copy()
        unknown = next(z for z in range(1, 119) if z not in supported)
        atoms.numbers[0] = unknown
        with pytest.raises(InputError, match="structure 0"):
            adapter.run([atoms])

    def test_rejects_nan_positions(self, adapter, structures):
        atoms = structures[0].copy()
        atoms.positions[0, 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            adapter.run([atoms])


class CalculatorConformance:
    """What every plugin's drop-in calculator must do with ``probe=``, ``probe_policy=``,
    ``probe_threshold=``: the framework's own results unchanged, PROBE's results from the
    same pass (equal to scoring the features offline), the domain test on, policies, and
    extxyz-ready ``atoms.info`` / ``atoms.arrays``."""

    @pytest.fixture()
    def probe_path(self, adapter, structures, tmp_path_factory):
        """A small probe with the domain test, fitted on rattled copies of ``structures``."""
        from probe_base.artifact import save_probe
        from probe_base.domain.model import DomainModel
        from probe_base.labels import LabelSpec
        from probe_base.net.classifier import ProbeClassifier
        from probe_base.store import FeatureSet

        rng = np.random.default_rng(0)
        frames = []
        for k in range(60):
            atoms = structures[k % len(structures)].copy()
            atoms.positions += rng.normal(scale=0.01 + 0.0005 * k, size=atoms.positions.shape)
            frames.append(atoms)
        primary = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)
        X = FeatureSet.from_backbone_output(primary.run(frames, members=False), frames)
        y = (np.arange(len(frames)) < 30).astype(int)
        clf = ProbeClassifier(hidden=8, heads=2, max_epochs=3, patience=3, seed=0).fit(X, y)
        path = tmp_path_factory.mktemp("calculator_conformance") / "probe.probe"
        save_probe(
            path,
            clf,
            LabelSpec("energy", threshold=0.1),
            primary.fingerprint(),
            {"decision_threshold": 0.5},
            DomainModel(alpha=0.05).fit(X),
        )
        return path

    def test_without_probe_is_the_frameworks_calculator(self, make_calculator):
        calc = make_calculator()
        assert "reliability" not in calc.implemented_properties

    def test_one_class_with_and_without_probe(self, make_calculator, structures, probe_path):
        """The plugin's calculator is one class (a ``DropInCalculator``): ``isinstance``
        holds for the framework's own calculator it makes without a probe and for the
        ``ProbedCalculator`` it is with one, whose policy and threshold are ASE
        ``parameters`` that ``set`` changes."""
        from probe_base.errors import UnreliablePrediction
        from probe_base.integrations.calculator import DropInCalculator, ProbedCalculator

        probed = make_calculator(probe=probe_path, probe_policy="ignore", probe_threshold=0.25)
        drop_in = type(probed)
        assert issubclass(drop_in, DropInCalculator), "the plugin's calculator must derive from DropInCalculator"
        plain = make_calculator()
        assert isinstance(plain, drop_in) and isinstance(plain, drop_in.framework_types())
        assert not isinstance(plain, ProbedCalculator) and type(plain) is not drop_in
        assert probed.parameters["policy"] == "ignore" and probed.parameters["threshold"] == 0.25
        atoms = structures[0].copy()
        atoms.calc = probed
        atoms.get_potential_energy()
        probed.set(policy="raise", threshold=1.01)  # no P reaches 1.01: the next pass raises
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()

    def test_probe_results_come_from_the_same_pass(self, make_calculator, adapter, structures, probe_path):
        from probe_base.artifact import load_probe
        from probe_base.scoring import score
        from probe_base.store import FeatureSet

        atoms = structures[0].copy()
        atoms.calc = make_calculator()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        probed = make_calculator(probe=probe_path, probe_policy="ignore")
        atoms.calc = probed
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-6)
        results = probed.results
        for key in ("reliability", "in_domain", "novelty", "atom_importance", "atom_novelty"):
            assert key in results, f"results must hold {key!r}"
        assert results["atom_importance"].shape == (len(atoms),)
        primary = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)
        X = FeatureSet.from_backbone_output(primary.run([atoms], members=False), [atoms])
        offline = score(load_probe(probe_path), X)
        assert results["reliability"] == pytest.approx(float(offline.p_reliable[0]), abs=1e-4)
        assert results["novelty"] == pytest.approx(float(offline.novelty[0]), rel=1e-3, abs=1e-4)
        assert atoms.info["probe_reliability"] == results["reliability"]
        assert atoms.arrays["probe_importance"].shape == (len(atoms),)

    def test_policies_and_threshold(self, make_calculator, structures, probe_path):
        import warnings

        from probe_base.errors import UnreliablePrediction

        atoms = structures[0].copy()
        atoms.calc = make_calculator(probe=probe_path, probe_policy="raise", probe_threshold=1.01)
        with pytest.raises(UnreliablePrediction):
            atoms.get_potential_energy()
        atoms.calc = make_calculator(probe=probe_path, probe_policy="warn", probe_threshold=1.01)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            atoms.get_potential_energy()
        assert any("unreliable" in str(w.message) for w in caught)
        atoms.calc = make_calculator(probe=probe_path, probe_policy="ignore", probe_threshold=1.01)
        atoms.get_potential_energy()  # no exception, no policy
        with pytest.raises(ValueError, match="policy"):
            make_calculator(probe=probe_path, probe_policy="explode")

    def test_an_atom_pulled_out_of_range_is_outside_the_domain(self, make_calculator, structures, probe_path):
        atoms = structures[0].copy()
        centre = atoms.positions.mean(0)
        far = int(np.argmax(np.linalg.norm(atoms.positions - centre, axis=1)))
        direction = atoms.positions[far] - centre
        atoms.positions[far] += 8.0 * direction / np.linalg.norm(direction)  # beyond any cutoff
        calc = make_calculator(probe=probe_path, probe_policy="ignore")
        atoms.calc = calc
        atoms.get_potential_energy()
        assert not calc.results["in_domain"] and calc.results["reliability"] == 0.0
        assert atoms.info["probe_in_domain"] is False


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
