"""``atlas show``: a PNG quicklook of one step of a sequence, every stored level side by side
(the field, and its gradient magnitude below), for any grid.

Each panel keeps the grid's aspect (a 128x384 map is three times as wide as tall, and the figure
is sized from it), has physical coordinates and units on its axes where the sequence has them
(pixel indices where not), the field's unit on its colour bar, and a robust colour range (the
1st to 99th percentile of the valid cells, so one hot spot does not turn the rest black).
Missing cells (NaN in the stored arrays) are drawn grey and counted in the panel's title.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.cli.labels import SYNTHETIC, field_units, is_synthetic, time_text
from atlasstore.cli.options import _open_store
from atlasstore.errors import UserError
from atlasstore.records import SequenceRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the colour of a missing cell, and the percentiles of the valid cells the colours span
MISSING_COLOUR = "0.6"
PERCENTILES = (1.0, 99.0)
#: inches of the longer side of a base-level panel
PANEL_INCHES = 3.6
#: inches: the narrowest figure (room for the title), the shortest side of a panel
MIN_WIDTH = 6.0
MIN_SHORT_SIDE = 0.8
#: inches: panels lower than this have their y and colour-bar labels on two lines
SHORT_LABEL_PANEL = 1.8
#: inches around a panel: left (y label, ticks), right (colour bar, its ticks and label),
#: above (title, two lines), below (ticks, x label)
MARGINS = (0.9, 1.15, 0.5, 0.55)


def robust_range(values: NDArray[Any]) -> tuple[float, float]:
    """The colour range of a panel: the 1st to 99th percentile of its finite values (widened
    by 1 % where they agree to 0.01 %, so a constant or empty panel has a readable bar)."""
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(valid, PERCENTILES))
    if hi - lo <= 1e-4 * max(abs(lo), abs(hi)):  # constant to 0.01 %: drawn as one colour
        pad = abs(lo) * 0.01 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _edges(centres: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cell edges around cell centres (half a spacing beyond the ends)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _axis_label(name: str, rec: Mapping[str, Any] | None) -> str:
    if not rec:
        return f"{name} [pixel]"
    units = rec.get("units") or "no units"
    return f"{rec.get('source_name') or name} [{units}]"


def _grid(store: Any, rec: SequenceRecord, level: int, shape: tuple[int, ...]
          ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cell centres (y, x) of a level: its coordinate arrays, or pixel indices."""
    coords = store.coordinates(rec.domain, rec.sequence_id, level) if (
        rec.document.get("coordinates")) else {}
    ys = coords["y"][0] if "y" in coords else np.arange(shape[0], dtype=np.float64)
    xs = coords["x"][0] if "x" in coords else np.arange(shape[1], dtype=np.float64)
    return ys, xs


def _uniform(centres: NDArray[np.float64]) -> bool:
    d = np.diff(centres)
    return bool(d.size == 0 or np.allclose(d, d[0], rtol=1e-6, atol=0.0))


def _panel(ax: Axes, img: NDArray[Any], grid: tuple[NDArray[Any], NDArray[Any]],
           cmap_name: str, title: str, bar_label: str, inches: float) -> None:
    """One level's image on its physical (or pixel) axes, with its colour bar beside it
    (``inches``: the panel's planned width, so the bar has the same width on every grid)."""
    import matplotlib as mpl

    cmap = mpl.colormaps[cmap_name].with_extremes(bad=MISSING_COLOUR)
    lo, hi = robust_range(img)
    ys, xs = grid
    if ys.size > 1 and ys[0] > ys[-1]:  # descending coordinates (latitude): drawn ascending
        img, ys = img[::-1], ys[::-1]
    if xs.size > 1 and xs[0] > xs[-1]:
        img, xs = img[:, ::-1], xs[::-1]
    data = np.ma.masked_invalid(img)
    ye, xe = _edges(ys), _edges(xs)
    if _uniform(ys) and _uniform(xs):
        art: Any = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto",
                             extent=(xe[0], xe[-1], ye[0], ye[-1]), interpolation="nearest")
    else:
        art = ax.pcolormesh(xe, ye, data, cmap=cmap, vmin=lo, vmax=hi, shading="flat")
    ax.set_box_aspect(img.shape[0] / img.shape[1])  # the grid's shape, whatever the units
    missing = int(np.count_nonzero(~np.isfinite(img)))
    ax.set_title(title + (f"\n{missing} missing cells (grey)" if missing else ""), fontsize=9)
    cax = ax.inset_axes((1 + 0.08 / inches, 0.0, 0.15 / inches, 1.0))  # as tall as the panel
    bar = ax.figure.colorbar(art, cax=cax)
    bar.set_label(bar_label, fontsize=8)
    cax.tick_params(labelsize=7)


def _panel_inches(shape: tuple[int, int]) -> tuple[float, float]:
    """(width, height) of a panel, in the grid's aspect: the longer side is PANEL_INCHES, more
    (up to 4 times) where the shorter one would be under MIN_SHORT_SIDE."""
    ratio = shape[0] / shape[1]
    short = min(ratio, 1 / ratio)
    long = min(4 * PANEL_INCHES, max(PANEL_INCHES, MIN_SHORT_SIDE / short))
    return (long, long * ratio) if ratio <= 1 else (long / ratio, long)


def _layout(fig: Figure, n_rows: int, n_cols: int, panel: tuple[float, float], top: float
            ) -> list[list[Axes]]:
    """Axes of exactly ``panel`` inches in a grid with fixed room around each for its title,
    axis labels and colour bar (no layout engine: it would resize the panels, which keep the
    grid's aspect, and leave the difference as white space)."""
    (pw, ph), (left, right, above, below) = panel, MARGINS
    w, h = fig.get_size_inches()
    x0 = (w - n_cols * (left + pw + right)) / 2  # centred where the title makes it wider
    rows = []
    for i in range(n_rows):
        y = h - top - (i + 1) * (above + ph + below) + below
        rows.append([fig.add_axes((( x0 + j * (left + pw + right) + left) / w, y / h, pw / w,
                                   ph / h)) for j in range(n_cols)])
    return rows


def _when(rec: SequenceRecord, t: int) -> str:
    step = rec.steps[t]
    return f"t={t} (time {time_text(rec.document, step['time'])})" if "time" in step else f"t={t}"


def _suptitle(rec: SequenceRecord, t: int, width_inches: float) -> str:
    step = rec.steps[t]
    units = field_units(rec.field)
    stats = (f"H={step['entropy']:.3f} nats  sum={step['sum']:.4g}" if "entropy" in step
             else f"mean={step['mean']:.4g} {units}")  # an intensive field has no entropy
    ny, nx = rec.shape
    if "valid_cells" in step:
        stats += f"  valid {100 * int(step['valid_cells']) / (ny * nx):.1f} %"
    lines = [f"{rec.domain}/{rec.sequence_id} {_when(rec, t)}", stats]
    if is_synthetic(rec.document):
        lines.append(SYNTHETIC.format(s=""))
    return "\n".join(textwrap.fill(line, max(30, int(width_inches * 11))) for line in lines)


def quicklook(store: Any, domain: str, sequence_id: str, t: int) -> Figure:
    """The quicklook figure of step ``t``: columns are the stored levels, finest first; rows
    are the field and its gradient magnitude (per pixel of the level)."""
    from matplotlib.figure import Figure

    from atlasstore.physics.fields import gradient_magnitude

    rec = store.sequence_record(domain, sequence_id)
    name, units = rec.field.name, field_units(rec.field)
    coords = rec.document.get("coordinates") or {}
    pw, ph = _panel_inches(rec.shape)
    left, right, above, below = MARGINS
    width = max(MIN_WIDTH, len(rec.levels) * (left + pw + right))
    title = _suptitle(rec, t, width)
    top = 0.2 + 0.2 * title.count("\n")
    fig = Figure(figsize=(width, top + 2 * (above + ph + below)))
    axes = _layout(fig, 2, len(rec.levels), (pw, ph), top)

    def wrap(label: str) -> str:  # units below the name beside a low panel
        return label.replace(" [", "\n[") if ph < SHORT_LABEL_PANEL else label

    for j, lvl in enumerate(rec.levels):
        img = store.read(domain, sequence_id, lvl, name, t=t)
        grad = gradient_magnitude(store.read(domain, sequence_id, lvl, "grad_x", t=t),
                                  store.read(domain, sequence_id, lvl, "grad_y", t=t))
        grid = _grid(store, rec, lvl, img.shape)
        where = f"level {lvl} ({img.shape[0]}x{img.shape[1]})"
        _panel(axes[0][j], img, grid, "inferno", f"{name}, {where}", wrap(f"{name} [{units}]"),
               pw)
        _panel(axes[1][j], grad, grid, "viridis", f"|grad {name}|, {where}",
               wrap(f"|grad {name}| [{units} / pixel]"), pw)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xlabel(_axis_label("x", coords.get("x")), fontsize=8)
            ax.set_ylabel(wrap(_axis_label("y", coords.get("y"))), fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig.get_size_inches()[1], va="top")
    return fig


def cmd_show(args: argparse.Namespace) -> int:
    store = _open_store(args)
    info = store.sequence_info(args.domain, args.sequence)
    if not 0 <= args.t < info["n_steps"]:
        raise UserError(f"--t {args.t} outside 0..{info['n_steps'] - 1}")
    # after the checks: a bad sequence or step is named even where the plots extra is missing
    fig = quicklook(store, args.domain, args.sequence, args.t)
    out = Path(args.out or f"{args.domain}_{args.sequence}_t{args.t}.png")
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")
    return 0
