"""Physics-based synthetic energy maps: base patterns, perturbations, sequences, domain presets.

Patterns are normalised to mean energy 1 (sum E = number of pixels), non-negative and finite.
Perturbations take a map and return a new one; all of them except ``energy_scaling`` conserve
sum E (translation exactly, the others by renormalising in float64 after the operation), and none
can produce negative or non-finite values. Sequences are deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from atlasstore.io.schemas import named_document, schema_dir, validate
from atlasstore.physics import fields as physics
from atlasstore.physics.perturbations import (
    PERTURBATION_ORDER,
    PerturbationConfig,
    Seed,
    _draw_step,
    _rng,
    apply_energy_scaling,
    apply_gaussian_noise,
    apply_perturbation,
    apply_rotation,
    apply_thermal_blur,
    apply_translation,
)

#: the perturbations are part of this module's API (``synth.apply_rotation``, ...)
__all__ = ["DEFAULT_DOMAINS", "DomainPreset", "MAX_SEQUENCE_BYTES", "PATTERNS",
           "PERTURBATION_ORDER", "PerturbationConfig", "Seed", "apply_energy_scaling",
           "apply_gaussian_noise", "apply_perturbation", "apply_rotation", "apply_thermal_blur",
           "apply_translation", "generate_sequence", "laminar", "list_presets", "load_preset",
           "make_pattern", "preset_dir", "random", "synthesize", "turbulent", "vortex"]


#: Largest float32 sequence one call may build in memory.
MAX_SEQUENCE_BYTES = 4 * 2**30


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
    return DomainPreset.from_dict(named_document(name_or_path, preset_dir(), "preset",
                                                 "domain preset"))


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
