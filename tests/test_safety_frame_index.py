"""Issue 17, items 5 and 8: frames chosen with --index. Errors and a store's source_index give
the frame numbers of the file, not of the selection, and select reports the file's frame; an
--index that selects no frames is refused before anything is written. The item number is in each
test's name."""

import ase.io
import numpy as np
import pytest
from safety_helpers import labelled_frames, model_args, run_cli, write_frames

from probe_base.errors import InputError
from probe_base.store import extract, load_store


# ---- 5: frame numbers with --index ----------------------------------------------------------
def test_item5_errors_and_source_index_use_the_file_frame_numbers(toy_adapter, toy_files, tmp_path):
    frames = labelled_frames(toy_files, 0, 12)
    frames[3] = frames[3].copy()
    frames[3].calc = None
    source = write_frames(tmp_path / "a.xyz", frames)
    with pytest.raises(InputError, match="a.xyz, structure 3: no reference energy"):
        extract(toy_adapter, source, tmp_path / "a.h5", index="2:", progress=False)
    frames[3] = labelled_frames(toy_files, 3, 4)[0]
    write_frames(source, frames)
    data = load_store(extract(toy_adapter, source, tmp_path / "b.h5", index="1::3", progress=False))
    np.testing.assert_array_equal(data.source_index, [1, 4, 7, 10])
    np.testing.assert_allclose(data.energy_ref, [frames[i].get_potential_energy() for i in (1, 4, 7, 10)])
    tail = load_store(extract(toy_adapter, source, tmp_path / "c.h5", index="-2:", progress=False))
    np.testing.assert_array_equal(tail.source_index, [10, 11])


def test_item5_select_reports_the_file_frame(fitted_probe, toy_files, tmp_path, capsys):
    out = tmp_path / "picked.xyz"
    code, _ = run_cli(
        capsys,
        "select",
        *model_args(toy_files, 1),
        "--probe",
        fitted_probe,
        "--input",
        toy_files["train"],
        "--index",
        "100:",
        "--n",
        "3",
        "--output",
        out,
    )
    assert code == 0
    pool = ase.io.read(toy_files["train"], ":")
    for atoms in ase.io.read(out, ":"):
        frame = atoms.info["probe_pool_index"]
        assert frame >= 100
        np.testing.assert_allclose(atoms.positions, pool[frame].positions)


# ---- 8: silently accepted -----------------------------------------------------------------
@pytest.mark.parametrize(
    "index,expected",
    [("100", "has 8 frame(s) (0 to 7), no frame 100"), ("5:2", "--index 5:2 selects no frames"), ("-9", "no frame -9")],
)
def test_item8_an_index_that_selects_nothing_is_refused(index, expected, toy_adapter, toy_files, tmp_path):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 8))
    with pytest.raises(InputError, match=expected.replace("(", "\\(").replace(")", "\\)")):
        extract(toy_adapter, source, tmp_path / "a.h5", index=index, progress=False)
    assert not list(tmp_path.glob("a.h5*"))
