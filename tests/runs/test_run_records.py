"""Engine defects of issue 18: a failed import leaves no empty domain behind; a run record keeps
every attempt's counts and outcome (and records from before attempts had entries still load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atlasstore.io.schemas import validate
from atlasstore.runs.ingest import import_npy
from atlasstore.store import AtlasStore, RunLog
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


# --------------------------------------------------------------------------- attempts


def test_a_resumed_run_keeps_every_attempt_and_the_totals(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL)
    store = tmp_path / "a.zarr"
    first = import_npy(store, tmp_path / "src", scheduler="serial")
    again = import_npy(store, tmp_path / "src", scheduler="serial")
    assert (first.written, again.written, again.skipped) == (4, 0, 4)
    (rec,) = RunLog(AtlasStore.open(store)).list()
    validate(rec, "run")
    one, two = rec["attempts"]
    assert one["counts"] == {"tasks": 4, "written": 4, "skipped": 0, "failed": 0, "maps": 16}
    assert two["counts"] == {"tasks": 4, "written": 0, "skipped": 4, "failed": 0, "maps": 0}
    assert one["outcome"] == two["outcome"] == "complete"
    assert one["started"] <= one["finished"] <= two["started"] <= two["finished"]
    assert rec["counts"] == {"tasks": 4, "written": 4, "skipped": 4, "failed": 0, "maps": 16}
    assert rec["started"] == one["started"] and rec["finished"] == two["finished"]


def test_a_failed_attempt_then_a_good_one(tmp_path: Path) -> None:
    w = write_predecessor_folder(tmp_path / "src", **SMALL)
    originals = _poison(w, "fluid_dynamics")
    store = tmp_path / "a.zarr"
    assert len(import_npy(store, tmp_path / "src", scheduler="serial").failures) == 2
    for p, data in originals.items():  # the source fixed: the same command resumes the run
        p.write_bytes(data)
    assert import_npy(store, tmp_path / "src", scheduler="serial").written == 2
    (rec,) = RunLog(AtlasStore.open(store)).list()
    assert [a["outcome"] for a in rec["attempts"]] == ["failed", "complete"]
    assert [a["counts"]["failed"] for a in rec["attempts"]] == [2, 0]
    assert rec["counts"] == {"tasks": 4, "written": 4, "skipped": 2, "failed": 0, "maps": 16}
    assert rec["failures"] == []


def test_an_old_record_loads_and_a_resume_keeps_its_history(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL)
    store = tmp_path / "a.zarr"
    import_npy(store, tmp_path / "src", scheduler="serial")
    st = AtlasStore.open(store, mode="r+")
    (rec,) = RunLog(st).list()
    # as the engine wrote it before attempts had entries: start times, the last attempt's counts
    old = {k: v for k, v in rec.items() if k != "attempts"}
    old["attempts"] = ["2026-01-01T00:00:00+00:00", rec["started"]]
    validate(old, "run")
    group = st.zarr_group["_runs"][rec["run_id"]]
    group.attrs.update({"atlasstore_run": old})
    (loaded,) = RunLog(AtlasStore.open(store)).list()
    assert loaded["attempts"][0] == {"started": "2026-01-01T00:00:00+00:00"}
    assert loaded["attempts"][1]["counts"]["written"] == 4
    assert loaded["attempts"][1]["outcome"] == "complete"
    import_npy(store, tmp_path / "src", scheduler="serial")
    (rec2,) = RunLog(AtlasStore.open(store)).list()
    validate(rec2, "run")
    assert len(rec2["attempts"]) == 3 and rec2["attempts"][2]["counts"]["skipped"] == 4
    assert rec2["counts"]["written"] == 4


def test_an_attempt_that_never_finished_is_marked_abandoned(tmp_path: Path) -> None:
    st = AtlasStore.create(tmp_path / "a.zarr")
    run = {"run_id": "import-0123456789abcdef", "kind": "import", "seed": 0,
           "config": {"source_format": "npy", "sources": {}, "options": {}},
           "config_hash": "0" * 64, "code_version": "x", "host": "h",
           "started": "2026-01-01T00:00:00+00:00", "finished": None, "counts": {}}
    log = RunLog(st)
    log.start(run)  # its process is killed: no finish
    log.start({**run, "started": "2026-01-02T00:00:00+00:00"})
    (rec,) = log.list()
    assert [a["outcome"] for a in rec["attempts"]] == ["abandoned", "running"]
    validate(rec, "run")
