"""Run a solver preset: initial condition, warm-up, trajectory, energy, physics checks, lineage.

JAX and exponax are imported here lazily (they are the ``solvers`` extra). The initial
condition is exponax's Gaussian random field drawn with a threefry key made from the
sequence's seed (``SeedSequence(seed).generate_state(2, uint32)``), so a seed gives the same
arrays on every run of the same JAX backend; the warm-up is integrated and dropped inside the
same jitted function as the trajectory. The energy is derived in float64 NumPy from the state
(spectral derivatives) and checked with the state before anything is returned: a run that
goes non-finite or breaks a bound of its preset raises :class:`SolverDiverged`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import SolverDiverged
from atlasstore.physics.solvers.presets import EQUATIONS, SolverPreset, load_solver_preset


@dataclass(frozen=True)
class SolverRun:
    """One sequence: the stored energy per pixel and the solver's state, both (time, N, N)
    float32; one record per step (physical time, diagnostics) and the lineage record."""

    energy: NDArray[np.float32]
    state: NDArray[np.float32]
    steps: list[dict[str, Any]]
    lineage: dict[str, Any]


def _stepper_kwargs(solver: dict[str, Any]) -> dict[str, Any]:
    eq = EQUATIONS[solver["equation"]]
    return {**eq.fixed, **solver["parameters"], "order": int(solver["order"])}


@lru_cache(maxsize=8)
def _compiled(solver_json: str, n: int) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """The jitted ``key data -> initial state`` and ``(state, count) -> state after count
    stored steps`` of a preset's solver at N x N (cached per worker process, so a worker's
    later sequences skip the compilation; one compiled step serves warm-up and trajectory)."""
    import exponax  # type: ignore[import-untyped]  # (no py.typed: its names are Any)
    import jax
    import jax.numpy as jnp

    solver = json.loads(solver_json)
    obj: Any = exponax.stepper
    for part in EQUATIONS[solver["equation"]].stepper.split("."):
        obj = getattr(obj, part)
    base = obj(2, float(solver["domain_extent"]), n, float(solver["dt"]), **_stepper_kwargs(solver))
    stepper = exponax.RepeatedStepper(base, int(solver["substeps"]))
    ic = solver["initial_condition"]
    draw = exponax.ic.GaussianRandomField(2, domain_extent=float(solver["domain_extent"]),
                                          powerlaw_exponent=float(ic["powerlaw_exponent"]),
                                          zero_mean=True, std_one=True)

    def initial(key_data: Any) -> Any:
        key = jax.random.wrap_key_data(jnp.asarray(key_data, dtype=jnp.uint32))
        return draw(n, key=key) * float(ic["std"])

    def advance(u: Any, count: Any) -> Any:
        return jax.lax.fori_loop(0, count, lambda _, v: stepper(v), u)

    return jax.jit(initial), jax.jit(advance)


def _trajectory(preset: SolverPreset, seed: int, n: int, n_steps: int) -> NDArray[np.float32]:
    """(n_steps, N, N) states after the warm-up (integrated and dropped)."""
    initial, advance = _compiled(json.dumps(dict(preset.solver), sort_keys=True), n)
    u = initial(np.random.SeedSequence(int(seed)).generate_state(2, np.uint32))
    u = advance(u, int(preset.solver["warmup_steps"]))
    out = np.empty((n_steps, n, n), dtype=np.float32)
    out[0] = np.asarray(u)[0]
    for t in range(1, n_steps):
        u = advance(u, 1)
        out[t] = np.asarray(u)[0]
    return out


def _wavenumbers(n: int, extent: float, nyquist: bool = False
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Angular wavenumbers along axis 0 and 1; the Nyquist one zeroed (for first derivatives)
    unless ``nyquist``."""
    k = np.asarray(2 * np.pi / extent * np.fft.fftfreq(n, 1.0 / n), dtype=np.float64)
    if not nyquist:
        k[n // 2] = 0.0
    return k[:, None], k[None, :]


def energy_density(equation: str, state: NDArray[np.floating], extent: float) -> NDArray[np.float64]:
    """Energy per unit area of each (N, N) state of ``state`` (time, N, N), as the preset's
    equation defines it (:data:`EQUATIONS`); float64, non-negative."""
    s = np.asarray(state, dtype=np.float64)
    n = s.shape[-1]
    if equation == "swift_hohenberg":
        return 0.5 * s**2
    k0, k1 = _wavenumbers(n, extent)
    hat = np.fft.fft2(s)
    if equation == "kolmogorov_flow":
        q0, q1 = _wavenumbers(n, extent, nyquist=True)
        k2 = q0**2 + q1**2
        k2[0, 0] = 1.0
        hat = -hat / k2  # the stream function psi: Laplacian psi = w
        hat[..., 0, 0] = 0.0
        a, b = np.fft.ifft2(1j * k0 * hat).real, -np.fft.ifft2(1j * k1 * hat).real
    elif equation == "kuramoto_sivashinsky":
        a, b = np.fft.ifft2(1j * k0 * hat).real, np.fft.ifft2(1j * k1 * hat).real
    else:
        raise ValueError(f"no energy defined for equation {equation!r}")
    return 0.5 * (a**2 + b**2)


def _first(bad: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(bad)[0])


def check_run(preset: SolverPreset, state: NDArray[np.floating],
              mean_energy: NDArray[np.float64] | None, what: str) -> None:
    """Refuse (``SolverDiverged``) a trajectory that is non-finite anywhere, whose state leaves
    ``|u| <= checks.max_abs_state`` or whose mean energy density exceeds
    ``checks.max_mean_energy``; the message names the first step that fails and the value."""
    s = preset.solver
    hint = f"dt {s['dt']} x {s['substeps']} substeps, {state.shape[-2]}x{state.shape[-1]}"
    finite = np.isfinite(state).all(axis=(-2, -1))
    if not finite.all():
        t = _first(~finite)
        when = (f"during the {s['warmup_steps']} warm-up steps" if t == 0 and s["warmup_steps"]
                else f"at step {t}")
        raise SolverDiverged(f"{what}: the {s['equation']} solution went non-finite {when} "
                             f"(blow-up; {hint}); nothing stored")
    amax = np.abs(state).max(axis=(-2, -1))
    limit = float(s["checks"]["max_abs_state"])
    if (amax > limit).any():
        t = _first(amax > limit)
        raise SolverDiverged(f"{what}: max |state| {float(amax[t]):.6g} at step {t} exceeds the "
                             f"bound {limit:g} (checks.max_abs_state; {hint}); nothing stored")
    if mean_energy is not None:
        limit = float(s["checks"]["max_mean_energy"])
        bad = ~(mean_energy <= limit)  # NaN fails too
        if bad.any():
            t = _first(bad)
            raise SolverDiverged(f"{what}: mean energy density {float(mean_energy[t]):.6g} at "
                                 f"step {t} exceeds the bound {limit:g} (checks.max_mean_energy;"
                                 f" {hint}); nothing stored")


def lineage(preset: SolverPreset) -> dict[str, Any]:
    """What the sequence's ``generation.solver`` records: the preset's solver document as given
    (``preset``), the stepper, its exact arguments, exponax's and JAX's versions, the backend."""
    import exponax
    import jax

    eq = preset.equation
    return {"preset": preset.to_dict()["solver"], "package": "exponax",
            "version": exponax.__version__, "stepper": f"exponax.stepper.{eq.stepper}",
            "stepper_arguments": json.loads(json.dumps(_stepper_kwargs(dict(preset.solver)))),
            "repeated_substeps": int(preset.solver["substeps"]),
            "initial_condition": "exponax.ic.GaussianRandomField(zero_mean=True, std_one=True) "
                                 "x std, threefry key = SeedSequence(seed).generate_state(2, uint32)",
            "state": eq.state, "energy": eq.energy, "jax_version": jax.__version__,
            "backend": jax.default_backend(), "x64": bool(jax.config.read("jax_enable_x64"))}


def simulate(preset: SolverPreset | str, seed: int, n_steps: int | None = None,
             shape: tuple[int, int] | None = None) -> SolverRun:
    """Integrate one sequence of ``preset`` from ``seed``: ``n_steps`` stored steps (default
    the preset's) after the preset's warm-up, at ``shape`` (square; default the preset's).
    Raises :class:`SolverDiverged` for a run that blows up or fails its checks."""
    if not isinstance(preset, SolverPreset):
        preset = load_solver_preset(preset)
    n_steps = preset.n_steps if n_steps is None else int(n_steps)
    ny, nx = shape or preset.shape
    if ny != nx:
        raise ValueError(f"{preset.name}: the solver's grid is square, got {ny}x{nx}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    state = _trajectory(preset, seed, int(nx), n_steps)
    what = f"{preset.name} seed {seed}"
    check_run(preset, state, None, what)
    s = preset.solver
    extent = float(s["domain_extent"])
    density = energy_density(s["equation"], state, extent)
    mean = density.mean(axis=(-2, -1))
    check_run(preset, state, mean, what)
    dx2 = (extent / nx) ** 2
    step_dt = float(s["dt"]) * int(s["substeps"])
    amax = np.abs(state.astype(np.float64)).max(axis=(-2, -1))
    steps = [{"t": t, "time": (int(s["warmup_steps"]) + t) * step_dt,
              "metadata": {"mean_energy_density": float(mean[t]), "max_abs_state": float(amax[t])}}
             for t in range(n_steps)]
    return SolverRun((density * dx2).astype(np.float32), state, steps, lineage(preset))
