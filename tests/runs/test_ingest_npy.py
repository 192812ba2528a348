"""`atlas import npy`: the predecessor's folders of .npy maps with JSON sidecars and inventory.

A realistic folder (5 domains x 5 sequences x 10 steps of 256x256, float32/float64 mix,
sidecars and catalog.json as the predecessor wrote them: ``predecessor_fixture``) imports whole;
small folders exercise grouping, bad input (one failing sequence, the others imported, nothing
partial visible), resume and the command line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from atlasstore.audit import audit
from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.selector import CatalogSelector
from atlasstore.query import Query
from atlasstore.runs.ingest import ImportOptions, ImportPlanError, import_npy, plan_npy
from atlasstore.store import AtlasStore, RunLog
from helpers.cli_runner import run_cli
from helpers.predecessor_fixture import PATTERN, Written, write_predecessor_folder
from helpers.store_fixtures import listing

SMALL = {"domains": ("plasma_physics", "fluid_dynamics"), "sequences": 2, "steps": 4,
         "shape": (64, 64)}


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Written, Path]:
    root = tmp_path_factory.mktemp("pred")
    written = write_predecessor_folder(root / "data")
    store = root / "atlas.zarr"
    with SQLiteCatalog(root / "atlas.catalog.sqlite") as cat:
        rep = import_npy(store, root / "data", PATTERN, scheduler="serial", catalog=cat)
    assert rep.ok and rep.written == 25 and rep.maps == 250, rep
    assert not rep.catalog_errors
    return written, store


def test_the_predecessor_folder_imports_whole(realistic: tuple[Written, Path]) -> None:
    written, path = realistic
    assert len(written.maps) == 250 and {m.dtype for m in written.maps.values()} == {
        np.dtype(np.float32), np.dtype(np.float64)}
    store = AtlasStore.open(path)
    assert store.domains() == sorted({d for d, _ in written.sequences()})
    for d, s in written.sequences():
        info = store.sequence_info(d, s)
        assert info["n_steps"] == 10 and info["levels"] == [256, 128, 64]
        np.testing.assert_array_equal(store.read(d, s, 256), written.stack(d, s).astype(np.float32))
    rep = audit(store)
    assert rep.ok, rep.problems[:3]


def test_sidecars_are_kept_per_step(realistic: tuple[Written, Path]) -> None:
    written, path = realistic
    store = AtlasStore.open(path)
    info = store.sequence_info("astrophysics", "seq_003")
    for t, step in enumerate(info["steps"]):
        side = written.sidecars[("astrophysics", "seq_003", t)]
        assert step["metadata"] == side
        assert [p["kind"] for p in step["perturbations"]] == [p["type"] for p in side["perturbations"]]
        assert step["source"]["file"] == f"astrophysics/seq_003_t{t:02d}.npy"
        assert step["source"]["inventory"]["map_id"] == side["map_id"]
    gen = info["generation"]
    assert gen["kind"] == "import" and gen["run_id"].startswith("import-")
    assert len(gen["sources"]) == 20  # 10 maps + 10 sidecars
    first = gen["sources"][0]
    assert first["uri"] == written.files[("astrophysics", "seq_003", 0)].resolve().as_uri()
    assert first["format"] == "npy" and first["member"] == "t=0" and len(first["sha256"]) == 64
    assert first["size"] == written.files[("astrophysics", "seq_003", 0)].stat().st_size


def test_perturbation_queries_work_on_imported_data(realistic: tuple[Written, Path]) -> None:
    written, path = realistic
    store = AtlasStore.open(path)
    want = {(d, s) for (d, s, _), side in written.sidecars.items()
            if any(p["type"] == "rotation" for p in side["perturbations"])}
    assert want  # the turbulent_radiative_layer preset rotates
    q = Query(store, perturbation="rotation", window=1)
    assert {(w.domain, w.sequence_id) for w in q.windows()} == want
    with SQLiteCatalog(path.parent / "atlas.catalog.sqlite") as cat:
        qc = Query(store, perturbation="rotation", window=1, selector=CatalogSelector(cat))
        assert qc.windows() == q.windows()
        assert set(cat.sequence_keys()) == {f"{d}/{s}" for d, s in written.sequences()}


def test_the_run_is_recorded(realistic: tuple[Written, Path]) -> None:
    _, path = realistic
    (run,) = RunLog(AtlasStore.open(path)).list()
    assert run["kind"] == "import" and run["seed"] == 0
    assert run["config"]["source_format"] == "npy" and run["config"]["sources"]["count"] == 500
    assert run["config"]["options"]["pattern"] == PATTERN
    assert run["counts"] == {"tasks": 25, "written": 25, "skipped": 0, "failed": 0, "maps": 250}


# --------------------------------------------------------------------------- grouping


def test_grouping_by_sidecar_keys(tmp_path: Path) -> None:
    """Flat files named by map id only; sequence and step come from the sidecars."""
    w = write_predecessor_folder(tmp_path / "src", **SMALL, inventory=False)
    flat = tmp_path / "flat" / "maps"
    flat.mkdir(parents=True)
    for i, (d, s, t) in enumerate(sorted(w.files)):
        side = {**w.sidecars[(d, s, t)], "sequence_id": f"{d}-{s}", "time_step": t + 1}
        np.save(flat / f"map{i:04d}.npy", w.maps[(d, s, t)])
        (flat / f"map{i:04d}.json").write_text(json.dumps(side))
    rep = import_npy(tmp_path / "a.zarr", tmp_path / "flat", "maps/map{n}.npy", domain="old",
                     sidecar_keys={"sequence": "sequence_id", "t": "time_step"},
                     scheduler="serial")
    assert rep.ok and rep.written == 4
    store = AtlasStore.open(tmp_path / "a.zarr")
    assert store.sequences("old") == sorted(f"{d}-{s}" for d, s in w.sequences())
    info = store.sequence_info("old", "plasma_physics-seq_001")
    assert [s["source"]["t"] for s in info["steps"]] == [1, 2, 3, 4]  # stored as t = 0..3
    assert info["steps"][0]["source"]["n"] in {f"{i:04d}" for i in range(16)}
    np.testing.assert_array_equal(store.read("old", "plasma_physics-seq_001", 64),
                                  w.stack("plasma_physics", "seq_001").astype(np.float32))


def test_pattern_errors_refuse_before_any_work(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL)
    for pattern, match in (("{domain}/{sequence}.npy", "no \\{t\\} field"),
                           ("{sequence}_t{t}.npy", "no \\{domain\\} field"),
                           ("nothing/{domain}/{sequence}_t{t}.npy", "matches the pattern"),
                           ("/abs/{t}.npy", "relative path"),
                           ("{domain}/{t}_{t}.npy", "twice")):
        with pytest.raises(ImportPlanError, match=match):
            plan_npy(tmp_path / "src", pattern)
    with pytest.raises(ImportPlanError, match="is not a directory"):
        plan_npy(tmp_path / "nope")
    assert not (tmp_path / "a.zarr").exists()


def test_the_inventory_catches_a_changed_file(tmp_path: Path) -> None:
    w = write_predecessor_folder(tmp_path / "src", **SMALL)
    victim = w.files[("fluid_dynamics", "seq_001", 2)]
    a = np.load(victim)
    a[0, 0] += 1.0
    np.save(victim, a)
    rep = import_npy(tmp_path / "a.zarr", tmp_path / "src", scheduler="serial")
    assert rep.written == 3
    (f,) = rep.failures
    assert (f.domain, f.sequence_id) == ("fluid_dynamics", "seq_001")
    assert str(victim) in f.error and "differs from the inventory" in f.error


# --------------------------------------------------------------------------- bad input


def _nan(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    a = np.load(p)
    a[5, 5] = np.nan
    np.save(p, a)
    return p


def _negative(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 1)]
    a = np.load(p)
    a[1, 1] = -0.5
    np.save(p, a)
    return p


def _shape(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 3)]
    np.save(p, np.ones((64, 32)))
    return p


def _no_sidecar(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    p.with_suffix(".json").unlink()
    return p


def _duplicate(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    dup = p.with_name("seq_000_t2.npy")  # t=2 again, spelled differently
    np.save(dup, np.load(p))
    dup.with_suffix(".json").write_text(p.with_suffix(".json").read_text())
    return dup


def _gap(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    p.unlink()
    p.with_suffix(".json").unlink()
    return p.parent


def _truncated(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    p.write_bytes(p.read_bytes()[:200])
    return p


def _pickle(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return p


def _symlink(w: Written) -> Path:
    outside = w.root.parent / "outside.npy"
    p = w.files[("fluid_dynamics", "seq_000", 2)]
    np.save(outside, np.load(p))
    p.unlink()
    p.symlink_to(outside)
    return p


def _bad_sidecar(w: Written) -> Path:
    p = w.files[("fluid_dynamics", "seq_000", 2)].with_suffix(".json")
    p.write_text("{not json")
    return p


@pytest.mark.parametrize("damage,match", [
    (_nan, "contains non-finite values"), (_negative, "negative values"),
    (_shape, "a 64x32 map in a sequence of 64x64 maps"), (_no_sidecar, "sidecar .* is missing"),
    (_duplicate, "step 2 twice"), (_gap, "has no step 2"), (_truncated, "not a readable .npy"),
    (_pickle, "not a readable .npy"), (_symlink, r"outside .* \(through a symlink\); refused"),
    (_bad_sidecar, "the sidecar is not JSON"),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_a_bad_file_fails_its_sequence_only(tmp_path: Path, damage, match: str) -> None:
    w = write_predecessor_folder(tmp_path / "src", **SMALL, inventory=False)
    culprit = damage(w)
    store = tmp_path / "a.zarr"
    rc, out, err = run_cli("import", "npy", str(tmp_path / "src"), "--store", str(store),
                           "--scheduler", "serial", "--no-catalog")
    assert rc == 1, (out, err)
    assert "3 sequences written, 0 already complete, 1 failed" in out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert line.startswith("FAILED fluid_dynamics/seq_000: ") and str(culprit) in line, line
    assert re.search(match, line), line
    st = AtlasStore.open(store)
    assert st.sequences("fluid_dynamics", include_incomplete=True) == ["seq_001"]
    assert st.sequences("plasma_physics") == ["seq_000", "seq_001"]
    assert audit(st).ok
    assert not list((store / "fluid_dynamics").glob("seq_000*"))  # nothing partial


def test_a_pattern_that_matches_nothing_is_one_clear_error(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL)
    rc, _, err = run_cli("import", "npy", str(tmp_path / "src"), "--store", str(tmp_path / "a.zarr"),
                         "--pattern", "{domain}/run{sequence}-{t}.npy", "--no-catalog")
    assert rc == 2 and err.startswith("atlas: error: no file under") and "16 .npy file(s)" in err
    assert not (tmp_path / "a.zarr").exists()


# --------------------------------------------------------------------------- resume


def test_resume_skips_same_data_refuses_other_data_rewrites_half_written(tmp_path: Path) -> None:
    w = write_predecessor_folder(tmp_path / "src", **SMALL)
    store_path = tmp_path / "a.zarr"
    first = import_npy(store_path, tmp_path / "src", scheduler="serial")
    assert first.written == 4
    ref = {(d, s): AtlasStore.open(store_path).sequence_info(d, s)["arrays"]
           for d, s in w.sequences()}
    again = import_npy(store_path, tmp_path / "src", scheduler="serial")
    assert (again.written, again.skipped, again.failures) == (0, 4, [])
    assert again.run_id == first.run_id
    # a half-written sequence (a killed import) is rewritten to the same checksums
    st = AtlasStore.open(store_path, mode="r+")
    st.delete_sequence("plasma_physics", "seq_001")
    writer = st.sequence_writer("plasma_physics", "seq_001", (4, 64, 64))
    writer.append(np.ones((2, 64, 64), np.float32))
    writer._flush()  # on disk, never committed: what kill -9 leaves
    assert st.sequence_status("plasma_physics", "seq_001") == "writing"
    third = import_npy(store_path, tmp_path / "src", scheduler="serial")
    assert (third.written, third.skipped) == (1, 3)
    st = AtlasStore.open(store_path)
    assert {k: v["checksum"] for k, v in st.sequence_info("plasma_physics", "seq_001")["arrays"].items()} \
        == {k: v["checksum"] for k, v in ref[("plasma_physics", "seq_001")].items()}
    # other data under the same ids: refused, named, nothing changed
    before = listing(store_path)
    victim = w.files[("plasma_physics", "seq_000", 1)]
    np.save(victim, np.load(victim) * 2)
    changed = import_npy(store_path, tmp_path / "src", scheduler="serial")
    (f,) = [f for f in changed.failures if f.sequence_id == "seq_000" and f.domain == "plasma_physics"]
    assert "already holds other data" in f.error
    assert "differs from the inventory" not in f.error  # refused before reading for the store
    other_opts = import_npy(store_path, tmp_path / "src", scheduler="serial",
                            options=ImportOptions(levels=(64,), kind="extensive"))
    assert other_opts.written == 0 and len(other_opts.failures) == 4
    assert all("imported with other options (kind, levels)" in f.error for f in other_opts.failures)
    after = listing(store_path)
    assert {k for k in after if not k.startswith(("_runs", "_log/entries"))} == \
        {k for k in before if not k.startswith(("_runs", "_log/entries"))}
    # the change log grew only by the refused runs' own records (start and finish of each)
    new_entries = sorted(k for k in after if k.startswith("_log/entries") and k not in before)
    assert len(new_entries) == 4
    assert {json.loads((store_path / k).read_text())["op"] for k in new_entries} == {"run"}


def test_reimport_from_a_moved_folder_is_the_same_data(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL, inventory=False)
    store_path = tmp_path / "a.zarr"
    assert import_npy(store_path, tmp_path / "src", scheduler="serial").written == 4
    (tmp_path / "src").rename(tmp_path / "moved")
    rep = import_npy(store_path, tmp_path / "moved", scheduler="serial")
    assert (rep.written, rep.skipped, rep.failures) == (0, 4, [])


def test_the_command_line_summary_and_catalog(tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "src", **SMALL)
    store = tmp_path / "a.zarr"
    rc, out, err = run_cli("import", "npy", str(tmp_path / "src"), "--store", str(store),
                           "--scheduler", "serial", "--quiet")
    assert rc == 0, err
    assert "4 sequences written, 0 already complete, 0 failed; 16 maps" in out
    rc, out, _ = run_cli("query", "--store", str(store), "--window", "4", "--count")
    assert (rc, out.strip()) == (0, "4")
    rc, out, _ = run_cli("query", "--store", str(store), "--window", "2", "--count",
                         "--perturbation", "thermal_blur")
    assert rc == 0 and int(out) > 0
    rc, out, _ = run_cli("import", "npy", str(tmp_path / "src"), "--store", str(store),
                         "--scheduler", "serial", "--quiet")
    assert rc == 0 and "0 sequences written, 4 already complete" in out
