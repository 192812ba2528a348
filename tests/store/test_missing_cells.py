"""Missing cells (a land mask, a gap) through the store: declared, stored as NaN, left out of
statistics, coarsened and differentiated by the documented rules, audited, catalogued."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from atlasstore.audit import audit
from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.sync import sync_catalog
from atlasstore.errors import EnergyMapError
from atlasstore.physics import fields as physics
from atlasstore.query import Query
from atlasstore.store.atlas_store import AtlasStore
from tests.helpers.store_fixtures import listing


def _masked_temperature(seed: int = 0, n: int = 3) -> np.ndarray:
    """(n, 64, 128) temperatures with a 'continent' of missing cells, one whole missing 4x4
    block at level 32 (rows 0-1 x cols 0-1 of level 32 is rows 0-3 x cols 0-3), and one cell
    missing alone (its neighbours' gradients must go missing too)."""
    rng = np.random.default_rng(seed)
    t = 280.0 + 10.0 * rng.standard_normal((n, 64, 128))
    t[:, 10:30, 40:70] = np.nan
    t[:, 0:2, 0:2] = np.nan      # a block of level 32 with no valid cell
    t[:, 50, 100] = np.nan
    return t


@pytest.fixture
def store(tmp_path: Path) -> AtlasStore:
    s = AtlasStore.create(tmp_path / "s.zarr")
    s.create_domain("sea")
    return s


def test_undeclared_nan_is_refused_with_the_option_that_keeps_it(store: AtlasStore) -> None:
    before = listing(store.location)
    with pytest.raises(EnergyMapError, match=r"\(1815 NaN, 0 inf\).*nan_is_missing=True"):
        store.write_sequence("sea", "t", _masked_temperature(), field="temperature")
    assert listing(store.location) == before


def test_inf_is_refused_even_where_nan_is_missing(store: AtlasStore) -> None:
    t = _masked_temperature()
    t[0, 5, 5] = np.inf
    with pytest.raises(EnergyMapError, match="1 inf"):
        store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True)


def test_missing_cells_are_nan_exactly_there_for_plain_xarray(store: AtlasStore) -> None:
    t = _masked_temperature()
    info = store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True,
                                smallest=16)
    assert info["levels"] == [64, 32, 16]
    ds = xr.open_zarr(Path(store.location) / "sea" / "t", group="64")
    got = ds["temperature"].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(t))
    np.testing.assert_array_equal(got[~np.isnan(got)], t[~np.isnan(t)].astype(np.float32))
    valid = int((~np.isnan(t[0])).sum())
    assert [s["valid_cells"] for s in info["steps"]] == [valid] * 3
    stats = info["arrays"]["64/temperature"]["stats"]
    assert stats["valid_fraction"] == pytest.approx(valid / t[0].size)
    # statistics are over the valid cells
    assert info["steps"][1]["mean"] == pytest.approx(np.nanmean(t[1].astype(np.float32)), rel=1e-9)
    assert info["steps"][1]["min"] == pytest.approx(np.nanmin(t[1].astype(np.float32)))
    assert stats["mean"] == pytest.approx(float(np.nanmean(t.astype(np.float32))), rel=1e-6)


def test_a_masked_array_declares_its_cells_and_a_nan_elsewhere_is_still_bad(
        store: AtlasStore) -> None:
    t = _masked_temperature()
    m = np.ma.masked_invalid(t)
    info = store.write_sequence("sea", "m", m, field="temperature")
    assert info["steps"][0]["valid_cells"] == int(m[0].count())
    filled = np.ma.masked_array(np.nan_to_num(t, nan=-999.0), mask=np.isnan(t))
    store.write_sequence("sea", "f", filled, field="temperature")  # masked fill values: missing
    np.testing.assert_array_equal(np.isnan(store.read("sea", "f", 64, "temperature")), np.isnan(t))
    bad = m.copy()
    bad.data[0, 60, 60] = np.nan  # under an unmasked cell: not declared
    with pytest.raises(EnergyMapError, match="1 NaN"):
        store.write_sequence("sea", "b", bad, field="temperature")


def test_intensive_pyramid_is_the_mean_of_valid_cells(store: AtlasStore) -> None:
    t = _masked_temperature()
    store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True, smallest=16)
    t32 = t.astype(np.float32).astype(np.float64)
    blocks = t32.reshape(3, 32, 2, 64, 2)
    sums = np.nansum(blocks, axis=(2, 4))
    counts = (~np.isnan(blocks)).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.where(counts > 0, sums / counts, np.nan)
    got = store.read("sea", "t", 32, "temperature")
    assert np.isnan(got[:, 0, 0]).all()  # a block with no valid cell is missing
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6)


def test_extensive_pyramid_sums_valid_cells_and_conserves_their_energy(store: AtlasStore) -> None:
    rng = np.random.default_rng(1)
    e = rng.gamma(2.0, 1.0, (2, 64, 64)).astype(np.float32)
    e[:, 0:2, 0:2] = np.nan
    e[:, 5, 7] = np.nan
    info = store.write_sequence("sea", "e", e, nan_is_missing=True, smallest=16)
    for lvl in (32, 16):
        got = store.read("sea", "e", lvl)
        np.testing.assert_allclose(np.nansum(got, axis=(1, 2), dtype=np.float64),
                                   np.nansum(e, axis=(1, 2), dtype=np.float64), rtol=1e-6)
    assert np.isnan(store.read("sea", "e", 32)[:, 0, 0]).all()
    assert not np.isnan(store.read("sea", "e", 32)[:, 2, 3]).any()  # 5,7 is one of four cells
    assert info["steps"][0]["sum"] == pytest.approx(float(np.nansum(e[0], dtype=np.float64)))
    h = physics.entropy(np.nan_to_num(e[0]))
    assert info["steps"][0]["entropy"] == pytest.approx(h)
    assert 0 < info["arrays"]["32/energy"]["stats"]["valid_fraction"] < 1


def test_gradients_are_missing_where_their_stencil_needs_a_missing_cell(store: AtlasStore) -> None:
    t = _masked_temperature()
    store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True)
    gx = store.read("sea", "t", 64, "grad_x")
    gy = store.read("sea", "t", 64, "grad_y")
    # the lone missing cell (50, 100): itself and its four stencil neighbours
    for y, x in ((50, 100), (50, 99), (50, 101)):
        assert np.isnan(gx[:, y, x]).all()
    for y, x in ((50, 100), (49, 100), (51, 100)):
        assert np.isnan(gy[:, y, x]).all()
    assert not np.isnan(gx[:, 49, 100]).any() and not np.isnan(gy[:, 50, 99]).any()
    # away from the mask: numpy's central differences of the stored float32 values
    t32 = t.astype(np.float32).astype(np.float64)
    want_y, want_x = np.gradient(t32, axis=(1, 2))
    np.testing.assert_allclose(gx[:, 40:48, 80:90], want_x[:, 40:48, 80:90], rtol=1e-5)
    np.testing.assert_allclose(gy[:, 40:48, 80:90], want_y[:, 40:48, 80:90], rtol=1e-5)
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(want_x) | np.isnan(t))


def test_a_step_with_no_valid_cell_is_refused_and_nothing_is_left(store: AtlasStore) -> None:
    t = _masked_temperature()
    t[1] = np.nan
    before = listing(store.location)
    with pytest.raises(EnergyMapError, match="step 1: every cell is missing"):
        store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True)
    assert listing(store.location) == before


def test_checksums_cover_missing_cells_and_do_not_depend_on_the_nan_payload(
        store: AtlasStore) -> None:
    t = _masked_temperature().astype(np.float32)
    a = store.write_sequence("sea", "a", t, field="temperature", nan_is_missing=True)
    odd = t.copy()
    bits = odd.view(np.uint32)
    bits[np.isnan(odd)] = 0x7FC00ABC  # another quiet NaN
    b = store.write_sequence("sea", "b", odd, field="temperature", nan_is_missing=True)
    assert a["arrays"]["64/temperature"]["checksum"] == b["arrays"]["64/temperature"]["checksum"]
    assert audit(store, verify=True).ok
    # a missing cell that becomes a value is caught: by the checksum, as every stored byte is
    arr = zarr.open_array(Path(store.location) / "sea" / "a" / "64" / "temperature", mode="r+")
    v = arr[0]
    v[10, 40] = 1.0
    arr[0] = v
    report = audit(store, verify=True)
    assert [p.kind for p in report.problems] == ["checksum"]


def test_the_audit_checks_missing_cells_against_the_commit(store: AtlasStore) -> None:
    t = _masked_temperature()
    store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True, smallest=16)
    assert audit(store, verify=True).ok
    from atlasstore.audit import _invariants, _missing_cells

    rec = store.sequence_info("sea", "t")["arrays"]["32/temperature"]
    good = store.read("sea", "t", 32, "temperature")
    assert _missing_cells("p", good, rec) == []
    wrong = good.copy()
    wrong[0, 5, 5] = np.nan
    assert "recorded" in _missing_cells("p", wrong, rec)[0].message
    base = store.read("sea", "t", 64, "temperature")
    assert _invariants("p", True, "intensive", 32, good, base, 0.05) == []
    shifted = good.copy()
    shifted[0, 7, 7] += 1.0
    assert "block mean" in _invariants("p", True, "intensive", 32, shifted, base, 0.05)[0].message


def test_catalog_records_valid_cells_and_query_filters_use_valid_cells(
        store: AtlasStore, tmp_path: Path) -> None:
    t = _masked_temperature()
    t[2, 40:, :] = np.nan  # step 2 loses the southern half
    info = store.write_sequence("sea", "t", t, field="temperature", nan_is_missing=True)
    with SQLiteCatalog(tmp_path / "c.db") as cat:
        sync_catalog(store, cat)
        got = [ts.valid_cells for ts in cat.get_timesteps("sea/t")]
        assert got == [s["valid_cells"] for s in info["steps"]]
        assert got[2] < got[0]
        fractions = {a.key: a.stats["valid_fraction"] for a in cat.get_arrays("sea/t")}
        assert fractions["sea/t/64/temperature"] == pytest.approx(
            info["arrays"]["64/temperature"]["stats"]["valid_fraction"])
    m2 = info["steps"][2]["mean"]
    q = Query(store, domains=("sea",), mean=(m2 - 1e-9, m2 + 1e-9))
    windows = q.windows()
    assert [w.t0 for w in windows] == [2]
    got = q.read_windows(windows)["temperature"]
    np.testing.assert_array_equal(np.isnan(got[0, 0]), np.isnan(t[2]))
