"""`atlas ls`, `show` and `stats` on any grid: honest labels (field, unit, kind, origin, spans,
synthetic stand-ins), cheap listings, and quicklooks checked from the matplotlib objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.cli.labels import SYNTHETIC
from atlasstore.cli.show import MISSING_COLOUR, quicklook
from atlasstore.records import Axis, Coordinates, FieldSpec
from atlasstore.runs.generate import sequence_seed
from atlasstore.runs.ingest import import_well
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_captured as run
from helpers.store_fixtures import copy_store
from helpers.well_fixture import write_well_file

pytest.importorskip("matplotlib")

NOTE = "note: plasma_physics: " + SYNTHETIC.format(s="")
#: the lab store's grids: an odd one (a single level), a small even one, a wide one (2 levels)
GRIDS = {"odd": (37, 49), "small": (18, 30), "wide": (128, 384)}
#: cells of lab/odd that are missing (declared NaN) at step 1
HOLES = ((5, 7), (5, 8), (20, 30))
#: the one sequence of the Well import
WELL_SEQ = "trl-traj0000"


@pytest.fixture(scope="module")
def gen_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`atlas generate`: plasma_physics, one 256x256 sequence of 2 steps."""
    p = tmp_path_factory.mktemp("gen") / "atlas.zarr"
    assert cli.main(["init", "--store", str(p)]) == 0
    assert cli.main(["generate", "--store", str(p), "--domains", "plasma_physics", "--sequences",
                     "1", "--steps", "2", "--scheduler", "serial", "--no-catalog", "--seed", "4",
                     "--quiet"]) == 0
    return p


def _lab_field(ny: int, nx: int) -> np.ndarray:
    """A temperature near 290 K with one hot spot of 10^4 K at (3, 4)."""
    a = np.random.default_rng(ny * nx).normal(290.0, 5.0, (3, ny, nx)).astype(np.float32)
    a[:, 3, 4] = 1e4
    return a


@pytest.fixture(scope="module")
def lab_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sequences written through the API with latitude/longitude and hours, on odd grids; lab/odd
    has missing cells (declared NaN) at step 1."""
    p = tmp_path_factory.mktemp("lab") / "lab.zarr"
    s = AtlasStore.create(p)
    s.create_domain("lab")
    for sid, (ny, nx) in GRIDS.items():
        coords = Coordinates(y=Axis(tuple(np.linspace(-10, 10, ny)), "degrees_north", "latitude"),
                             x=Axis(tuple(np.linspace(0, 50, nx)), "degrees_east"),
                             time=(0.0, 6.0, 12.0), time_units="hours")
        values = _lab_field(ny, nx)
        if sid == "odd":
            for y, x in HOLES:
                values[1, y, x] = np.nan
        s.write_sequence("lab", sid, values, field=FieldSpec("t2m", "intensive", "K"),
                         coords=coords, nan_is_missing=sid == "odd")
    return p


@pytest.fixture(scope="module")
def well_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `import well` of a TRL-like file (density, 384x128 maps) into a domain named like
    a synthetic preset: imported data is not synthetic, whatever its domain is called."""
    root = tmp_path_factory.mktemp("well")
    write_well_file(root / "trl.h5", n_traj=1, n_steps=3)
    rep = import_well(root / "w.zarr", [root / "trl.h5"], field="density",
                      domain="turbulent_radiative_layer", scheduler="serial")
    assert rep.ok and rep.written == 1
    return root / "w.zarr"


# --------------------------------------------------------------------------- ls


def test_ls_names_field_kind_grid_and_a_generated_sequences_seed(
        gen_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "-l", "plasma_physics", "--store", str(gen_store))
    assert code == 0
    seed = sequence_seed(4, "plasma_physics", 0)
    assert out.splitlines() == [
        f"seq-00000\t2 steps\t256x256\tlevels 256,128,64\tenergy [energy / pixel] (extensive)"
        f"\tgenerate seed {seed} (synthetic)", NOTE]
    code, out, _ = run(capsys, "ls", "-l", "--store", str(gen_store))
    assert out.splitlines() == [
        "plasma_physics\t1 sequences\tenergy (extensive)\tgenerate (synthetic)", NOTE]


def test_ls_of_api_data_names_coordinate_and_time_spans_and_no_seed(
        lab_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "-l", "lab", "--store", str(lab_store))
    assert code == 0
    span = "latitude -10..10 degrees_north, x 0..50 degrees_east, time 0..12 hours"
    valid = f"\tvalid {100 * (1 - len(HOLES) / (3 * 37 * 49)):.1f} %"  # 3 cells of 3 steps
    assert out.splitlines() == [
        f"{sid}\t3 steps\t{ny}x{nx}\tlevels {levels}\tt2m [K] (intensive)\t{span}"
        f"{valid if sid == 'odd' else ''}\tapi"
        for sid, (ny, nx), levels in sorted(
            (sid, g, lv) for (sid, g), lv in zip(GRIDS.items(), ("37", "18", "128,64"),
                                                 strict=True))]
    assert "seed" not in out and "synthetic" not in out


def test_ls_of_imported_data_names_its_source_and_is_not_synthetic(
        well_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "-l", "turbulent_radiative_layer", "--store", str(well_store))
    assert code == 0
    (line,) = out.splitlines()
    cols = line.split("\t")
    assert cols[2:5] == ["384x128", "levels 128,64", "density [unknown] (intensive)"]
    # float32 linspace axes are uniform to float32's precision: their full span is shown
    assert cols[5] == "y -1..2, x -0.5..0.5, time 0..3.19407"
    assert cols[-1] == "import well: trl.h5"
    assert "seed" not in line and "note" not in out
    code, out, _ = run(capsys, "ls", "-l", "--store", str(well_store))
    assert out.splitlines() == ["turbulent_radiative_layer\t1 sequences\tdensity (intensive)\timport"]


def test_ls_reads_documents_only(tmp_path: Path, lab_store: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Every array's data (chunks, coordinate values) removed: ls answers the same."""
    _, before, _ = run(capsys, "ls", "-l", "lab", "--store", str(lab_store))
    p = copy_store(lab_store, tmp_path / "docs-only.zarr")
    data = [f for f in (p / "lab").rglob("*") if f.is_file() and f.name != "zarr.json"]
    assert len(data) >= 3 * 6  # every sequence's field, gradient and coordinate shards
    for f in data:
        f.unlink()
    code, after, err = run(capsys, "ls", "-l", "lab", "--store", str(p))
    assert code == 0, err
    assert after == before
    code, _, _ = run(capsys, "ls", "-l", "--store", str(p))
    assert code == 0


# --------------------------------------------------------------------------- stats


def test_stats_names_the_field_and_unit_and_no_entropy_for_intensive_fields(
        lab_store: Path, gen_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "--store", str(lab_store))
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("lab: 3 sequences, 9 maps, t2m [K] (intensive): mean ")
    assert "entropy" not in line and "nan" not in line and "mean E" not in line
    cells = 3 * (37 * 49 + 18 * 30 + 128 * 384)
    assert f", valid {100 * (1 - len(HOLES) / cells):.1f} %, " in line
    code, out, _ = run(capsys, "stats", "--json", "--store", str(lab_store))
    (rec,) = json.loads(out)
    assert (rec["field"], rec["units"], rec["kind"], rec["synthetic"]) == ("t2m", "K", "intensive",
                                                                          False)
    assert rec["valid_fraction"] == pytest.approx(1 - len(HOLES) / cells)
    assert not any(k.startswith("entropy") for k in rec)
    code, out, _ = run(capsys, "stats", "--store", str(gen_store))
    lines = out.splitlines()
    assert lines[0].startswith("plasma_physics: 1 sequences, 2 maps, energy [energy / pixel] "
                               "(extensive): mean 1, ")
    assert " nats [" in lines[0] and lines[1:] == [NOTE]
    code, out, _ = run(capsys, "stats", "--json", "--store", str(gen_store))
    (rec,) = json.loads(out)
    assert rec["synthetic"] is True and rec["entropy_min"] <= rec["entropy_mean"]


def test_stats_and_ls_give_the_valid_fraction(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Missing cells weigh the valid fraction (per sequence in ls, per field in stats); a
    sequence without them counts as fully valid."""
    s = AtlasStore.create(tmp_path / "v.zarr")
    s.create_domain("lab")
    a = np.ones((2, 10, 20), np.float32)
    holed = a.copy()
    holed[1, :5, :10] = np.nan  # 50 of the 400 cells
    s.write_sequence("lab", "a", holed, field=FieldSpec("t2m", "intensive", "K"),
                     nan_is_missing=True)
    s.write_sequence("lab", "b", a, field=FieldSpec("t2m", "intensive", "K"))
    code, out, _ = run(capsys, "stats", "--json", "--store", str(tmp_path / "v.zarr"))
    assert json.loads(out)[0]["valid_fraction"] == pytest.approx(750 / 800)
    code, out, _ = run(capsys, "ls", "-l", "lab", "--store", str(tmp_path / "v.zarr"))
    assert "\tvalid 87.5 %\t" in out.splitlines()[0] and "valid" not in out.splitlines()[1]


# --------------------------------------------------------------------------- show


def _panels(fig: Any) -> list[Any]:
    """The image axes, row by row (the colour bars are their children)."""
    return list(fig.axes)


def _bars(fig: Any) -> list[Any]:
    return [ax.child_axes[0] for ax in fig.axes]


def _flat(label: str) -> str:
    """A label as one line (beside a low panel its units go on a second line)."""
    return label.replace("\n", " ")


def _image(ax: Any) -> Any:
    return (ax.images or ax.collections)[0]


def test_show_has_physical_axes_units_and_a_robust_colour_range(lab_store: Path) -> None:
    s = AtlasStore.open(lab_store)
    fig = quicklook(s, "lab", "wide", 0)
    top, bottom = _panels(fig)[:2], _panels(fig)[2:]
    assert len(top) == 2 and len(bottom) == 2  # levels 128 and 64 side by side, |grad| below
    for ax in _panels(fig):
        assert ax.get_xlabel() == "x [degrees_east]"
        assert _flat(ax.get_ylabel()) == "latitude [degrees_north]"
        x0, x1 = ax.get_xlim()
        assert x0 < 0 < 50 < x1 and x1 - x0 < 51  # the axis spans the coordinates' cells
    assert [_flat(b.get_ylabel()) for b in _bars(fig)] == (["t2m [K]"] * 2
                                                           + ["|grad t2m| [K / pixel]"] * 2)
    values = s.read("lab", "wide", 128, "t2m", t=0)
    lo, hi = _image(top[0]).get_clim()
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [1, 99])))
    assert hi < 400 < values.max()  # the 10^4 K hot spot does not set the scale
    assert "t=0 (time 0 hours)" in fig.get_suptitle() and "synthetic" not in fig.get_suptitle()


@pytest.mark.parametrize("sid", [*sorted(GRIDS), "well"])
def test_show_keeps_the_grids_aspect_and_fills_the_figure(lab_store: Path, well_store: Path,
                                                          sid: str) -> None:
    """Each panel has its grid's shape (odd, wide and tall grids), and the panels, not white
    space, fill the figure (a fixed 4 x 7.5 inches per level left a 128x384 map a strip)."""
    if sid == "well":
        (ny, nx), fig = (384, 128), quicklook(AtlasStore.open(well_store),
                                              "turbulent_radiative_layer", WELL_SEQ, 0)
    else:
        ny, nx = GRIDS[sid]
        fig = quicklook(AtlasStore.open(lab_store), "lab", sid, 0)
    fig.draw_without_rendering()
    area = 0.0
    for ax in _panels(fig):
        box = ax.get_window_extent()
        assert box.height / box.width == pytest.approx(ny / nx, rel=0.02)
        area += box.width * box.height
    assert area / (fig.bbox.width * fig.bbox.height) > 0.25  # not strips lost in white space


def test_show_draws_missing_cells_grey_and_says_so(lab_store: Path) -> None:
    import matplotlib.colors as mcolors

    fig = quicklook(AtlasStore.open(lab_store), "lab", "odd", 1)
    field, grad = _panels(fig)  # one level (37 does not halve): the field, its gradient
    for ax in (field, grad):
        img = _image(ax)
        mask = np.ma.getmaskarray(img.get_array()).reshape(37, 49)
        assert img.get_cmap().get_bad() == pytest.approx(mcolors.to_rgba(MISSING_COLOUR))
        assert ax.get_title().endswith(f"\n{int(mask.sum())} missing cells (grey)")
        assert all(np.isfinite(img.get_clim()))
        assert all(mask[y, x] for y, x in HOLES)
    field_mask = np.ma.getmaskarray(_image(field).get_array()).reshape(37, 49)
    assert sorted(zip(*np.nonzero(field_mask), strict=True)) == list(HOLES)
    assert "valid 99.8 %" in fig.get_suptitle()  # 3 of 1813 cells missing
    fig = quicklook(AtlasStore.open(lab_store), "lab", "odd", 0)
    assert "missing" not in " ".join(ax.get_title() for ax in fig.axes)


def test_show_of_an_imported_well_field(well_store: Path) -> None:
    """The Well's density (units not given by the file): its x/y on the axes, a colour range
    from its own values, and no synthetic label."""
    s = AtlasStore.open(well_store)
    fig = quicklook(s, "turbulent_radiative_layer", WELL_SEQ, 2)
    ax = _panels(fig)[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x [no units]", "y [no units]")
    assert ax.get_ylim() == pytest.approx((-1.0 - 1.5 / 383, 2.0 + 1.5 / 383), rel=1e-3)
    assert _bars(fig)[0].get_ylabel() == "density [unknown]"
    values = s.read("turbulent_radiative_layer", WELL_SEQ, 128, "density", t=2)
    assert _image(ax).get_clim() == pytest.approx(tuple(np.percentile(values, [1, 99])))
    assert "synthetic" not in fig.get_suptitle()


def test_show_says_generated_data_is_synthetic_and_labels_pixels(
        gen_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fig = quicklook(AtlasStore.open(gen_store), "plasma_physics", "seq-00000", 1)
    assert fig.get_suptitle().endswith("\n" + SYNTHETIC.format(s=""))
    assert {ax.get_xlabel() for ax in _panels(fig)} == {"x [pixel]"}
    assert [b.get_ylabel() for b in _bars(fig)][::3] == ["energy [energy / pixel]",
                                                         "|grad energy| [energy / pixel / pixel]"]
    png = tmp_path / "q.png"
    code, out, err = run(capsys, "show", "plasma_physics", "seq-00000", "--t", "1", "--store",
                         str(gen_store), "--out", str(png))
    assert code == 0, err
    assert out == f"wrote {png}\n" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_draws_descending_coordinates_ascending(tmp_path: Path) -> None:
    """Latitude stored north to south: the axis still runs south to north, each row at its own
    latitude (the image is the stored rows reversed)."""
    s = AtlasStore.create(tmp_path / "d.zarr")
    s.create_domain("lab")
    a = _lab_field(18, 30)
    s.write_sequence("lab", "north-first", a, field=FieldSpec("t2m", "intensive", "K"),
                     coords=Coordinates(y=Axis(tuple(np.linspace(10, -10, 18)), "degrees_north")))
    ax = _panels(quicklook(s, "lab", "north-first", 0))[0]
    lo, hi = ax.get_ylim()
    assert lo < -10 < 10 < hi
    np.testing.assert_array_equal(np.asarray(_image(ax).get_array()), a[0][::-1])


def test_dates_are_shown_as_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ISO 8601 step times (an xarray source's dates) read as dates to the second, not with the
    coordinate array's "seconds since ..." unit."""
    s = AtlasStore.create(tmp_path / "t.zarr")
    s.create_domain("lab")
    times = ("2026-01-01T00:00:00.000000000", "2026-01-01T06:00:00.000000000")
    s.write_sequence("lab", "dated", _lab_field(18, 30)[:2], field=FieldSpec("t2m", "intensive", "K"),
                     coords=Coordinates(time=times, time_units="seconds since 2026-01-01"))
    code, out, _ = run(capsys, "ls", "-l", "lab", "--store", str(tmp_path / "t.zarr"))
    assert out.split("\t")[5] == "time 2026-01-01T00:00:00..2026-01-01T06:00:00"
    title = quicklook(s, "lab", "dated", 1).get_suptitle()
    assert title.startswith("lab/dated t=1 (time 2026-01-01T06:00:00)\n")


def test_times_on_a_model_calendar_are_dates_on_it(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Numbers with CF units on a 360-day calendar (how such times are stored) read as that
    calendar's dates, not as -946800 hours since 1970."""
    s = AtlasStore.create(tmp_path / "c.zarr")
    s.create_domain("lab")
    s.write_sequence("lab", "model", _lab_field(18, 30)[:2],
                     field=FieldSpec("t2m", "intensive", "K"),
                     coords=Coordinates(time=(0.0, 720.0), time_units="hours since 1970-01-01",
                                        time_calendar="360_day"))
    code, out, _ = run(capsys, "ls", "-l", "lab", "--store", str(tmp_path / "c.zarr"))
    assert out.split("\t")[5] == ("time 1970-01-01T00:00:00..1970-02-01T00:00:00 "
                                  "(360_day calendar)")
    assert quicklook(s, "lab", "model", 1).get_suptitle().startswith(
        "lab/model t=1 (time 1970-02-01T00:00:00 (360_day calendar))\n")
