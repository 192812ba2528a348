"""Engine defects of issue 18: a failed import leaves no empty domain behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atlasstore.runs.ingest import import_npy
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli
from helpers.predecessor_fixture import Written, write_predecessor_folder

SMALL = {"domains": ("plasma_physics", "fluid_dynamics"), "sequences": 2, "steps": 4,
         "shape": (64, 64), "inventory": False}


def _poison(w: Written, domain: str) -> dict[Path, bytes]:
    """A non-finite value in every sequence of ``domain``: each of its units fails. Returns
    the files' original bytes."""
    originals = {}
    for (d, _, t), p in w.files.items():
        if d == domain and t == 1:
            originals[p] = p.read_bytes()
            a = np.load(p)
            a[3, 3] = np.nan
            np.save(p, a)
    return originals


# --------------------------------------------------------------------------- empty domains


def test_an_import_whose_every_unit_failed_leaves_no_domain(tmp_path: Path) -> None:
    w = write_predecessor_folder(tmp_path / "src", **SMALL)
    _poison(w, "fluid_dynamics")
    store = tmp_path / "a.zarr"
    rc, out, _ = run_cli("import", "npy", str(tmp_path / "src"), "--store", str(store),
                         "--scheduler", "serial", "--no-catalog")
    assert rc == 1 and "2 sequences written, 0 already complete, 2 failed" in out
    st = AtlasStore.open(store)
    assert st.domains() == ["plasma_physics"]
    assert not (store / "fluid_dynamics").exists()
    rc, out, _ = run_cli("ls", "--store", str(store))
    assert rc == 0 and "fluid_dynamics" not in out


def test_a_domain_that_already_had_sequences_is_kept(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "a", **SMALL)
    store = tmp_path / "s.zarr"
    assert import_npy(store, tmp_path / "a", scheduler="serial").written == 4
    # the same ids from other data: every unit is refused
    write_predecessor_folder(tmp_path / "b", **{**SMALL, "seed": 1})
    again = import_npy(store, tmp_path / "b", scheduler="serial")
    assert again.written == 0 and len(again.failures) == 4
    st = AtlasStore.open(store)
    assert st.domains() == ["fluid_dynamics", "plasma_physics"]
    assert st.sequences("fluid_dynamics") == ["seq_000", "seq_001"]
