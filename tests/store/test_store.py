"""The Zarr v3 atlas store: create/open, layout, commit protocol, checksums, bad input."""

from __future__ import annotations

import json
import re
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from atlasstore.errors import (
    EnergyMapError,
    InvalidName,
    NotAnAtlasStore,
    NotFound,
    SchemaError,
    SequenceExists,
    StoreError,
)
from atlasstore.io.schemas import validate
from atlasstore.physics import fields as physics
from atlasstore.store import DIMS, FIELDS, AtlasStore, SequenceWriter
from helpers.store_fixtures import (
    chunk_files,
    copy_store,
    dirs,
    energy_sequence,
    listing,
    sha256_values,
    simple_store,
)


@pytest.fixture()
def store(tmp_path: Path) -> AtlasStore:
    s = AtlasStore.create(tmp_path / "atlas.zarr")
    s.create_domain("alpha")
    return s


def _loc(store: AtlasStore) -> Path:
    return Path(store.location)


# --------------------------------------------------------------------------- create / open


def test_create_then_open_local_path(tmp_path: Path) -> None:
    p = tmp_path / "atlas.zarr"
    s = AtlasStore.create(p)
    assert (p / "zarr.json").is_file()
    assert s.domains() == []
    attrs = dict(s.zarr_group.attrs)
    validate(attrs, "root")
    assert attrs["atlasstore"]["format_version"] == 1
    r = AtlasStore.open(p)
    assert r.read_only
    assert r.domains() == []
    assert not AtlasStore.open(p, mode="r+").read_only


def test_create_refuses_existing_store_unless_exist_ok(tmp_path: Path) -> None:
    p = tmp_path / "atlas.zarr"
    simple_store(p)
    before = listing(p)
    with pytest.raises(StoreError, match="already exists"):
        AtlasStore.create(p)
    assert listing(p) == before
    s = AtlasStore.create(p, exist_ok=True)
    assert s.sequences("alpha") == ["s0"]
    assert listing(p) == before


def test_create_refuses_nonempty_foreign_directory(tmp_path: Path) -> None:
    d = tmp_path / "stuff"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="already exists"):
        AtlasStore.create(d)
    assert listing(d) == {"notes.txt": listing(d)["notes.txt"]}


def test_file_url_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "viaurl.zarr"
    url = f"file://{p}"
    s = AtlasStore.create(url)
    s.create_domain("alpha")
    e = energy_sequence(2, 64, 64, seed=1)
    s.write_sequence("alpha", "s0", e)
    assert (p / "alpha" / "s0" / "64" / "energy" / "zarr.json").is_file()
    for loc in (url, p, str(p)):
        r = AtlasStore.open(loc)
        np.testing.assert_array_equal(r.read("alpha", "s0", 64), e)


def test_memory_url_fsspec_store() -> None:
    """zarr's FsspecStore works with fsspec's memory:// filesystem (nothing touches disk)."""
    import fsspec

    name = f"atlas-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    try:
        s = AtlasStore.create(url)
        assert type(s.zarr_group.store).__name__ == "FsspecStore"
        s.create_domain("alpha")
        e = energy_sequence(3, 128, 192, seed=2)
        info = s.write_sequence("alpha", "s0", e)
        r = AtlasStore.open(url)
        assert r.sequences("alpha") == ["s0"]
        np.testing.assert_array_equal(r.read("alpha", "s0", 128), e)
        assert r.read("alpha", "s0", 64).shape == (3, 64, 96)
        assert sha256_values(r.read("alpha", "s0", 64, "grad_y")) == info["arrays"]["64/grad_y"]["checksum"]
        assert r.nbytes_stored("alpha/") > 0
        r.verify_array("alpha", "s0", 64, "energy")
        with pytest.raises(StoreError, match="read-only"):
            r.write_sequence("alpha", "s1", e)
        with pytest.raises(StoreError, match="already exists"):
            AtlasStore.create(url)
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)


def test_open_missing_memory_url_is_not_a_store() -> None:
    with pytest.raises(NotAnAtlasStore, match="not an atlas store"):
        AtlasStore.open(f"memory://missing-{uuid.uuid4().hex}")


_OPEN_CASES = [(k, m) for m in ("r", "r+")
               for k in ("empty_dir", "plain_zarr", "plain_zarr_v2", "file", "missing")]


@pytest.mark.parametrize("kind,mode", _OPEN_CASES)
def test_open_refuses_what_is_not_an_atlas_store(tmp_path: Path, kind: str, mode: str) -> None:
    p = tmp_path / "target"
    if kind == "empty_dir":
        p.mkdir()
    elif kind == "plain_zarr":
        zarr.open_group(str(p), mode="w", attributes={"hello": 1})
    elif kind == "plain_zarr_v2":
        zarr.open_group(str(p), mode="w", zarr_format=2)
    elif kind == "file":
        p.write_text("not a store")
    before = listing(p)
    with pytest.raises(NotAnAtlasStore) as exc:
        AtlasStore.open(p, mode=mode)
    assert str(p) in str(exc.value)
    assert listing(p) == before
    assert p.exists() == (kind != "missing")


#: root zarr.json contents that are valid JSON (or not) but no atlas store root
_GARBAGE_ROOTS = {
    "array": "[]",
    "null": "null",
    "string": '"atlas"',
    "not_json": "{",
    "bare_attributes_list": '{"attributes": []}',
    "attributes_list": '{"zarr_format": 3, "node_type": "group", "attributes": []}',
    "attributes_null": '{"zarr_format": 3, "node_type": "group", "attributes": null}',
    "atlasstore_list": '{"zarr_format": 3, "node_type": "group", "attributes": {"atlasstore": []}}',
    "atlasstore_string": '{"zarr_format": 3, "node_type": "group", "attributes": {"atlasstore": "x"}}',
    "atlasstore_incomplete": ('{"zarr_format": 3, "node_type": "group", '
                              '"attributes": {"atlasstore": {"format_version": 1}}}'),
    "array_node": '{"zarr_format": 3, "node_type": "array", "attributes": {}}',
}


def _garbage_store(tmp_path: Path, content: str) -> Path:
    p = tmp_path / "bad.zarr"
    p.mkdir()
    (p / "zarr.json").write_text(content)
    return p


@pytest.mark.parametrize("kind", sorted(_GARBAGE_ROOTS))
def test_garbage_root_document_is_not_an_atlas_store(tmp_path: Path, kind: str) -> None:
    """zarr itself raises TypeError/AttributeError on these; open and create must refuse them
    with NotAnAtlasStore naming the path, and write nothing."""
    p = _garbage_store(tmp_path, _GARBAGE_ROOTS[kind])
    before = listing(tmp_path)
    for attempt in (lambda: AtlasStore.open(p), lambda: AtlasStore.open(p, mode="r+"),
                    lambda: AtlasStore.create(p, exist_ok=True), lambda: AtlasStore.create(p)):
        with pytest.raises(NotAnAtlasStore, match=f"^{re.escape(str(p))} (is not an atlas store"
                                                  "|has atlas format)"):
            attempt()
        assert listing(tmp_path) == before


@pytest.mark.parametrize("kind", ["array", "null", "bare_attributes_list", "atlasstore_list"])
@pytest.mark.parametrize("argv", [
    ["ls"], ["ls", "plasma_physics"], ["query", "--count"], ["audit"],
    ["generate", "--domains", "plasma_physics", "--sequences", "1", "--steps", "2",
     "--scheduler", "serial", "--no-catalog"],
])
def test_cli_refuses_a_garbage_root_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                kind: str, argv: list[str]) -> None:
    from atlasstore import cli

    p = _garbage_store(tmp_path, _GARBAGE_ROOTS[kind])
    before = listing(tmp_path)
    code = cli.main([*argv, "--store", str(p)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{p} is not an atlas store" in err and "internal error" not in err
    assert listing(tmp_path) == before


def test_open_refuses_bad_mode(tmp_path: Path) -> None:
    simple_store(tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="mode"):
        AtlasStore.open(tmp_path / "a.zarr", mode="w")


def test_open_refuses_wrong_format_version(tmp_path: Path) -> None:
    p = tmp_path / "a.zarr"
    AtlasStore.create(p)
    g = zarr.open_group(str(p), mode="r+")
    attrs = dict(g.attrs)["atlasstore"]
    g.attrs.update({"atlasstore": {**attrs, "format_version": 99}})
    with pytest.raises((NotAnAtlasStore, SchemaError)):
        AtlasStore.open(p)


def test_create_on_a_plain_file_is_a_store_error(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(StoreError):
        AtlasStore.create(f)


# --------------------------------------------------------------------------- layout


def test_layout_groups_arrays_dims_attrs(store: AtlasStore) -> None:
    e = energy_sequence(3, 256, 256, seed=3)
    store.write_sequence("alpha", "s0", e)
    root = zarr.open_group(store.location, mode="r")
    seq = root["alpha/s0"]
    assert sorted(seq.group_keys()) == ["128", "256", "64"]
    for lvl in (256, 128, 64):
        g = seq[str(lvl)]
        assert sorted(g.array_keys()) == sorted(FIELDS)
        for f in FIELDS:
            a = g[f]
            assert a.shape == (3, lvl, lvl)
            assert a.dtype == np.float32
            assert tuple(a.metadata.dimension_names) == DIMS == ("time", "y", "x")
            attrs = dict(a.attrs)
            assert attrs["units"] and isinstance(attrs["units"], str)
            assert attrs["long_name"] and isinstance(attrs["long_name"], str)
            assert a.shards is not None, "arrays are sharded"
        assert dict(g["energy"].attrs)["long_name"] == "energy density"
        # Few files: one shard object per array for a short sequence.
        for f in FIELDS:
            assert len(chunk_files(store.location, f"alpha/s0/{lvl}/{f}")) == 1


def test_multiscales_attribute_shape(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(2, 256, 256))
    attrs = dict(store.zarr_group["alpha/s0"].attrs)
    ms = attrs["multiscales"]
    layout = ms["layout"]
    assert [entry["asset"] for entry in layout] == ["256", "128", "64"]
    assert "derived_from" not in layout[0]
    for entry, f in zip(layout, (1.0, 2.0, 4.0), strict=True):
        assert entry["transform"]["scale"] == [f, f]
        assert entry["transform"]["translation"] == [(f - 1) / 2] * 2
    for entry in layout[1:]:
        assert entry["derived_from"] == "256"
        assert entry["resampling_method"]
    conv = attrs["zarr_conventions"]
    assert isinstance(conv, list) and conv
    assert any(c.get("name") == "multiscales" for c in conv)
    assert all("uuid" in c for c in conv)


def test_attributes_validate_against_schemas(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(2))
    root = store.zarr_group
    validate(dict(root.attrs), "root")
    validate(dict(root["alpha"].attrs), "domain")
    seq_attrs = dict(root["alpha/s0"].attrs)
    validate(seq_attrs, "sequence")
    info = seq_attrs["atlasstore_sequence"]
    assert info["status"] == "complete"
    assert info["n_steps"] == 2 and info["shape"] == [64, 64] and info["levels"] == [64]
    assert info["dtype"] == "float32"
    assert sorted(info["arrays"]) == ["64/energy", "64/grad_x", "64/grad_y"]


@pytest.mark.parametrize("shape,levels", [
    ((256, 384), {256: (256, 384), 128: (128, 192), 64: (64, 96)}),
    ((384, 256), {256: (384, 256), 128: (192, 128), 64: (96, 64)}),
    ((128, 192), {128: (128, 192), 64: (64, 96)}),
    ((64, 96), {64: (64, 96)}),
])
def test_two_by_three_maps(store: AtlasStore, shape: tuple[int, int],
                           levels: dict[int, tuple[int, int]]) -> None:
    e = energy_sequence(2, *shape, seed=4)
    info = store.write_sequence("alpha", "s0", e)
    assert info["levels"] == sorted(levels, reverse=True)
    assert info["shape"] == list(shape)
    for lvl, lshape in levels.items():
        for f in FIELDS:
            assert store.read("alpha", "s0", lvl, f).shape == (2, *lshape)
    np.testing.assert_array_equal(store.read("alpha", "s0", max(levels)), e)


def test_explicit_levels_subset(store: AtlasStore) -> None:
    info = store.write_sequence("alpha", "s0", energy_sequence(2, 256, 256), levels=(256, 64))
    assert info["levels"] == [256, 64]
    assert sorted(store.zarr_group["alpha/s0"].group_keys()) == ["256", "64"]
    with pytest.raises(NotFound, match="no level 128"):
        store.read("alpha", "s0", 128)


def test_levels_must_include_full_resolution(store: AtlasStore) -> None:
    try:
        info = store.write_sequence("alpha", "s0", energy_sequence(2, 256, 256), levels=(128, 64))
    except ValueError:
        return
    assert info["arrays"]["128/energy"]["derived_from"] is not None


# --------------------------------------------------------------------------- values, checksums, stats


def test_checksums_are_sha256_of_decoded_values(store: AtlasStore) -> None:
    e = energy_sequence(3, 128, 128, seed=5)
    info = store.write_sequence("alpha", "s0", e)
    derived = physics.derive_levels(e)
    assert len(info["arrays"]) == 6
    for key, rec in info["arrays"].items():
        lvl, f = key.split("/")
        stored = store.read("alpha", "s0", int(lvl), f)
        assert rec["checksum"] == sha256_values(stored)
        assert rec["checksum"] == sha256_values(derived[int(lvl)].as_dict()[f])
        assert rec["shape"] == list(stored.shape)
        store.verify_array("alpha", "s0", int(lvl), f)
    # checksums differ between arrays with different content
    assert len({r["checksum"] for r in info["arrays"].values()}) == 6


def test_stats_recorded(store: AtlasStore) -> None:
    e = energy_sequence(3, 128, 128, seed=6)
    info = store.write_sequence("alpha", "s0", e)
    assert [s["t"] for s in info["steps"]] == [0, 1, 2]
    for t, step in enumerate(info["steps"]):
        expect = physics.map_stats(e[t])
        for k in ("sum", "mean", "variance", "entropy"):
            assert step[k] == pytest.approx(expect[k], rel=1e-9)
    for key, rec in info["arrays"].items():
        lvl, f = key.split("/")
        vals = store.read("alpha", "s0", int(lvl), f).astype(np.float64)
        assert rec["stats"]["mean"] == pytest.approx(vals.mean(), rel=1e-6, abs=1e-9)
        assert rec["stats"]["min"] == pytest.approx(vals.min())
        assert rec["stats"]["max"] == pytest.approx(vals.max())
        assert rec["stats"]["variance"] == pytest.approx(vals.var(), rel=1e-6, abs=1e-12)
        if f == "energy":
            assert rec["stats"]["entropy"] == pytest.approx(float(np.mean(physics.entropy(vals))))


def test_pyramid_conserves_energy_per_step(store: AtlasStore) -> None:
    e = energy_sequence(3, 256, 384, seed=7)
    e[1] *= 1000.0  # different magnitudes per step
    store.write_sequence("alpha", "s0", e)
    base = store.read("alpha", "s0", 256).astype(np.float64).sum(axis=(1, 2))
    for lvl in (128, 64):
        sums = store.read("alpha", "s0", lvl).astype(np.float64).sum(axis=(1, 2))
        np.testing.assert_allclose(sums, base, rtol=1e-5)
        assert (store.read("alpha", "s0", lvl) >= 0).all()


def test_gradients_equal_physics_gradients_of_stored_level(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(2, 128, 192, seed=8))
    for lvl in (128, 64):
        en = store.read("alpha", "s0", lvl)
        gx, gy = physics.gradients(en)
        np.testing.assert_array_equal(store.read("alpha", "s0", lvl, "grad_x"), gx)
        np.testing.assert_array_equal(store.read("alpha", "s0", lvl, "grad_y"), gy)
        # x is the last axis: a ramp along x has grad_x == slope
    ramp = np.tile(np.arange(64, dtype=np.float32), (1, 64, 1)) + 1
    store.write_sequence("alpha", "ramp", ramp)
    np.testing.assert_allclose(store.read("alpha", "ramp", 64, "grad_x"), 1.0)
    np.testing.assert_allclose(store.read("alpha", "ramp", 64, "grad_y"), 0.0)


def test_read_region_slices(store: AtlasStore) -> None:
    e = energy_sequence(4, 128, 128, seed=9)
    store.write_sequence("alpha", "s0", e)
    got = store.read("alpha", "s0", 128, t=slice(1, 3), y=slice(10, 30), x=slice(5, 70))
    np.testing.assert_array_equal(got, e[1:3, 10:30, 5:70])
    np.testing.assert_array_equal(store.read("alpha", "s0", 128, t=2), e[2])
    low = physics.downsample(e, 64)
    np.testing.assert_array_equal(store.read("alpha", "s0", 64, t=slice(0, 4, 2), y=slice(0, 8)),
                                  low[0:4:2, 0:8])


def test_read_unknown_level_or_field(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(1))
    with pytest.raises(NotFound, match="no level 128"):
        store.read("alpha", "s0", 128)
    with pytest.raises(NotFound, match="unknown field 'pressure'"):
        store.read("alpha", "s0", 64, "pressure")
    with pytest.raises(NotFound, match="unknown sequence"):
        store.read("alpha", "nope", 64)


def test_read_out_of_range_index_is_not_corruption(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(3))
    with pytest.raises(IndexError):
        store.read("alpha", "s0", 64, t=10)


# --------------------------------------------------------------------------- commit protocol


def test_writing_status_is_invisible(store: AtlasStore) -> None:
    store.write_sequence("alpha", "done", energy_sequence(2))
    g = store.zarr_group["alpha"].create_group(
        "half", attributes={"atlasstore_sequence": {"status": "writing"}})
    lg = g.create_group("64")
    lg.create_array("energy", shape=(2, 64, 64), dtype="float32", dimension_names=DIMS)[...] = 1.0
    assert store.sequences("alpha") == ["done"]
    assert store.sequences("alpha", include_incomplete=True) == ["done", "half"]
    assert store.sequence_status("alpha", "half") == "writing"
    assert store.sequence_status("alpha", "absent") is None
    with pytest.raises(NotFound, match="not complete"):
        store.sequence_info("alpha", "half")
    with pytest.raises(NotFound, match="not complete"):
        store.read("alpha", "half", 64)
    assert list(store.iter_sequences()) == [("alpha", "done")]
    # a group without any atlas attributes is not a sequence either
    store.zarr_group["alpha"].create_group("stray")
    assert store.sequences("alpha") == ["done"]


def test_partial_sequence_is_replaced_on_rewrite(store: AtlasStore) -> None:
    g = store.zarr_group["alpha"].create_group(
        "s0", attributes={"atlasstore_sequence": {"status": "writing"}})
    lg = g.create_group("64")
    lg.create_array("energy", shape=(5, 64, 64), dtype="float32")[...] = 7.0
    lg.create_array("junk", shape=(1,), dtype="float32")[...] = 1.0
    g.create_group("128")
    e = energy_sequence(2, 64, 64, seed=10)
    info = store.write_sequence("alpha", "s0", e)  # no overwrite needed for a half-written one
    assert info["status"] == "complete"
    assert store.sequences("alpha") == ["s0"]
    np.testing.assert_array_equal(store.read("alpha", "s0", 64), e)
    assert sorted(store.zarr_group["alpha/s0"].group_keys()) == ["64"]
    assert sorted(store.zarr_group["alpha/s0/64"].array_keys()) == sorted(FIELDS)
    assert not (Path(store.location) / "alpha/s0/64/junk").exists()


def test_crash_mid_write_leaves_invisible_sequence_then_resumes(store: AtlasStore,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    e = energy_sequence(3, 128, 128, seed=11)
    calls = {"n": 0}
    real = SequenceWriter._write_block

    def dying(arr, t0, values):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk gone")
        return real(arr, t0, values)

    monkeypatch.setattr(SequenceWriter, "_write_block", staticmethod(dying))
    monkeypatch.setattr(SequenceWriter, "abort", lambda self: None)  # a crash: no clean-up runs
    with pytest.raises(OSError, match="disk gone"):
        store.write_sequence("alpha", "s0", e)
    monkeypatch.undo()
    assert store.sequences("alpha") == []
    assert store.sequence_status("alpha", "s0") == "writing"
    fresh = AtlasStore.open(store.location)
    assert fresh.sequences("alpha") == []
    info = store.write_sequence("alpha", "s0", e)
    ref = AtlasStore.create(Path(store.location).parent / "ref.zarr")
    ref.create_domain("alpha")
    ref_info = ref.write_sequence("alpha", "s0", e)
    assert {k: v["checksum"] for k, v in info["arrays"].items()} == \
        {k: v["checksum"] for k, v in ref_info["arrays"].items()}


def test_sequence_exists_without_overwrite(store: AtlasStore) -> None:
    e = energy_sequence(2, seed=12)
    store.write_sequence("alpha", "s0", e)
    before = listing(store.location)
    with pytest.raises(SequenceExists, match="alpha/s0 already exists"):
        store.write_sequence("alpha", "s0", energy_sequence(2, seed=13))
    assert listing(store.location) == before
    np.testing.assert_array_equal(store.read("alpha", "s0", 64), e)
    e2 = energy_sequence(3, seed=14)
    store.write_sequence("alpha", "s0", e2, overwrite=True)
    np.testing.assert_array_equal(store.read("alpha", "s0", 64), e2)
    assert store.sequence_info("alpha", "s0")["n_steps"] == 3
    # a second reader sees the new version too
    np.testing.assert_array_equal(AtlasStore.open(store.location).read("alpha", "s0", 64), e2)


def test_overwrite_with_bad_data_keeps_the_old_sequence(store: AtlasStore) -> None:
    e = energy_sequence(2, seed=15)
    store.write_sequence("alpha", "s0", e)
    before = listing(store.location)
    bad = e.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(EnergyMapError, match="non-finite"):
        store.write_sequence("alpha", "s0", bad, overwrite=True)
    with pytest.raises(EnergyMapError, match="negative"):
        store.write_sequence("alpha", "s0", -np.ones((1, 129, 129), np.float32), overwrite=True)
    assert listing(store.location) == before
    np.testing.assert_array_equal(store.read("alpha", "s0", 64), e)


def test_delete_sequence(store: AtlasStore) -> None:
    store.write_sequence("alpha", "s0", energy_sequence(2))
    store.write_sequence("alpha", "s1", energy_sequence(2, seed=1))
    assert store.sequence_info("alpha", "s0")["n_steps"] == 2  # cached
    store.delete_sequence("alpha", "s0")
    assert store.sequences("alpha") == ["s1"]
    assert not (Path(store.location) / "alpha" / "s0").exists()
    with pytest.raises(NotFound):
        store.sequence_info("alpha", "s0")
    store.delete_sequence("alpha", "s0")  # idempotent
    with pytest.raises(InvalidName):
        store.delete_sequence("alpha", "../s1")
    assert store.sequences("alpha") == ["s1"]


def test_read_only_refuses_writes(tmp_path: Path) -> None:
    p = tmp_path / "a.zarr"
    simple_store(p)
    before = listing(p)
    r = AtlasStore.open(p)
    with pytest.raises(StoreError, match="read-only"):
        r.write_sequence("alpha", "s1", energy_sequence(1))
    with pytest.raises(StoreError, match="read-only"):
        r.create_domain("beta")
    with pytest.raises(StoreError, match="read-only"):
        r.delete_sequence("alpha", "s0")
    assert listing(p) == before
    assert r.sequences("alpha") == ["s0"]


# --------------------------------------------------------------------------- bad input


def _bad_arrays() -> list[tuple[str, object, str]]:
    good = energy_sequence(2, 64, 64)
    nan = good.copy()
    nan[1, 3, 4] = np.nan
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    ninf = good.copy()
    ninf[0, 5, 5] = -np.inf
    neg = good.copy()
    neg[1, 2, 2] = -1e-3
    return [
        ("nan", nan, "non-finite"),
        ("inf", inf, "non-finite"),
        ("-inf", ninf, "non-finite"),
        ("negative", neg, "negative"),
        ("int", np.ones((2, 64, 64), np.int32), "not a floating-point"),
        ("bool", np.ones((2, 64, 64), bool), "not a floating-point"),
        ("complex", np.ones((2, 64, 64), np.complex64), "not a floating-point"),
        ("2d", good[0], r"expected \(time, y, x\)"),
        ("4d", good[None], r"expected \(time, y, x\)"),
        ("1d", np.ones(64, np.float32), "at least 2 dimensions"),
        ("empty-time", np.ones((0, 64, 64), np.float32), "empty"),
        ("nan-undeclared", np.where(np.eye(64, dtype=bool), np.nan, 1.0)[None],
         r"64 NaN.*nan_is_missing=True"),
        ("overflow", np.full((1, 64, 64), 1e300), "overflow"),
    ]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("label,data,match", _bad_arrays(), ids=[b[0] for b in _bad_arrays()])
def test_bad_sequences_refused_and_nothing_written(store: AtlasStore, label: str, data: object,
                                                   match: str) -> None:
    store.write_sequence("alpha", "keep", energy_sequence(1))
    before = listing(store.location)
    with pytest.raises(EnergyMapError, match=match):
        store.write_sequence("alpha", "s0", data)
    assert listing(store.location) == before
    assert store.sequences("alpha", include_incomplete=True) == ["keep"]


def test_bad_step_records_refused_and_nothing_written(store: AtlasStore) -> None:
    before = listing(store.location)
    e = energy_sequence(2)
    with pytest.raises(ValueError, match="1 step records for 2 time steps"):
        store.write_sequence("alpha", "s0", e, steps=[{"t": 0, "sum": 1.0, "mean": 1.0,
                                                      "variance": 0.0, "entropy": 1.0}])
    with pytest.raises(SchemaError, match="variance"):  # found at the commit: all deleted
        store.write_sequence("alpha", "s0", e, steps=[{"t": t, "variance": -1.0} for t in range(2)])
    with pytest.raises(SchemaError, match="sequence alpha/s0 attributes is invalid"):
        store.write_sequence("alpha", "s0", e, generation={"seed": "not-an-int"})
    assert listing(store.location) == before


BAD_NAMES = [
    ("slash", "a/b", "path separator"),
    ("backslash", "a\\b", "path separator"),
    ("dotdot", "..", r"'\.\.'"),
    ("dotdot-inside", "a..b", r"'\.\.'"),
    ("parent-escape", "../x", "path separator|'\\.\\.'"),
    ("space", "a b", "whitespace"),
    ("leading-space", " a", "whitespace"),
    ("trailing-space", "a ", "whitespace"),
    ("tab", "a\tb", "whitespace"),
    ("newline", "a\nb", "whitespace"),
    ("nul", "a\x00b", "control"),
    ("bell", "a\x07b", "control"),
    ("del", "a\x7fb", "control|must start"),
    ("empty", "", "empty"),
    ("reserved-runs", "_runs", "reserved|must start"),
    ("dot", ".", "must start"),
    ("hidden", ".hidden", "must start"),
    ("unicode", "é", "must start"),
    ("too-long", "a" * 129, "at most 128"),
]


@pytest.mark.parametrize("label,name,match", BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_bad_domain_names_refused_and_nothing_written(store: AtlasStore, label: str, name: str,
                                                      match: str) -> None:
    before, before_dirs = listing(store.location), dirs(store.location)
    with pytest.raises(InvalidName, match=match):
        store.create_domain(name)
    with pytest.raises(InvalidName, match=match):
        store.write_sequence(name, "s0", energy_sequence(1))
    with pytest.raises(InvalidName):
        store.sequences(name)
    assert listing(store.location) == before
    assert dirs(store.location) == before_dirs
    assert store.domains() == ["alpha"]


@pytest.mark.parametrize("label,name,match", BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_bad_sequence_names_refused_and_nothing_written(store: AtlasStore, label: str, name: str,
                                                        match: str) -> None:
    before, before_dirs = listing(store.location), dirs(store.location)
    with pytest.raises(InvalidName, match=match):
        store.write_sequence("alpha", name, energy_sequence(1))
    assert listing(store.location) == before
    assert dirs(store.location) == before_dirs


def test_invalid_name_is_a_value_error_and_store_error() -> None:
    assert issubclass(InvalidName, ValueError) and issubclass(InvalidName, StoreError)


def test_non_string_name_refused(store: AtlasStore) -> None:
    with pytest.raises(InvalidName, match="must be a string"):
        store.write_sequence("alpha", 5, energy_sequence(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["domain", "sequence"])
def test_zarr_metadata_name_refused(store: AtlasStore, where: str) -> None:
    before = listing(store.location)
    with pytest.raises(InvalidName):
        if where == "domain":
            store.create_domain("zarr.json")
        else:
            store.write_sequence("alpha", "zarr.json", energy_sequence(1))
    assert listing(store.location) == before


def test_unknown_domain(store: AtlasStore) -> None:
    before = listing(store.location)
    with pytest.raises(NotFound, match="unknown domain 'beta'.*alpha"):
        store.write_sequence("beta", "s0", energy_sequence(1))
    with pytest.raises(NotFound, match="unknown domain 'beta'"):
        store.sequences("beta")
    # (the message says "unknown sequence beta/s0": NotFound for the domain is a KeyError and
    # sequence_info's `except KeyError` rewrites it; still a clear NotFound naming beta)
    with pytest.raises(NotFound, match="beta"):
        store.read("beta", "s0", 64)
    assert listing(store.location) == before
    assert "beta" not in str(before)


def test_create_domain_records_preset_and_is_idempotent(store: AtlasStore) -> None:
    from atlasstore.physics import synth

    preset = synth.load_preset("plasma_physics").to_dict()
    store.create_domain("plasma", preset)
    assert store.domain_info("plasma")["preset"]["pattern"] == "turbulent"
    store.create_domain("plasma", preset)  # exist_ok by default
    with pytest.raises(StoreError, match="already exists"):
        store.create_domain("plasma", preset, exist_ok=False)
    with pytest.raises(SchemaError):
        store.create_domain("bad", {"name": "bad", "pattern": 5})
    assert store.domains() == ["alpha", "plasma"]


def test_reserved_runs_group_not_listed_as_domain(tmp_path: Path) -> None:
    from atlasstore.runs.generate import Plan, generate

    p = tmp_path / "g.zarr"
    generate(p, Plan(domains=("plasma_physics",), sequences=1, steps=2, shape=(64, 64)),
             scheduler="serial", catalog=None)
    s = AtlasStore.open(p)
    assert "_runs" in set(s.zarr_group.group_keys())
    assert s.domains() == ["plasma_physics"]


# --------------------------------------------------------------------------- plain tools


@pytest.fixture(scope="module")
def tool_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    p = tmp_path_factory.mktemp("tools") / "atlas.zarr"
    s = AtlasStore.create(p)
    s.create_domain("dom")
    e = energy_sequence(3, 256, 384, seed=20)
    s.write_sequence("dom", "seq", e)
    return p, e


def test_xarray_open_zarr_reads_a_level(tool_store: tuple[Path, np.ndarray]) -> None:
    import xarray as xr

    p, e = tool_store
    ds = xr.open_zarr(str(p), group="dom/seq/128", consolidated=False)
    assert set(ds.data_vars) == set(FIELDS)
    for f in FIELDS:
        assert ds[f].dims == ("time", "y", "x")
        assert ds[f].dtype == np.float32
        assert ds[f].attrs["units"]
        assert ds[f].attrs["long_name"]
    assert dict(ds.sizes) == {"time": 3, "y": 128, "x": 192}
    np.testing.assert_array_equal(ds["energy"].values, physics.downsample(e, 128))
    ds.close()


def test_xarray_open_datatree(tool_store: tuple[Path, np.ndarray]) -> None:
    import xarray as xr

    p, e = tool_store
    tree = xr.open_datatree(str(p), engine="zarr", consolidated=False)
    try:
        assert "atlasstore" in tree.attrs
        seq = tree["dom/seq"]
        assert "multiscales" in seq.attrs
        assert sorted(seq.children) == ["128", "256", "64"]
        lvl = tree["dom/seq/64"]
        assert lvl["energy"].dims == ("time", "y", "x")
        assert lvl["energy"].shape == (3, 64, 96)
        np.testing.assert_array_equal(tree["dom/seq/256"]["energy"].values, e)
    finally:
        tree.close()


def test_zarr_open_group_sees_dimension_names_and_attributes(tool_store: tuple[Path, np.ndarray]) -> None:
    p, _ = tool_store
    g = zarr.open_group(str(p), mode="r")
    assert g.metadata.zarr_format == 3
    a = g["dom/seq/64/grad_x"]
    assert a.metadata.dimension_names == ("time", "y", "x")
    assert dict(a.attrs)["units"] == "energy / pixel^2"
    assert "atlasstore_sequence" in dict(g["dom/seq"].attrs)
    assert dict(g["dom"].attrs)["atlasstore_domain"]["name"] == "dom"


@pytest.mark.parametrize("steps, shards", [(3, 1), (10, 1), (128, 1), (130, 2)])
def test_default_layout_shards_whole_inner_chunks(tmp_path: Path, steps: int, shards: int) -> None:
    """Shards cover whole 4-step inner chunks (a 10-step sequence is one 12-step shard, not an
    8-step shard plus a 2-step one), so a short sequence is one object per array."""
    from atlasstore.store import Layout

    store = AtlasStore.create(tmp_path / "a.zarr", layout=Layout())
    store.create_domain("alpha")
    store.write_sequence("alpha", "s0", np.ones((steps, 64, 64), np.float32))
    arr = store.array("alpha", "s0", 64, "energy")
    assert arr.chunks[0] == min(4, steps) and arr.shards[0] % arr.chunks[0] == 0
    assert len(chunk_files(store.location, "alpha/s0/64/energy")) == shards
    store.verify_array("alpha", "s0", 64, "energy")


# --------------------------------------------------------------------------- consolidated metadata
#
# Each sequence's zarr.json carries Zarr's inline consolidated metadata of its levels and arrays,
# written in the commit itself (README "Store layout"). No root document lists the sequences:
# that would make every open O(store) and be a document every concurrent writer rewrites.


def test_plain_open_of_a_sequence_does_not_warn(tool_store: tuple[Path, np.ndarray]) -> None:
    import xarray as xr

    p, e = tool_store
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*consolidated metadata.*")
        ds = xr.open_zarr(f"{p}/dom/seq", group="128")
        tree = xr.open_datatree(f"{p}/dom/seq", engine="zarr")
        g = zarr.open_group(f"{p}/dom/seq", mode="r")
    try:
        np.testing.assert_array_equal(ds["energy"].values, physics.downsample(e, 128))
        assert ds["grad_x"].dims == ("time", "y", "x") and ds["grad_x"].attrs["units"]
        assert sorted(tree.children) == ["128", "256", "64"]
        assert "multiscales" in tree.attrs and "atlasstore_sequence" in tree.attrs
        np.testing.assert_array_equal(tree["256"]["energy"].values, e)
        assert g.metadata.consolidated_metadata is not None
        assert sorted(g.group_keys()) == ["128", "256", "64"]
    finally:
        ds.close()
        tree.close()


def test_commit_document_equals_what_zarr_consolidate_metadata_writes(
        tool_store: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """The hand-built consolidated metadata of the commit is exactly Zarr's own."""
    p = copy_store(tool_store[0], tmp_path / "copy.zarr")
    doc = (p / "dom/seq/zarr.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: "not part of the Zarr format 3 specification"
        zarr.consolidate_metadata(str(p), path="dom/seq")
    assert json.loads((p / "dom/seq/zarr.json").read_text()) == json.loads(doc)


def test_consolidated_path_sees_sequences_committed_after_an_earlier_open(tmp_path: Path) -> None:
    import xarray as xr

    p = tmp_path / "atlas.zarr"
    s = simple_store(p, sequences=(("s0", 2),))
    early = AtlasStore.open(p)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*consolidated metadata.*")
        xr.open_zarr(f"{p}/alpha/s0", group="64").close()
        s.write_sequence("alpha", "s1", energy_sequence(2, seed=5))
        ds = xr.open_zarr(f"{p}/alpha/s1", group="64")
        np.testing.assert_array_equal(ds["energy"].values, s.read("alpha", "s1", 64))
        ds.close()
    assert early.sequences("alpha") == ["s0", "s1"]
    # A root consolidation someone made with zarr (a snapshot that goes stale) must not hide
    # later commits from the store's own reads.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(p))
    s.write_sequence("alpha", "s2", energy_sequence(2, seed=6))
    again = AtlasStore.open(p)
    assert again.sequences("alpha") == ["s0", "s1", "s2"]
    np.testing.assert_array_equal(again.read("alpha", "s2", 64), energy_sequence(2, seed=6))


def test_incomplete_sequence_is_invisible_through_the_consolidated_path(
        store: AtlasStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import xarray as xr

    real = SequenceWriter._write_block

    def dying(arr, t0, values):  # type: ignore[no-untyped-def]
        if arr.path.endswith("grad_x"):
            raise OSError("killed")
        return real(arr, t0, values)

    monkeypatch.setattr(SequenceWriter, "_write_block", staticmethod(dying))
    monkeypatch.setattr(SequenceWriter, "abort", lambda self: None)  # a crash: no clean-up runs
    with pytest.raises(OSError, match="killed"):
        store.write_sequence("alpha", "s0", energy_sequence(3, 128, 128, seed=3))
    monkeypatch.undo()
    loc = f"{store.location}/alpha/s0"
    assert store.sequence_status("alpha", "s0") == "writing"
    assert (Path(loc) / "128" / "energy" / "zarr.json").exists()  # written, not committed
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*consolidated metadata.*")
        g = zarr.open_group(loc, mode="r")
        assert list(g.group_keys()) == [] and list(g.array_keys()) == []
        with pytest.raises(KeyError):
            xr.open_zarr(loc, group="128")
        with pytest.raises(KeyError):
            g["128/energy"]
    # committed: everything appears
    store.write_sequence("alpha", "s0", energy_sequence(3, 128, 128, seed=3))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*consolidated metadata.*")
        assert sorted(zarr.open_group(loc, mode="r").group_keys()) == ["128", "64"]
        xr.open_zarr(loc, group="128").close()


@pytest.mark.parametrize("content", ["[]", "{", "null", '{"node_type": "group", "attributes": 5}'])
def test_damaged_sequence_document_is_an_incomplete_sequence(store: AtlasStore, content: str) -> None:
    from atlasstore.audit import audit

    store.write_sequence("alpha", "s0", energy_sequence(2, seed=1))
    store.write_sequence("alpha", "s1", energy_sequence(2, seed=2))
    (Path(store.location) / "alpha" / "s1" / "zarr.json").write_text(content)
    fresh = AtlasStore.open(store.location)
    assert fresh.sequences("alpha") == ["s0"]
    assert fresh.sequences("alpha", include_incomplete=True) == ["s0", "s1"]
    assert fresh.sequence_status("alpha", "s1") is None
    with pytest.raises(NotFound, match="alpha/s1 is not complete"):
        fresh.sequence_info("alpha", "s1")
    assert [(p.path, p.kind) for p in audit(fresh).problems] == [("alpha/s1", "incomplete")]
