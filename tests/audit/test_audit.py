"""Audit: clean report, corruption, tampered checksums, incomplete sequences, invariants, drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

from atlasstore.audit import audit, drift, summary_rows
from atlasstore.errors import CorruptArray
from atlasstore.physics import fields as physics
from atlasstore.store import AtlasStore, checksum
from helpers.store_fixtures import chunk_files, copy_store, flip_bytes

DOMAINS = ["fluid_dynamics", "plasma_physics"]
SEQS = ["seq-00000", "seq-00001"]


@pytest.fixture()
def gen_copy(tmp_path: Path, generated_store_path: Path) -> Path:
    return copy_store(generated_store_path, tmp_path / "gen.zarr")


@pytest.fixture()
def stats_copy(tmp_path: Path, stats_store_path: Path) -> Path:
    return copy_store(stats_store_path, tmp_path / "stats.zarr")


def _retamper(path: Path, domain: str, seq: str, key: str, values: np.ndarray) -> None:
    """Overwrite an array's values *and* its committed checksum (consistent but unphysical data)."""
    g = zarr.open_group(str(path), mode="r+")
    level, field = key.split("/")
    g[f"{domain}/{seq}/{level}/{field}"][...] = values
    attrs = dict(g[f"{domain}/{seq}"].attrs)
    info = attrs["atlasstore_sequence"]
    info["arrays"][key]["checksum"] = checksum(values)
    g[f"{domain}/{seq}"].attrs.update({"atlasstore_sequence": info})


# --------------------------------------------------------------------------- clean


def test_clean_store_report(gen_copy: Path) -> None:
    store = AtlasStore.open(gen_copy)
    report = audit(store)
    assert report.ok, report.problems
    assert report.problems == []
    assert report.corrupt_arrays() == []
    assert sorted(report.domains) == DOMAINS
    assert report.checked_arrays == 2 * 2 * 3  # domains x sequences x fields (64x64: one level)
    for d in DOMAINS:
        r = report.domains[d]
        assert r.sequences == 2 and r.maps == 8 and r.arrays == 6
        assert r.bytes_on_disk == sum(store.nbytes_stored(f"{d}/{s}/") for s in SEQS)
        assert r.bytes_decoded == 6 * 4 * 64 * 64 * 4
        assert r.compression_ratio > 0
        assert r.compression_ratio == pytest.approx(r.bytes_decoded / r.bytes_on_disk)
        maps = np.concatenate([store.read(d, s, 64) for s in SEQS]).astype(np.float64)
        assert r.mean == pytest.approx(float(np.mean([m.mean() for m in maps])), rel=1e-6)
        assert r.variance == pytest.approx(float(np.mean([m.var() for m in maps])), rel=1e-5)
        assert r.entropy == pytest.approx(float(np.mean(physics.entropy(maps))), rel=1e-6)
    rows = summary_rows(report)
    assert [row["domain"] for row in rows] == DOMAINS
    assert all(row["compression_ratio"] > 0 and row["maps"] == 8 for row in rows)


def test_clean_multilevel_store_conserves(stats_copy: Path) -> None:
    report = audit(AtlasStore.open(stats_copy))
    assert report.ok, report.problems
    assert report.checked_arrays == 3 * 2 * 3  # sequences x levels x fields
    assert report.domains["alpha"].maps == 11 and report.domains["beta"].maps == 4


def test_domain_filter_and_quick_mode(gen_copy: Path) -> None:
    store = AtlasStore.open(gen_copy)
    r = audit(store, domains=["plasma_physics"])
    assert list(r.domains) == ["plasma_physics"] and r.checked_arrays == 6 and r.ok
    flip_bytes(chunk_files(gen_copy, "plasma_physics/seq-00000/64/energy")[0], 100)
    quick = audit(AtlasStore.open(gen_copy), verify=False)
    assert quick.checked_arrays == 0 and quick.ok
    assert quick.domains["plasma_physics"].arrays == 6


# --------------------------------------------------------------------------- corruption


def _flip_start(f: Path) -> None:
    flip_bytes(f, 0, 8)


def _flip_middle(f: Path) -> None:
    flip_bytes(f, f.stat().st_size // 2, 8)


def _flip_index(f: Path) -> None:  # the shard index (and its crc32c) sits at the end
    flip_bytes(f, -12, 4)


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:-100])


@pytest.mark.parametrize("damage", [_flip_start, _flip_middle, _flip_index, _truncate],
                         ids=["start", "middle", "shard-index", "truncate"])
@pytest.mark.parametrize("target", ["plasma_physics/seq-00001/64/grad_x",
                                    "fluid_dynamics/seq-00000/64/energy"])
def test_flipped_bytes_reported_as_corrupt(gen_copy: Path, damage: Callable[[Path], None],
                                           target: str) -> None:
    files = chunk_files(gen_copy, target)
    assert files, f"no chunk files under {target}/c"
    damage(files[0])
    store = AtlasStore.open(gen_copy)
    report = audit(store)
    assert not report.ok
    assert report.corrupt_arrays() == [target]
    assert [p.kind for p in report.problems] == ["corrupt"]
    assert report.problems[0].path == target
    d, s, lvl, f = target.split("/")
    with pytest.raises(CorruptArray, match=target):
        store.read(d, s, int(lvl), f)
    with pytest.raises(CorruptArray):
        store.verify_array(d, s, int(lvl), f)
    # the rest of the store still reads and verifies
    other = "grad_y"
    store.verify_array(d, s, int(lvl), other)


def test_corrupt_array_raises_through_query(gen_copy: Path) -> None:
    from atlasstore.query import Query

    flip_bytes(chunk_files(gen_copy, "plasma_physics/seq-00000/64/energy")[0], 50)
    with pytest.raises(CorruptArray, match="plasma_physics/seq-00000/64/energy"):
        Query(AtlasStore.open(gen_copy), scale=64, domains=("plasma_physics",)).to_numpy()


@pytest.mark.parametrize("how", ["delete", "empty"])
def test_missing_shard_is_a_checksum_problem(gen_copy: Path, how: str) -> None:
    f = chunk_files(gen_copy, "plasma_physics/seq-00000/64/grad_y")[0]
    if how == "delete":
        f.unlink()
    else:
        f.write_bytes(b"")
    report = audit(AtlasStore.open(gen_copy))
    assert report.corrupt_arrays() == ["plasma_physics/seq-00000/64/grad_y"]
    assert report.problems[0].kind in ("checksum", "corrupt")


@pytest.mark.parametrize("how", ["delete", "empty"])
def test_read_of_missing_shard_raises(gen_copy: Path, how: str) -> None:
    f = chunk_files(gen_copy, "plasma_physics/seq-00000/64/energy")[0]
    if how == "delete":
        f.unlink()
    else:
        f.write_bytes(b"")
    with pytest.raises(CorruptArray):
        AtlasStore.open(gen_copy).read("plasma_physics", "seq-00000", 64)


def test_tampered_checksum_is_reported(gen_copy: Path) -> None:
    g = zarr.open_group(str(gen_copy), mode="r+")
    sg = g["fluid_dynamics/seq-00001"]
    info = dict(sg.attrs)["atlasstore_sequence"]
    info["arrays"]["64/energy"]["checksum"] = "sha256:" + "0" * 64
    sg.attrs.update({"atlasstore_sequence": info})
    store = AtlasStore.open(gen_copy)
    report = audit(store)
    assert [(p.path, p.kind) for p in report.problems] == [("fluid_dynamics/seq-00001/64/energy", "checksum")]
    assert report.corrupt_arrays() == ["fluid_dynamics/seq-00001/64/energy"]
    with pytest.raises(CorruptArray, match="checksum mismatch"):
        store.verify_array("fluid_dynamics", "seq-00001", 64, "energy")
    # the values themselves still decode
    assert store.read("fluid_dynamics", "seq-00001", 64).shape == (4, 64, 64)


def test_incomplete_sequence_reported(gen_copy: Path) -> None:
    g = zarr.open_group(str(gen_copy), mode="r+")
    g["plasma_physics"].create_group("seq-00007",
                                     attributes={"atlasstore_sequence": {"status": "writing"}})
    report = audit(AtlasStore.open(gen_copy))
    assert [(p.path, p.kind) for p in report.problems] == [("plasma_physics/seq-00007", "incomplete")]
    assert report.domains["plasma_physics"].sequences == 2
    assert report.corrupt_arrays() == []


# --------------------------------------------------------------------------- invariants


def test_negative_energy_is_an_invariant_problem(stats_copy: Path) -> None:
    store = AtlasStore.open(stats_copy)
    vals = store.read("beta", "b0", 64).copy()
    vals[0, 0, 0] = -1.0
    _retamper(stats_copy, "beta", "b0", "64/energy", vals)
    report = audit(AtlasStore.open(stats_copy))
    kinds = [(p.path, p.kind) for p in report.problems]
    assert ("beta/b0/64/energy", "invariant") in kinds
    assert any("negative" in p.message for p in report.problems)


def test_non_conserving_level_is_an_invariant_problem(stats_copy: Path) -> None:
    store = AtlasStore.open(stats_copy)
    orig = store.read("alpha", "a0", 64)
    vals = orig * np.float32(1.2)
    _retamper(stats_copy, "alpha", "a0", "64/energy", vals)
    report = audit(AtlasStore.open(stats_copy))
    assert [(p.path, p.kind) for p in report.problems] == [("alpha/a0/64/energy", "invariant")]
    assert "conserve" in report.problems[0].message
    # within tolerance: a 1% change passes at the default 5%, fails at 0.5%
    vals = orig * np.float32(1.01)
    _retamper(stats_copy, "alpha", "a0", "64/energy", vals)
    assert audit(AtlasStore.open(stats_copy)).ok
    assert not audit(AtlasStore.open(stats_copy), tolerance=0.005).ok


def test_non_finite_values_are_an_invariant_problem(stats_copy: Path) -> None:
    store = AtlasStore.open(stats_copy)
    vals = store.read("beta", "b0", 128, "grad_x").copy()
    vals[1, 2, 3] = np.inf
    _retamper(stats_copy, "beta", "b0", "128/grad_x", vals)
    report = audit(AtlasStore.open(stats_copy))
    assert [(p.path, p.kind) for p in report.problems] == [("beta/b0/128/grad_x", "invariant")]
    assert "1 infinite values stored" in report.problems[0].message
    vals[1, 2, 3] = np.nan  # a missing cell the commit did not record
    _retamper(stats_copy, "beta", "b0", "128/grad_x", vals)
    report = audit(AtlasStore.open(stats_copy))
    assert [(p.path, p.kind) for p in report.problems] == [("beta/b0/128/grad_x", "invariant")]
    assert "1 missing (NaN) cells stored; the commit recorded 0" in report.problems[0].message


# --------------------------------------------------------------------------- drift


class FakeCatalog:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def sequence_keys(self) -> list[str]:
        return list(self.keys)


ALL_KEYS = [f"{d}/{s}" for d in DOMAINS for s in SEQS]


def test_no_drift(gen_copy: Path) -> None:
    assert audit(AtlasStore.open(gen_copy), catalog=FakeCatalog(ALL_KEYS)).ok


def test_drift_both_ways(gen_copy: Path) -> None:
    cat = FakeCatalog([k for k in ALL_KEYS if k != "plasma_physics/seq-00001"] + ["fluid_dynamics/seq-00099"])
    report = audit(AtlasStore.open(gen_copy), catalog=cat)
    got = sorted((p.path, p.kind) for p in report.problems)
    assert got == [("fluid_dynamics/seq-00099", "catalog_extra"),
                   ("plasma_physics/seq-00001", "catalog_missing")]
    assert report.corrupt_arrays() == []


def test_drift_respects_domain_filter(gen_copy: Path) -> None:
    cat = FakeCatalog(["plasma_physics/seq-00000", "plasma_physics/seq-00001", "other/seq-1",
                       "fluid_dynamics/seq-00099"])
    report = audit(AtlasStore.open(gen_copy), domains=["plasma_physics"], catalog=cat)
    assert report.ok, report.problems


def test_drift_function_directly() -> None:
    probs = drift({"a/1", "a/2"}, {"a/2", "b/3"})
    assert sorted((p.path, p.kind) for p in probs) == [("a/1", "catalog_missing"), ("b/3", "catalog_extra")]
    assert drift({"a/1"}, {"a/1", "b/3"}, domains=["a"]) == []


def test_incomplete_sequence_is_not_counted_as_stored_for_drift(gen_copy: Path) -> None:
    g = zarr.open_group(str(gen_copy), mode="r+")
    g["plasma_physics"].create_group("seq-00005",
                                     attributes={"atlasstore_sequence": {"status": "writing"}})
    report = audit(AtlasStore.open(gen_copy),
                   catalog=FakeCatalog(ALL_KEYS + ["plasma_physics/seq-00005"]))
    got = sorted((p.path, p.kind) for p in report.problems)
    assert got == [("plasma_physics/seq-00005", "catalog_extra"), ("plasma_physics/seq-00005", "incomplete")]


# --------------------------------------------------------------------------- dataset versions


def _pinned(gen_copy: Path) -> tuple[AtlasStore, dict[str, str]]:
    from atlasstore.catalog.sync import dataset_checksums

    store = AtlasStore.open(gen_copy, mode="r+")
    return store, dataset_checksums(store, [f"{d}/{s}" for d in DOMAINS for s in SEQS])


def test_audit_dataset_matches_changed_missing(gen_copy: Path) -> None:
    """A dataset version's pins against the store: unchanged data matches; a rewrite with other
    values, bytes that no longer decode to the checksum, and a deleted sequence do not."""
    from atlasstore.audit import audit_dataset

    store, pins = _pinned(gen_copy)
    rep = audit_dataset(store, "dv", pins)
    assert rep.ok and rep.matches == sorted(pins) and rep.checked_arrays == 4 * 3
    e = store.read("plasma_physics", "seq-00000", 64, "energy")
    store.write_sequence("plasma_physics", "seq-00000", e * 2, overwrite=True)
    store.delete_sequence("plasma_physics", "seq-00001")
    flip_bytes(chunk_files(gen_copy, "fluid_dynamics/seq-00001/64/grad_y")[0], 40)
    rep = audit_dataset(AtlasStore.open(gen_copy), "dv", pins)
    assert not rep.ok
    assert rep.matches == ["fluid_dynamics/seq-00000"]
    assert rep.missing == ["plasma_physics/seq-00001"]
    assert rep.changed == {
        "fluid_dynamics/seq-00001": "stored data does not match its checksum: 64/grad_y",
        "plasma_physics/seq-00000": "rewritten: its committed checksums differ from the pinned ones"}
    quick = audit_dataset(AtlasStore.open(gen_copy), "dv", pins, verify=False)
    assert "fluid_dynamics/seq-00001" in quick.matches and quick.checked_arrays == 0


def test_atlas_audit_dataset_version_and_checkpoint(gen_copy: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from atlasstore import cli
    from atlasstore.catalog import SQLiteCatalog

    def atlas(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, "--store", str(gen_copy)])
        out, err = capsys.readouterr()
        return code, out, err

    assert atlas("catalog", "sync")[0] == 0
    keys = [f"{d}/{s}" for d in DOMAINS for s in SEQS]
    with SQLiteCatalog(tmp_path / "gen.catalog.sqlite") as cat:
        cat.register_dataset_version("dv-1", {}, {"train": keys[:3], "val": keys[3:]}, keys)
        cat.register_training_run("tr-1", {}, "dv-1")
        cat.register_checkpoint("tr-1/best/5", "tr-1", 5, {}, str(tmp_path / "run"))
        cat.register_dataset_version("dv-old", {}, {}, keys[:1], checksums={})
    code, out, err = atlas("audit", "--dataset-version", "dv-1")
    assert code == 0 and out.startswith("dataset version dv-1: 4 sequences match, 0 changed, "
                                        "0 missing (12 arrays decoded)"), (out, err)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "best" / "5").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"dataset_version_id": "dv-1"}))
    AtlasStore.open(gen_copy, mode="r+").delete_sequence("fluid_dynamics", "seq-00000")
    for ref in (str(run_dir), str(run_dir / "checkpoints" / "best" / "5"), "tr-1/best/5"):
        code, out, err = atlas("audit", "--checkpoint", ref, "--quick")
        assert code == 1, (ref, out, err)
        assert "3 sequences match, 0 changed, 1 missing" in out
        assert "MISSING fluid_dynamics/seq-00000" in err
    code, _, err = atlas("audit", "--dataset-version", "dv-old")
    assert code == 2 and "pins no checksums" in err
    code, _, err = atlas("audit", "--dataset-version", "dv-none")
    assert code == 2 and "'dv-none' is not in the catalog" in err
    code, _, err = atlas("audit", "--checkpoint", "nope/1")
    assert code == 2 and "neither a path nor a checkpoint id" in err
