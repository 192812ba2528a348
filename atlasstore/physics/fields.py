"""Physics of energy maps: validation, entropy, gradients, energy-conserving pyramids.

An energy map is a 2D field of non-negative, finite energy per pixel. Everything here works on a
single map ``(y, x)`` or a stack ``(..., y, x)``; reductions run over the last two axes.
Nothing here knows about storage.

Fields that are not energy declare a *kind* (:data:`FIELD_KINDS`): **extensive** fields (energy
per pixel, a mass per pixel) are non-negative, their pyramid sums blocks (conserving the total)
and their entropy is defined; **intensive** fields (a temperature, a velocity component) may be
negative, their pyramid averages blocks (conserving the mean) and they have no entropy. The
predecessor's names (``validate_shape``, ``levels_for``, ``pyramid``: short sides 64/128/256,
square or 2:3) stay for the generator's presets; the store accepts any grid through
:func:`pyramid_levels`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from atlasstore.errors import EnergyMapError, GridError, ThermodynamicViolation
from atlasstore.records import check_kind

#: Allowed short sides (the pyramid levels).
SCALES: tuple[int, ...] = (256, 128, 64)
#: Default relative tolerance for energy conservation.
CONSERVATION_TOLERANCE = 0.05
#: Default smallest pyramid level (short side) of :func:`pyramid_levels`.
SMALLEST_LEVEL = 64


# --------------------------------------------------------------------------- validation

def validate_energy(energy: ArrayLike, name: str = "energy map") -> NDArray[np.floating]:
    """Return ``energy`` as a float array, or raise naming the first problem found.

    Refuses non-numeric or complex dtypes, fewer than two dimensions, empty arrays, NaN, +/-inf
    and negative values. Integer and bool input is refused too: energy maps are real fields.
    """
    return validate_field(energy, "extensive", name, what="energy")


def validate_field(values: ArrayLike, kind: str = "extensive", name: str = "field",
                   what: str = "an extensive field", allow_missing: bool = False
                   ) -> NDArray[np.floating]:
    """``values`` as a float array of at least 2 dimensions, finite, and non-negative when the
    field is extensive; otherwise EnergyMapError naming the first problem found.

    ``allow_missing``: NaN cells are declared missing cells (kept as NaN, see
    :func:`valid_mask`); inf is refused either way. Without it a NaN is bad input, and the
    error says how to declare missing cells.
    """
    check_kind(kind)
    arr = check_array(values, name)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int((~finite).sum()) - n_nan
        if n_inf or not allow_missing:
            hint = ("; if they are missing values (a land mask, a gap), declare them: "
                    "--nan-is-missing (atlas import), nan_is_missing=True or a masked array"
                    if n_nan and not n_inf else "")
            raise EnergyMapError(f"{name}: contains non-finite values ({n_nan} NaN, "
                                 f"{n_inf} inf){hint}")
    if kind == "extensive" and (arr < 0).any():
        raise EnergyMapError(f"{name}: contains {int((arr < 0).sum())} negative values "
                             f"(min {float(np.nanmin(arr)):.6g}); {what} must be non-negative")
    return arr


def check_array(values: ArrayLike, name: str = "field") -> NDArray[np.floating]:
    """``values`` as an array if its dtype is floating point and it holds at least one (y, x)
    map (no pass over the values); EnergyMapError otherwise."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "f":
        raise EnergyMapError(f"{name}: dtype {arr.dtype} is not a floating-point type")
    if arr.ndim < 2:
        raise EnergyMapError(f"{name}: expected at least 2 dimensions (y, x), got shape {arr.shape}")
    if arr.size == 0:
        raise EnergyMapError(f"{name}: empty array of shape {arr.shape}")
    return arr


def valid_mask(values: ArrayLike) -> NDArray[np.bool_] | None:
    """Where ``values`` holds data (not NaN), or None when every cell does: missing cells are
    NaN everywhere in the store, so "no NaN" is the fast common case."""
    v = np.asarray(values)
    isnan = np.isnan(v)
    return ~isnan if isnan.any() else None


def validate_shape(shape: ArrayLike | tuple[int, ...], name: str = "energy map") -> tuple[int, int]:
    """Check a map's (y, x) shape: short side in :data:`SCALES`, aspect square or 2:3.

    Accepts a shape tuple or an array (its last two axes). Both 2:3 orientations are allowed;
    the short side names the scale. Returns ``(ny, nx)``.
    """
    if isinstance(shape, tuple) and all(isinstance(s, (int, np.integer)) for s in shape):
        dims = tuple(int(s) for s in shape)
    else:
        dims = tuple(np.shape(shape))
    if len(dims) < 2:
        raise EnergyMapError(f"{name}: expected at least 2 dimensions (y, x), got shape {dims}")
    ny, nx = dims[-2:]
    short, long_ = min(ny, nx), max(ny, nx)
    if short not in SCALES:
        raise EnergyMapError(f"{name}: short side {short} (shape {ny}x{nx}) is not one of "
                             f"{sorted(SCALES)}")
    if long_ * 2 not in (short * 2, short * 3):
        raise EnergyMapError(f"{name}: aspect {ny}x{nx} is neither square nor 2:3")
    return ny, nx


def scale_of(shape: tuple[int, ...]) -> int:
    """The scale (short side) of a valid map shape."""
    ny, nx = validate_shape(tuple(shape))
    return min(ny, nx)


# --------------------------------------------------------------------------- statistics

def total_energy(energy: ArrayLike) -> NDArray[np.float64] | float:
    """Sum of E over the last two axes, accumulated in float64."""
    return np.asarray(energy, dtype=np.float64).sum(axis=(-2, -1))


def entropy(energy: ArrayLike) -> NDArray[np.float64] | float:
    """Shannon entropy H = -sum p log p (nats) with p = E / sum E, over the last two axes.

    Zero-safe: pixels with E = 0 contribute 0 (the limit of p log p), and an all-zero map has
    H = 0. Missing (NaN) cells are left out: p is over the valid cells. The maximum,
    log(ny * nx), is reached by a uniform map.
    """
    e = np.asarray(energy, dtype=np.float64)
    if e.ndim < 2:
        raise EnergyMapError(f"entropy needs a map (..., y, x), got shape {e.shape}")
    if valid_mask(e) is not None:  # missing cells hold no energy: p = 0
        e = np.nan_to_num(e, nan=0.0)
    total = e.sum(axis=(-2, -1), keepdims=True)
    safe_total = np.where(total > 0, total, 1.0)
    p = e / safe_total
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = -terms.sum(axis=(-2, -1))
    return float(h) if np.ndim(h) == 0 else h


def map_stats(energy: ArrayLike) -> dict[str, float]:
    """Summary statistics recorded for every stored map (float64 accumulation), over its valid
    cells (missing cells, NaN, are left out)."""
    e = np.asarray(energy, dtype=np.float64)
    v = _valid_values(e)
    return {
        "sum": float(v.sum()),
        "mean": float(v.mean()),
        "variance": float(v.var()),
        "min": float(v.min()),
        "max": float(v.max()),
        "entropy": float(entropy(e)),
    }


def _valid_values(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """The non-missing cells of ``v`` (``v`` itself when none is missing); EnergyMapError
    when no cell is valid (a map of nothing has no statistics)."""
    mask = valid_mask(v)
    if mask is None:
        return v
    if not mask.any():
        raise EnergyMapError(f"every cell of a {'x'.join(map(str, v.shape))} map is missing")
    return v[mask]


def relative_energy_error(before: ArrayLike, after: ArrayLike, factor: float = 1.0) -> float:
    """|sum(after) - factor * sum(before)| / (factor * sum(before)); 0 when both sums are 0."""
    b = float(np.asarray(total_energy(before)).sum()) * factor
    a = float(np.asarray(total_energy(after)).sum())
    if b == 0.0:
        return 0.0 if a == 0.0 else float("inf")
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------- checks

def check_energy_conservation(before: ArrayLike, after: ArrayLike,
                              tolerance: float = CONSERVATION_TOLERANCE, factor: float = 1.0,
                              context: str = "") -> float:
    """Raise :class:`ThermodynamicViolation` if sum E changed by more than ``tolerance``.

    ``factor`` is the expected ratio sum(after)/sum(before) (1 for conserving operations, s for
    energy_scaling(s)). Returns the measured relative error.
    """
    err = relative_energy_error(before, after, factor)
    if not err < tolerance:
        raise ThermodynamicViolation("energy_conservation", err, tolerance,
                                     float(np.sum(total_energy(before))) * factor,
                                     float(np.sum(total_energy(after))), context)
    return err


def check_entropy_increase(before: ArrayLike, after: ArrayLike, tolerance: float = 0.0,
                           context: str = "") -> float:
    """Raise :class:`ThermodynamicViolation` if H(after) < H(before) - ``tolerance``.

    Returns the entropy change H(after) - H(before) in nats.
    """
    h0, h1 = float(entropy(before)), float(entropy(after))
    delta = h1 - h0
    if delta < -tolerance:
        raise ThermodynamicViolation("entropy_decrease", delta, tolerance, h0, h1, context)
    return delta


def validate_energy_conservation(before: ArrayLike, after: ArrayLike,
                                 tolerance: float = CONSERVATION_TOLERANCE) -> bool:
    """Predecessor API: True when sum E is conserved within ``tolerance``."""
    return relative_energy_error(before, after) < tolerance


def validate_entropy_increase(before: ArrayLike, after: ArrayLike, tolerance: float = 0.0) -> bool:
    """Predecessor API: True when entropy did not decrease (second law)."""
    return float(entropy(after)) >= float(entropy(before)) - tolerance


# --------------------------------------------------------------------------- gradients

def gradients(energy: ArrayLike, spacing: float = 1.0) -> tuple[NDArray, NDArray]:
    """dE/dx and dE/dy over the last two axes (x = last axis, y = second to last).

    Stencil: second-order central differences (E[i+1] - E[i-1]) / (2 h) in the interior and
    first-order one-sided differences at the edges (``numpy.gradient`` with ``edge_order=1``),
    so no periodicity is assumed. ``spacing`` h is the pixel size; the store uses h = 1 pixel of
    the level the gradient belongs to, so units are energy per pixel of that level. The result
    has the input's floating dtype. Missing cells: a gradient is missing (NaN) where its cell
    or a cell its stencil uses is missing; there is no one-sided fallback at mask edges, so
    every stored gradient is the same stencil.
    """
    e = np.asarray(energy)
    if e.dtype.kind != "f":
        e = e.astype(np.float64)
    dtype = e.dtype
    # In the input's own precision: a difference of two floats rounded once, then halved
    # exactly, is the correctly rounded difference, so float32 gives the float32 rounding of
    # the float64 result bit for bit (h = 1, the store's) at a tenth of the CPU.
    grads = np.gradient(e, spacing, axis=(-2, -1), edge_order=1)
    gy, gx = np.asarray(grads[0]), np.asarray(grads[1])
    mask = valid_mask(e) if e.dtype.kind == "f" else None
    if mask is not None:  # the stencil's neighbours propagate NaN; the cell itself must too
        gx[~mask] = np.nan
        gy[~mask] = np.nan
    return np.asarray(gx, dtype=dtype), np.asarray(gy, dtype=dtype)


def gradient_magnitude(grad_x: ArrayLike, grad_y: ArrayLike) -> NDArray:
    """|grad E| = sqrt(gx^2 + gy^2)."""
    return np.hypot(np.asarray(grad_x), np.asarray(grad_y))


# --------------------------------------------------------------------------- pyramids

def level_shape(shape: tuple[int, ...], level: int) -> tuple[int, int]:
    """(ny, nx) of ``shape`` downsampled so its short side is ``level``."""
    ny, nx = validate_shape(tuple(shape))
    short = min(ny, nx)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise EnergyMapError(f"level must be an integer short side, got {level!r}")
    if level not in SCALES or level > short or short % level:
        raise EnergyMapError(f"level {level} is not reachable from a map with short side {short} "
                             f"(levels must be in {sorted(SCALES)} and <= {short})")
    f = short // level
    return ny // f, nx // f


def levels_for(shape: tuple[int, ...]) -> tuple[int, ...]:
    """All pyramid levels of a map, finest first (e.g. 256 -> (256, 128, 64))."""
    short = scale_of(tuple(shape))
    return tuple(s for s in SCALES if s <= short)


def block_sum(x: Any, factor: int) -> Any:
    """Sum ``factor`` x ``factor`` blocks over the last two axes: the area downsample of energy.

    Namespace-agnostic (only ``.shape``, ``.reshape`` and ``.sum(axis=...)``), so the same code
    serves NumPy here and JAX arrays in the model (also inside ``jit``); the result keeps the
    input's array type and dtype. ``factor`` 1 returns ``x`` itself.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise EnergyMapError(f"block-sum factor must be a positive integer, got {factor!r}")
    if factor == 1:
        return x
    *lead, ny, nx = x.shape
    if ny % factor or nx % factor:
        raise EnergyMapError(f"maps {ny}x{nx} are not divisible by the block-sum factor {factor}")
    return x.reshape(*lead, ny // factor, factor, nx // factor, factor).sum(axis=(-3, -1))


def downsample(energy: ArrayLike, level: int) -> NDArray:
    """Downsample over the last two axes to short side ``level``, conserving sum E.

    Area (block-sum) resampling: each coarse pixel holds the summed energy of the f x f fine
    pixels it covers. Unlike bicubic interpolation (the predecessor's choice) this cannot
    overshoot into negative energy, and it conserves sum E exactly in exact arithmetic; the sums
    are taken in float64 and the result renormalised to the input's total so the float32 output
    matches to rounding.
    """
    e = validate_energy(energy)
    ny, nx = e.shape[-2:]
    ty, _ = level_shape((ny, nx), level)
    f = ny // ty
    if f == 1:
        return e.copy()
    e64 = e.astype(np.float64, copy=False)
    coarse = block_sum(e64, f)
    before = e64.sum(axis=(-2, -1), keepdims=True)
    after = coarse.sum(axis=(-2, -1), keepdims=True)
    coarse *= np.where(after > 0, before / np.where(after > 0, after, 1.0), 1.0)
    return coarse.astype(e.dtype, copy=False)


def pyramid(energy: ArrayLike, levels: tuple[int, ...] | None = None) -> dict[int, NDArray]:
    """Energy at every level (default: all levels the map supports), each from the full map."""
    e = validate_energy(energy)
    validate_shape(e.shape)
    wanted = levels_for(e.shape) if levels is None else tuple(levels)
    return {lvl: downsample(e, lvl) for lvl in wanted}


@dataclass
class LevelFields:
    """Energy and its gradients at one pyramid level."""

    energy: NDArray
    grad_x: NDArray
    grad_y: NDArray
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, NDArray]:
        return {"energy": self.energy, "grad_x": self.grad_x, "grad_y": self.grad_y}


def derive_levels(energy: ArrayLike, levels: tuple[int, ...] | None = None) -> dict[int, LevelFields]:
    """Pyramid plus gradients for a map or a (time, y, x) stack: what the store writes."""
    out: dict[int, LevelFields] = {}
    for lvl, e in pyramid(energy, levels).items():
        gx, gy = gradients(e)
        out[lvl] = LevelFields(e, gx, gy)
    return out


# --------------------------------------------------------------------------- any grid

def pyramid_levels(shape: tuple[int, ...], smallest: int = SMALLEST_LEVEL,
                   levels: tuple[int, ...] | list[int] | None = None) -> tuple[int, ...]:
    """The pyramid of a map of any size: its levels named by short side, finest first.

    Default: the native base and its exact halvings while the short side stays >= ``smallest``
    (512x512 -> 512, 256, 128, 64; 384x128 -> 128, 64; 100x100 -> 100; 32x32 -> 32). The
    pyramid stops where halving stops being exact (a side that does not divide by 2): a
    330x360 ocean grid gets 330 and 165, a 37x49 grid its base alone. Coarser levels of such
    grids would need cells that straddle the edge, so none are invented; ``--crop``/``--pad``
    make a grid halve further (:func:`halving_hint` names the sizes). ``levels`` chooses a
    subset of the base and its exact halvings (the base must be among them).
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) < 2 or min(dims[-2:]) < 1:
        raise GridError(f"expected a (y, x) map shape, got {dims}")
    ny, nx = dims[-2:]
    short = min(ny, nx)
    if levels is not None:
        return _chosen_levels(ny, nx, levels)
    if isinstance(smallest, bool) or not isinstance(smallest, (int, np.integer)) or smallest < 1:
        raise GridError(f"smallest level must be a positive integer, got {smallest!r}")
    out, f = [short], 1
    while short / (2 * f) >= smallest and not (ny % (2 * f) or nx % (2 * f)):
        f *= 2
        out.append(short // f)
    return tuple(out)


def halving_hint(shape: tuple[int, ...], smallest: int = SMALLEST_LEVEL) -> str | None:
    """How to crop or pad a grid whose pyramid stops early (:func:`pyramid_levels`) so that it
    halves down to ``smallest``; None when it already does."""
    ny, nx = (int(s) for s in shape[-2:])
    short = min(ny, nx)
    factor = 1
    while short / (2 * factor) >= smallest:
        factor *= 2
    if factor == 1 or not (ny % factor or nx % factor):
        return None

    def down(n: int) -> int:
        return n // factor * factor

    def up(n: int) -> int:
        return -(-n // factor) * factor

    return (f"a {ny}x{nx} map halves exactly down to short side "
            f"{pyramid_levels((ny, nx), smallest)[-1]}; to get levels down to >= {smallest}, "
            f"crop it to {down(ny)}x{down(nx)} (--crop {down(ny)}x{down(nx)}) or pad it to "
            f"{up(ny)}x{up(nx)} (--pad {up(ny)}x{up(nx)})")


def _chosen_levels(ny: int, nx: int, levels: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    short = min(ny, nx)
    if isinstance(levels, (str, bytes)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in levels):
        raise GridError(f"levels must be integers (short sides), got {levels!r}")
    lv = tuple(sorted({int(v) for v in levels}, reverse=True))
    if not lv or lv[0] != short:
        raise GridError(f"levels {list(levels)} must include the full resolution {short} "
                        f"(the short side of a {ny}x{nx} map)")
    for v in lv[1:]:
        f = short // v if v > 0 else 0
        if v < 1 or f < 2 or short % v or f & (f - 1) or ny % f or nx % f:
            raise GridError(f"level {v} is not an exact halving of a {ny}x{nx} map (levels are "
                            f"{short} divided by 2, 4, 8, ... where both sides divide)")
    return lv


def grid_level_shape(shape: tuple[int, ...], level: int) -> tuple[int, int]:
    """(ny, nx) at the level whose short side is ``level`` (an exact halving of ``shape``)."""
    ny, nx = (int(s) for s in shape[-2:])
    f = min(ny, nx) // int(level)
    return ny // f, nx // f


def downsample_field(values: NDArray, factor: int, kind: str = "extensive") -> NDArray:
    """Coarsen the last two axes by ``factor``: block sums rescaled to the input's total per
    map (extensive, as :func:`downsample`) or block means (intensive); the input's dtype.

    Missing (NaN) cells: an intensive block is the mean of its valid cells, an extensive block
    the sum of its valid cells (the valid fraction is in the arrays' statistics); a block with
    no valid cell is missing.
    """
    if factor == 1:
        return values.copy()
    v64 = values.astype(np.float64, copy=False)
    mask = valid_mask(v64)
    if mask is not None:
        v64 = np.where(mask, v64, 0.0)
    coarse = block_sum(v64, factor)
    counts = None if mask is None else block_sum(mask.astype(np.float64), factor)
    if kind == "intensive":
        coarse /= factor * factor if counts is None else np.maximum(counts, 1.0)
    else:
        before = v64.sum(axis=(-2, -1), keepdims=True)
        after = coarse.sum(axis=(-2, -1), keepdims=True)
        coarse *= np.where(after > 0, before / np.where(after > 0, after, 1.0), 1.0)
    if counts is not None:
        coarse[counts == 0] = np.nan
    return coarse.astype(values.dtype, copy=False)


def derive(values: NDArray, levels: tuple[int, ...], kind: str = "extensive"
           ) -> dict[int, tuple[NDArray, NDArray, NDArray]]:
    """(field, d/dx, d/dy) at every level of a (validated) stack whose short side is
    ``levels[0]``: what the store writes. For extensive float32 input the values equal
    :func:`derive_levels` bit for bit."""
    short = min(values.shape[-2:])
    out = {}
    for lvl in levels:
        v = downsample_field(values, short // lvl, kind)
        gx, gy = gradients(v)
        out[lvl] = (v, gx, gy)
    return out


def field_stats(values: ArrayLike, kind: str = "extensive") -> dict[str, float]:
    """Per-map statistics recorded for every stored step, over the valid cells:
    :func:`map_stats` for extensive fields; mean, variance, min and max for intensive ones (no
    sum, no entropy)."""
    if kind == "extensive":
        return map_stats(values)
    v = _valid_values(np.asarray(values, dtype=np.float64))
    return {"mean": float(v.mean()), "variance": float(v.var()), "min": float(v.min()),
            "max": float(v.max())}
