"""Physics-based synthetic energy maps: base patterns, perturbations, sequences, domain presets.

Patterns are normalised to mean energy 1 (sum E = number of pixels), non-negative and finite.
Perturbations take a map and return a new one; all of them except ``energy_scaling`` conserve
sum E (translation exactly, the others by renormalising in float64 after the operation), and none
can produce negative or non-finite values. Sequences are deterministic per seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from atlasstore.errors import SchemaError
from atlasstore.io.schemas import load_json, schema_dir, validate
from atlasstore.physics import fields as physics

Seed = int | np.random.SeedSequence | np.random.Generator

#: Largest float32 sequence one call may build in memory.
MAX_SEQUENCE_BYTES = 4 * 2**30


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise TypeError(f"seed must be an int or numpy SeedSequence, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(seed)


def _normalise(e: NDArray[np.float64]) -> NDArray[np.float32]:
    """Scale to mean 1 and cast to float32 (the stored dtype)."""
    e = np.maximum(e, 0.0)
    m = e.mean()
    if not np.isfinite(m) or m <= 0:
        raise physics.EnergyMapError("pattern produced a zero or non-finite field")
    return (e / m).astype(np.float32)


def _map_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """A pattern's (ny, nx): exactly two dimensions, a valid energy-map shape."""
    dims = physics.validate_shape(tuple(int(v) for v in shape), "pattern shape")
    if len(tuple(shape)) != 2:
        raise physics.EnergyMapError(f"pattern shape must be (ny, nx), got {tuple(shape)}")
    return dims


def _wavenumbers(shape: tuple[int, int]) -> NDArray[np.float64]:
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    return np.sqrt(kx**2 + ky**2)


# --------------------------------------------------------------------------- base patterns

def turbulent(shape: tuple[int, int], seed: Seed = 0, slope: float = -5.0 / 3.0) -> NDArray[np.float32]:
    """Kinetic energy density 0.5|u|^2 of a random 2D velocity field with a k^slope spectrum.

    Imitates developed turbulence: each velocity component is a Gaussian random field whose
    energy spectrum follows Kolmogorov's k^-5/3 inertial range (amplitude ~ k^((slope-1)/2) in
    2D), periodic in both directions.
    """
    ny, nx = _map_shape(shape)
    rng = _rng(seed)
    k = _wavenumbers((ny, nx))
    kmin = 1.0 / max(ny, nx)
    amp = np.where(k >= kmin, np.maximum(k, kmin) ** ((slope - 1.0) / 2.0), 0.0)
    comps = []
    for _ in range(2):
        white = np.fft.rfft2(rng.standard_normal((ny, nx)))
        comps.append(np.fft.irfft2(white * amp, s=(ny, nx)))
    u, v = comps
    return _normalise(0.5 * (u**2 + v**2))


def laminar(shape: tuple[int, int], seed: Seed = 0) -> NDArray[np.float32]:
    """Kinetic energy of plane Poiseuille channel flow with a weak travelling wave.

    Imitates laminar flow between walls at y = 0 and y = 1: u(y) = 4y(1-y), perturbed by a small
    Tollmien-Schlichting-like mode eps*sin(pi y)*sin(2 pi m x / L + phase) with random eps, m and
    phase; energy 0.5 u^2 plus a faint floor so no pixel is exactly zero.
    """
    ny, nx = _map_shape(shape)
    rng = _rng(seed)
    y = (np.arange(ny)[:, None] + 0.5) / ny
    x = np.arange(nx)[None, :] / nx
    eps = rng.uniform(0.02, 0.08)
    m = rng.integers(1, 5)
    phase = rng.uniform(0, 2 * np.pi)
    u = 4 * y * (1 - y) + eps * np.sin(np.pi * y) * np.sin(2 * np.pi * m * x + phase)
    return _normalise(0.5 * u**2 + 1e-3)


def vortex(shape: tuple[int, int], seed: Seed = 0, n_vortices: int | None = None) -> NDArray[np.float32]:
    """Kinetic energy of a few superposed Lamb-Oseen vortices.

    Imitates coherent vortices in 2D flow: each has a random centre, circulation sign and size,
    and azimuthal velocity Gamma/(2 pi r) * (1 - exp(-r^2 / r_c^2)); energy 0.5|u|^2 plus a faint
    background.
    """
    ny, nx = _map_shape(shape)
    rng = _rng(seed)
    n = int(rng.integers(3, 9)) if n_vortices is None else int(n_vortices)
    if n < 1:
        raise ValueError(f"n_vortices must be >= 1, got {n}")
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    u = np.zeros((ny, nx))
    v = np.zeros((ny, nx))
    short = min(ny, nx)
    for _ in range(n):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        gamma = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
        rc = rng.uniform(0.03, 0.12) * short
        dy, dx = yy - cy, xx - cx
        r2 = dx**2 + dy**2 + 1e-12
        ut = gamma / (2 * np.pi) * (1 - np.exp(-r2 / rc**2)) / r2  # u_theta / r
        u += -ut * dy
        v += ut * dx
    e = 0.5 * (u**2 + v**2)
    return _normalise(e + 1e-3 * e.mean())


def random(shape: tuple[int, int], seed: Seed = 0) -> NDArray[np.float32]:
    """Uncorrelated energy 0.5(u^2 + v^2) with Gaussian u, v: exponentially distributed.

    Imitates thermal equilibrium (equipartition over two degrees of freedom, a Maxwell-Boltzmann
    energy distribution) with no spatial correlation.
    """
    ny, nx = _map_shape(shape)
    rng = _rng(seed)
    u, v = rng.standard_normal((2, ny, nx))
    return _normalise(0.5 * (u**2 + v**2))


PATTERNS: dict[str, Callable[..., NDArray[np.float32]]] = {
    "turbulent": turbulent,
    "laminar": laminar,
    "vortex": vortex,
    "random": random,
}


def make_pattern(name: str, shape: tuple[int, int], seed: Seed = 0) -> NDArray[np.float32]:
    """Base pattern by name; unknown names are refused listing the known ones."""
    try:
        fn = PATTERNS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}") from None
    return fn(tuple(shape), seed)


# --------------------------------------------------------------------------- perturbations

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


# --------------------------------------------------------------------------- sequences

def generate_sequence(base_map: ArrayLike, n_steps: int = 10,
                      config: PerturbationConfig | Mapping[str, Any] | None = None,
                      seed: Seed = 0) -> tuple[NDArray[np.float32], list[dict[str, Any]]]:
    """Evolve ``base_map`` for ``n_steps`` maps (step 0 is the base) under ``config``.

    Each step applies every configured perturbation, in PERTURBATION_ORDER, to the previous
    step, with parameters drawn from a generator seeded by ``seed``: the same inputs give
    bit-identical output. Every step is checked for energy conservation (scaled by the step's
    energy_scaling factor) and raises :class:`physics.ThermodynamicViolation` if it fails.
    Returns the (n_steps, y, x) float32 sequence and one metadata dict per step: perturbations
    with their parameters, sum, mean, variance, entropy, entropy change, conservation error.
    """
    base = physics.validate_energy(base_map, "base map")
    if base.ndim != 2:
        raise physics.EnergyMapError(f"base map: expected a 2D (y, x) map, got shape {base.shape}")
    physics.validate_shape(base.shape, "base map")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    need = int(n_steps) * base.size * 4
    if need > MAX_SEQUENCE_BYTES:
        raise ValueError(f"a sequence of {n_steps} steps of {base.shape[0]}x{base.shape[1]} maps needs "
                         f"{need / 2**30:.1f} GiB (limit {MAX_SEQUENCE_BYTES / 2**30:.0f} GiB); "
                         f"use fewer steps")
    if config is None:
        config = PerturbationConfig()
    elif not isinstance(config, PerturbationConfig):
        config = PerturbationConfig.from_dict(config)
    rng = _rng(seed)
    seq = np.empty((int(n_steps), *base.shape), dtype=np.float32)
    seq[0] = base.astype(np.float32)
    meta = [_step_meta(0, [], seq[0], None, 0.0)]
    for t in range(1, int(n_steps)):
        ops = _draw_step(config, rng)
        cur = seq[t - 1]
        factor = 1.0
        for op in ops:
            cur = apply_perturbation(cur, op)
            if op["kind"] == "energy_scaling":
                factor *= op["scale"]
        err = physics.check_energy_conservation(seq[t - 1], cur, config.tolerance, factor,
                                                context=f"step {t}")
        seq[t] = cur
        meta.append(_step_meta(t, ops, seq[t], seq[t - 1], err))
    return seq, meta


def _step_meta(t: int, ops: list[dict[str, Any]], e: NDArray, prev: NDArray | None,
               err: float) -> dict[str, Any]:
    s = physics.map_stats(e)
    return {
        "t": t,
        "perturbations": ops,
        "sum": s["sum"],
        "mean": s["mean"],
        "variance": s["variance"],
        "entropy": s["entropy"],
        "entropy_change": 0.0 if prev is None else s["entropy"] - float(physics.entropy(prev)),
        "conservation_error": err,
    }


# --------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class DomainPreset:
    """A physics domain: base pattern, map shape, default steps and perturbations."""

    name: str
    pattern: str
    shape: tuple[int, int]
    n_steps: int
    perturbations: PerturbationConfig
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DomainPreset:
        validate(doc, "preset", what=f"preset {doc.get('name', '?')!r}" if isinstance(doc, Mapping) else None)
        shape = tuple(doc["shape"])
        physics.validate_shape(shape, f"preset {doc['name']!r} shape")
        return cls(name=doc["name"], pattern=doc["pattern"], shape=(int(shape[0]), int(shape[1])),
                   n_steps=doc["n_steps"],
                   perturbations=PerturbationConfig.from_dict(doc["perturbations"]),
                   description=doc.get("description", ""), source=dict(doc))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "pattern": self.pattern,
                "shape": list(self.shape), "n_steps": self.n_steps,
                "perturbations": self.perturbations.to_dict()}


DEFAULT_DOMAINS = ("plasma_physics", "fluid_dynamics", "astrophysics",
                   "turbulent_radiative_layer", "active_matter")


def preset_dir() -> Path:
    return schema_dir() / "presets"


def list_presets() -> list[str]:
    """Names of the shipped domain presets."""
    return sorted(p.stem for p in preset_dir().glob("*.json"))


def load_preset(name_or_path: str | Path | Mapping[str, Any]) -> DomainPreset:
    """A shipped preset by name, a preset JSON file, or a preset dict; validated on load."""
    if isinstance(name_or_path, Mapping):
        return DomainPreset.from_dict(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return DomainPreset.from_dict(load_json(p, "preset"))
    name = str(name_or_path)
    if name not in list_presets():
        raise ValueError(f"unknown domain preset {name!r}; known: {', '.join(list_presets())}")
    return DomainPreset.from_dict(json.loads((preset_dir() / f"{name}.json").read_text()))


def synthesize(preset: DomainPreset | str, seed: Seed, n_steps: int | None = None,
               shape: tuple[int, int] | None = None) -> tuple[NDArray[np.float32], list[dict[str, Any]]]:
    """One sequence of a domain: base pattern and evolution, both derived from ``seed``."""
    if not isinstance(preset, DomainPreset):
        preset = load_preset(preset)
    if isinstance(seed, np.random.SeedSequence):
        root = seed
    elif isinstance(seed, np.random.Generator):
        raise TypeError("synthesize needs a reproducible seed (int or SeedSequence), not a Generator")
    else:
        _rng(seed)  # type and sign checks
        root = np.random.SeedSequence(int(seed))
    # Child sequences built explicitly (not .spawn) so a caller's SeedSequence is never mutated.
    pattern_seed, evolve_seed = (np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, i))
                                 for i in range(2))
    ny, nx = shape or preset.shape
    base = make_pattern(preset.pattern, (int(ny), int(nx)), pattern_seed)
    return generate_sequence(base, preset.n_steps if n_steps is None else n_steps,
                             preset.perturbations, evolve_seed)
