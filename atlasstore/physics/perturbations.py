"""The perturbations a synthetic step applies (rotation, translation, noise, blur, scaling), each
holding the energy-map invariants of :mod:`atlasstore.physics.fields`, and the random draw of a
step's perturbations (:class:`PerturbationConfig`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from atlasstore.errors import SchemaError
from atlasstore.io.schemas import validate
from atlasstore.physics import fields as physics

Seed = int | np.random.SeedSequence | np.random.Generator


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise TypeError(f"seed must be an int or numpy SeedSequence, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(seed)



def _restore_total(out: NDArray[np.float64], total: float) -> NDArray[np.float64]:
    s = out.sum()
    if s > 0 and total > 0:
        out *= total / s
    return out


def _as64(energy: ArrayLike) -> tuple[NDArray[np.float64], np.dtype]:
    e = physics.validate_energy(energy)
    return e.astype(np.float64), e.dtype


def _checked_cast(out: NDArray[np.float64], dtype: np.dtype, what: str) -> NDArray:
    cast = out.astype(dtype)
    if not np.isfinite(cast).all():
        raise ValueError(f"{what} overflows {np.dtype(dtype).name}")
    return cast


def _finite_param(name: str, value: float, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _shift_rows(e: NDArray[np.float64], shifts: NDArray[np.float64]) -> NDArray[np.float64]:
    """out[..., y, x] = e[..., y, x - shifts[y]], periodic, linear interpolation.

    Each row's operator is circulant with weights (1 - f, f): doubly stochastic.
    """
    ny, nx = e.shape[-2:]
    whole = np.floor(shifts)
    f = (shifts - whole)[:, None]
    i0 = (np.arange(nx)[None, :] - whole[:, None].astype(np.intp)) % nx
    rows = np.arange(ny)[:, None]
    return (1 - f) * e[..., rows, i0] + f * e[..., rows, (i0 - 1) % nx]


def _shear(e: NDArray[np.float64], a: float, axis: str) -> NDArray[np.float64]:
    """Shear about the centre: x += a (y - cy) (axis "x"), or y += a (x - cx) (axis "y")."""
    if axis == "y":
        return np.swapaxes(_shear(np.swapaxes(e, -1, -2), a, "x"), -1, -2)
    ny = e.shape[-2]
    return _shift_rows(e, a * (np.arange(ny) - (ny - 1) / 2.0))


def apply_rotation(energy: ArrayLike, angle: float) -> NDArray:
    """Rotate by ``angle`` degrees about the centre of the periodic domain; positive angles turn
    the map counter-clockwise as displayed with row 0 on top (``np.rot90``'s sense).

    Multiples of 90 degrees (180 for 2:3 maps, whose shape must not change) are exact
    permutations (``np.rot90``); the remainder, at most 45 (90) degrees, is three shears
    (Paeth's decomposition), each shifting every row or column periodically by a sub-pixel
    amount with linear interpolation. Every step is a doubly stochastic operator on the torus,
    so sum E is conserved exactly, energy stays non-negative and Shannon entropy cannot
    decrease - wherever the energy sits. (Backward resampling such as ``scipy.ndimage.rotate``
    never samples the corners on a periodic grid: a hot corner pixel vanished; forward splatting
    conserves but piles energy up where wrapped images overlap, lowering entropy.)
    """
    angle = _finite_param("angle", angle)
    e, dtype = _as64(energy)
    ny, nx = e.shape[-2:]
    r = (angle + 180.0) % 360.0 - 180.0
    quarter = 90.0 if ny == nx else 180.0
    k = int(np.round(r / quarter))
    rest = r - k * quarter
    out = np.rot90(e, k * int(quarter // 90), axes=(-2, -1))
    if abs(rest) > 1e-12:
        t = np.deg2rad(-rest)
        a, b = -np.tan(t / 2), np.sin(t)
        out = _shear(_shear(_shear(out, a, "x"), b, "y"), a, "x")
    out = np.maximum(out, 0.0)
    return _restore_total(np.ascontiguousarray(out), e.sum()).astype(dtype)


def apply_translation(energy: ArrayLike, shift_x: int, shift_y: int) -> NDArray:
    """Periodic shift by whole pixels: a permutation, so sum E is conserved exactly."""
    for n, s in (("shift_x", shift_x), ("shift_y", shift_y)):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise ValueError(f"{n} must be an integer number of pixels, got {s!r}")
    e = physics.validate_energy(energy)
    return np.roll(e, (int(shift_y), int(shift_x)), axis=(-2, -1))


def apply_gaussian_noise(energy: ArrayLike, sigma: float, seed: Seed = 0) -> NDArray:
    """Additive Gaussian noise of std ``sigma`` x mean(E), clipped at 0, total restored.

    Imitates unresolved fluctuations (measurement or sub-grid noise). Clipping keeps energy
    non-negative; the float64 renormalisation afterwards restores sum E.
    """
    sigma = _finite_param("sigma", sigma, positive=True)
    e, dtype = _as64(energy)
    rng = _rng(seed)
    out = np.maximum(e + sigma * e.mean() * rng.standard_normal(e.shape), 0.0)
    if out.sum() <= 0:  # every pixel clipped away: nothing sensible to renormalise
        out = e.copy()
    return _checked_cast(_restore_total(out, e.sum()), dtype, f"gaussian noise (sigma {sigma})")


def apply_thermal_blur(energy: ArrayLike, sigma: float) -> NDArray:
    """Heat diffusion for time t = sigma^2 / 2: convolution with a periodic Gaussian kernel.

    The normalised periodic kernel makes the operator doubly stochastic, so sum E is conserved
    and Shannon entropy cannot decrease (up to float rounding).
    """
    sigma = _finite_param("sigma", sigma, positive=True)
    e, dtype = _as64(energy)
    axes = (e.ndim - 2, e.ndim - 1)
    out = ndimage.gaussian_filter(e, sigma, mode="wrap", axes=axes)
    out = np.maximum(out, 0.0)
    return _restore_total(out, e.sum()).astype(dtype)


def apply_energy_scaling(energy: ArrayLike, scale: float) -> NDArray:
    """Multiply E by ``scale`` (> 0): sum E is scaled by exactly that factor."""
    scale = _finite_param("scale", scale, positive=True)
    e, dtype = _as64(energy)
    return _checked_cast(e * scale, dtype, f"energy scaling by {scale}")


PERTURBATION_ORDER = ("rotation", "translation", "gaussian_noise", "thermal_blur", "energy_scaling")


@dataclass(frozen=True)
class PerturbationConfig:
    """Per-step perturbations of a sequence; ``None`` means not applied.

    rotation: max |angle| in degrees; translation: max |shift| in pixels; gaussian_noise and
    thermal_blur: sigma; energy_scaling: (min, max) factor; tolerance: conservation tolerance
    checked at every step.
    """

    rotation: float | None = None
    translation: int | None = None
    gaussian_noise: float | None = None
    thermal_blur: float | None = None
    energy_scaling: tuple[float, float] | None = None
    tolerance: float = physics.CONSERVATION_TOLERANCE

    def __post_init__(self) -> None:
        if self.energy_scaling is not None and (
                not isinstance(self.energy_scaling, (tuple, list)) or len(self.energy_scaling) != 2):
            raise SchemaError(f"perturbation config is invalid at energy_scaling: expected "
                              f"(min, max), got {self.energy_scaling!r}")
        for name in ("rotation", "translation", "gaussian_noise", "thermal_blur", "tolerance"):
            v = getattr(self, name)
            if isinstance(v, float) and not np.isfinite(v):
                raise SchemaError(f"perturbation config is invalid at {name}: {v} is not finite")
        if self.energy_scaling is not None and not all(
                isinstance(v, (int, float)) and np.isfinite(v) for v in self.energy_scaling):
            raise SchemaError(f"perturbation config is invalid at energy_scaling: "
                              f"{self.energy_scaling} must be finite numbers")
        validate(self.to_dict(), "perturbation-config", what="perturbation config")
        if self.energy_scaling is not None and self.energy_scaling[0] > self.energy_scaling[1]:
            raise SchemaError(f"perturbation config is invalid at energy_scaling: min "
                              f"{self.energy_scaling[0]} > max {self.energy_scaling[1]}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.rotation is not None:
            d["rotation"] = {"max_angle": self.rotation}
        if self.translation is not None:
            d["translation"] = {"max_shift": self.translation}
        if self.gaussian_noise is not None:
            d["gaussian_noise"] = {"sigma": self.gaussian_noise}
        if self.thermal_blur is not None:
            d["thermal_blur"] = {"sigma": self.thermal_blur}
        if self.energy_scaling is not None:
            lo, hi = self.energy_scaling
            d["energy_scaling"] = {"min": lo, "max": hi}
        if self.tolerance != physics.CONSERVATION_TOLERANCE:
            d["tolerance"] = self.tolerance
        return d

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PerturbationConfig:
        validate(doc, "perturbation-config", what="perturbation config")
        scaling = doc.get("energy_scaling")
        return cls(
            rotation=doc.get("rotation", {}).get("max_angle"),
            translation=doc.get("translation", {}).get("max_shift"),
            gaussian_noise=doc.get("gaussian_noise", {}).get("sigma"),
            thermal_blur=doc.get("thermal_blur", {}).get("sigma"),
            energy_scaling=(scaling["min"], scaling["max"]) if scaling else None,
            tolerance=doc.get("tolerance", physics.CONSERVATION_TOLERANCE),
        )


def _draw_step(config: PerturbationConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The perturbations (with drawn parameters) for one step, in PERTURBATION_ORDER."""
    ops: list[dict[str, Any]] = []
    if config.rotation is not None:
        ops.append({"kind": "rotation", "angle": float(rng.uniform(-config.rotation, config.rotation))})
    if config.translation is not None:
        sx, sy = rng.integers(-config.translation, config.translation + 1, size=2)
        ops.append({"kind": "translation", "shift_x": int(sx), "shift_y": int(sy)})
    if config.gaussian_noise is not None:
        ops.append({"kind": "gaussian_noise", "sigma": float(config.gaussian_noise),
                    "seed": int(rng.integers(0, 2**63 - 1))})
    if config.thermal_blur is not None:
        ops.append({"kind": "thermal_blur", "sigma": float(config.thermal_blur)})
    if config.energy_scaling is not None:
        lo, hi = config.energy_scaling
        ops.append({"kind": "energy_scaling", "scale": float(rng.uniform(lo, hi))})
    return ops


def apply_perturbation(energy: ArrayLike, op: Mapping[str, Any]) -> NDArray:
    """Apply one perturbation record ``{"kind": ..., **params}`` (as stored in step metadata)."""
    params = {k: v for k, v in op.items() if k != "kind"}
    kind = op.get("kind")
    fns: dict[str, Callable[..., NDArray]] = {
        "rotation": apply_rotation,
        "translation": apply_translation,
        "gaussian_noise": apply_gaussian_noise,
        "thermal_blur": apply_thermal_blur,
        "energy_scaling": apply_energy_scaling,
    }
    if kind not in fns:
        raise ValueError(f"unknown perturbation {kind!r}; known: {', '.join(fns)}")
    try:
        return fns[kind](energy, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for perturbation {kind!r}: {exc}") from None
