"""Issue 17, item 6: a damaged .probe file. A file crafted consistently wrong (edited, then
hashed again, so the checks behind the content hash are reached) with missing members, weights
or buffers, or a non-finite temperature or prior, is refused in one line naming `probe fit`;
extra tensors, or buffers absent from every member (older files), still load. The item number is
in each test's name."""

import numpy as np
import pytest
import torch
from safety_helpers import rewrite_probe

from probe_base.artifact import load_probe
from probe_base.errors import ArtifactError
from probe_base.store import load_store


# ---- 6: a damaged probe file ----------------------------------------------------------------
def drop(prefix, names=None):
    def edit(tensors):
        for key in [k for k in tensors if k.startswith(prefix) and (names is None or k[len(prefix) :] in names)]:
            del tensors[key]

    return edit


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            dict(edit_meta=lambda m: m.update(n_members=9)),
            "declares 9 members but the file holds weights of members \\[0, 1, 2, 3, 4\\]",
        ),
        (
            dict(edit_tensors=drop("member4.")),
            "declares 5 members but the file holds weights of members \\[0, 1, 2, 3\\]",
        ),
        (dict(edit_tensors=drop("member2.", {"head.0.weight"})), "member 2 lacks \\['head.0.weight'\\]"),
        (dict(edit_tensors=drop("member1.", {"extras_low"})), "member 1 holds other buffers than member 0"),
        (dict(edit_meta=lambda m: m.update(temperature=0.0)), "temperature is 0.0, not a positive finite number"),
        (dict(edit_meta=lambda m: m.update(temperature=float("nan"))), "temperature is nan"),
        (dict(edit_meta=lambda m: m.update(prior_log_odds=float("inf"))), "prior_log_odds is inf"),
    ],
)
def test_item6_damaged_probe_is_refused(fitted_probe, tmp_path, damage, message):
    assert load_probe(fitted_probe).info["n_members"] == 5
    bad = rewrite_probe(fitted_probe, tmp_path / "bad.probe", **damage)
    with pytest.raises(ArtifactError, match=f"bad.probe: .*{message}.*re-create it with `probe fit`"):
        load_probe(bad)


def test_item6_extra_tensors_and_buffers_absent_from_every_member_still_load(fitted_probe, heldout_store, tmp_path):
    data = load_store(heldout_store).subset(range(20))
    reference = load_probe(fitted_probe).classifier.predict_proba(data)

    def add_domain_model(tensors):
        tensors["domain.reference_features"] = torch.zeros(7, 3)

    extra = rewrite_probe(fitted_probe, tmp_path / "extra.probe", edit_tensors=add_domain_model)
    np.testing.assert_array_equal(load_probe(extra).classifier.predict_proba(data), reference)
    older = rewrite_probe(
        fitted_probe,
        tmp_path / "older.probe",
        edit_tensors=lambda t: [drop(f"member{i}.", {"extras_low", "extras_high"})(t) for i in range(5)],
    )
    assert load_probe(older).classifier.predict_proba(data).shape == reference.shape
