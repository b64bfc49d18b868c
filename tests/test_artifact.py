import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from probe_base.artifact import check_fingerprint, load_probe, save_probe
from probe_base.errors import ArtifactError, FingerprintMismatch
from probe_base.store import load_store


def test_round_trip_gives_identical_predictions(fitted_probe, heldout_store, tmp_path):
    artifact = load_probe(fitted_probe)
    data = load_store(heldout_store).subset(range(30))
    again = tmp_path / "again.probe"
    save_probe(again, artifact.classifier, artifact.label, artifact.fingerprint, artifact.info["info"])
    reloaded = load_probe(again)
    np.testing.assert_array_equal(artifact.classifier.predict_proba(data), reloaded.classifier.predict_proba(data))
    assert reloaded.label == artifact.label and reloaded.fingerprint == artifact.fingerprint
    assert reloaded.info["versions"]["mlip_probe"]


def test_failed_write_leaves_old_file_and_no_temporary(fitted_probe, tmp_path):
    artifact = load_probe(fitted_probe)
    target = tmp_path / "keep.probe"
    target.write_bytes(fitted_probe.read_bytes())
    artifact.classifier.members_[0]["bad"] = "not a tensor"
    with pytest.raises((AttributeError, TypeError, ValueError)):  # safetensors refuses a non-tensor
        save_probe(target, artifact.classifier, artifact.label, artifact.fingerprint)
    assert target.read_bytes() == fitted_probe.read_bytes()
    assert os.listdir(tmp_path) == ["keep.probe"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_corrupted_files_give_clear_errors(fitted_probe, tmp_path, damage):
    blob = bytearray(fitted_probe.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = bytearray(b"\x00" * 64)
    else:
        blob[10:30] = b"\xff" * 20  # inside the JSON header
    bad = tmp_path / "bad.probe"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="bad.probe"):
        load_probe(bad)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs_even_when_mace_disabled_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.probe"
    import torch

    torch.save({"weights": _Exploit(marker)}, evil)  # a torch pickle that runs a command
    code = (
        f"import probe_base.artifact as a\n"
        f"try:\n    a.load_probe({str(evil)!r})\nexcept a.ArtifactError as e:\n    print('refused:', e)\n"
    )
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "refused:" in out.stdout, out.stderr
    assert not marker.exists(), "the pickle payload was executed"
    # the same payload through plain pickle really would run: the test is meaningful
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


def test_fingerprint_mismatch_refused_unless_overridden(fitted_probe):
    fp = load_probe(fitted_probe).fingerprint
    other = {**fp, "weights_sha256": "0" * 64}
    with pytest.raises(FingerprintMismatch, match="weights differ.*allow-backbone-mismatch"):
        check_fingerprint(fp, other)
    with pytest.warns(UserWarning, match="another backbone"):
        check_fingerprint(fp, other, allow_mismatch=True)
    with pytest.raises(FingerprintMismatch, match="widths differ"):
        check_fingerprint(fp, {**fp, "layers": ["x"], "widths": [999]}, allow_mismatch=True)
    check_fingerprint(fp, dict(fp))  # same backbone: fine
