"""Locations: what is remote, the default catalog beside a store, atomic whole-file writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atlasstore import cli
from atlasstore.io.locations import (
    atomic_write,
    beside_store,
    default_catalog_location,
    is_remote,
    local_path,
)
from atlasstore.io.provenance import code_version, utc_now


def test_remote_and_local_locations() -> None:
    assert is_remote("s3://bucket/x.zarr") and is_remote("memory://x")
    assert not is_remote("file:///tmp/x.zarr") and not is_remote("/tmp/x.zarr")
    assert local_path("file:///tmp/x.zarr") == Path("/tmp/x.zarr")
    assert local_path("s3://bucket/x.zarr") is None


@pytest.mark.parametrize(("store", "catalog"), [
    ("atlas.zarr", "atlas.catalog.sqlite"),
    ("/data/exp.a", "/data/exp.a.catalog.sqlite"),
    ("/data/exp.b", "/data/exp.b.catalog.sqlite"),
    ("/data/exp.b.zarr", "/data/exp.b.catalog.sqlite"),
    ("/data/run.v2/", "/data/run.v2.catalog.sqlite"),
    ("file:///data/x.zarr", "/data/x.catalog.sqlite"),
])
def test_default_catalog_is_named_after_the_whole_store_name(store: str, catalog: str) -> None:
    assert default_catalog_location(store) == catalog


def test_dotted_store_names_get_their_own_catalogs(tmp_path: Path) -> None:
    """Regression: Path.with_suffix("") mapped exp.a and exp.b to one exp.catalog.sqlite, so the
    sync of one store pruned the other's sequences."""
    from atlasstore.catalog import SQLiteCatalog

    stores = {tmp_path / "exp.a": "plasma_physics", tmp_path / "exp.b": "fluid_dynamics"}
    for store, domain in stores.items():
        assert cli.main(["generate", "--store", str(store), "--domains", domain, "--sequences", "1",
                         "--steps", "2", "--scheduler", "serial", "--quiet"]) == 0
    assert cli.main(["catalog", "sync", "--store", str(tmp_path / "exp.a")]) == 0
    for store, domain in stores.items():
        with SQLiteCatalog(default_catalog_location(store)) as cat:
            assert cat.sequence_keys() == [f"{domain}/seq-00000"]


def test_remote_default_catalog_lives_in_the_cache_folder(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    a = default_catalog_location("s3://bucket/team/a.zarr")
    b = default_catalog_location("s3://bucket/team/b.zarr")
    assert a != b
    assert Path(a).parent == tmp_path / "cache" / "catalogs"
    assert Path(a).name.startswith("s3-bucket-team-a-") and a.endswith(".catalog.sqlite")
    with pytest.raises(ValueError, match="remote"):
        beside_store("s3://bucket/a.zarr", ".x")


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    p = tmp_path / "run.json"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new"
    assert os.listdir(tmp_path) == ["run.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "run.json"
    atomic_write(p, "old")

    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, "new")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["run.json"]


def test_provenance_formats() -> None:
    assert utc_now().endswith("+00:00") and "T" in utc_now()
    assert code_version().startswith("0.")
