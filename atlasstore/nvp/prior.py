"""The NVP's physics prior P_d: a per-domain operator fitted by least squares before training.

The synthetic domains evolve as E_{t+1} = blur(clip(E_t + noise)) (four domains) or
E_{t+1} = blur(rotate(E_t, random angle)) (the rotating one). For such data the best predictor
given E_t is, almost exactly, a linear operator: a heat kernel, averaged over the rotation angles
where the map rotates, applied after a "noise floor" that lifts the small values the clipping of
noise raises. A network must contain that operator to get within the noise floor on a CPU
budget (docs/nvp.md); the NVP learns a correction on top of it
(:mod:`.model`). Per domain d (one set of numbers per domain the model was trained on)::

    P_d(E) = G_{sigma_d} * sum_j w_dj R_{theta_j}( F_{tau_d}(E) )

* ``F_tau`` (:func:`noise_floor`): the expected value of a non-negative field after zero-mean
  Gaussian noise of standard deviation ``tau * mean(E)`` and clipping at zero, rescaled to the
  same sum; ``tau = 0`` is the identity.
* ``R_theta`` (:func:`rotate`): rotation about the centre of the periodic map by a fixed bank of
  angles (:attr:`angles`, degrees); by three shears with linear interpolation, as the generator
  rotates, so each is doubly stochastic. The weights ``w_d`` are non-negative and sum to 1
  (fitted by non-negative least squares): a domain that does not rotate puts its weight on 0.
* ``G_sigma`` (:func:`heat_blur`): the periodic heat kernel ``exp(-2 pi^2 sigma^2 |k|^2)``
  applied with the FFT.

A convex combination of doubly stochastic operators is doubly stochastic: the rotation bank and
the heat kernel conserve sum E, keep E >= 0 and cannot lower Shannon entropy; the noise floor
conserves sum E by construction. :func:`fit_prior` fits (sigma, tau, w) of one domain on
training pairs: a wide sigma grid, non-negative least squares for w, then a tau x sigma grid.

With ``model.prior = "linear_ar"`` the model's prior is instead the evaluation's linear AR
stencil (:func:`~.baselines.fit_linear_ar`, fitted per domain on the same training windows):
``P_d(E) = sum_tau K_d,tau * E_{t-tau} + c_d`` (:func:`apply_linear_ar`), stored in
:attr:`DomainPrior.ar_kernels` / :attr:`DomainPrior.ar_bias`, with ``rmse`` its RMS error. It is
not doubly stochastic: it need not conserve sum E nor keep E >= 0 (the model clamps at 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray
from scipy import fft, optimize

__all__ = [
    "SIGMA_GRID",
    "TAU_GRID",
    "DomainPrior",
    "apply_linear_ar",
    "apply_prior",
    "fit_prior",
    "heat_blur",
    "noise_floor",
    "rotate",
    "rotate_bank",
]

#: sigma (pixels of the predicted level) tried first: fine where the noise domains sit, wide
#: enough for the rotating domain (about 24 px at 128 with no rotation bank)
SIGMA_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5,
                                 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0)
#: relative noise levels tried for the noise floor
TAU_GRID: tuple[float, ...] = (0.0, 0.02, 0.05, 0.08, 0.11, 0.15, 0.2, 0.25, 0.3, 0.4)


# ------------------------------------------------------------------------------------ operators


def heat_blur(x: jax.Array, sigma: Any) -> jax.Array:
    """Periodic heat kernel of width ``sigma`` (pixels; a scalar or one per map, broadcast against
    ``x.shape[:-2]``) over the last two axes, by the FFT. Conserves sum x; sigma 0 is identity."""
    ny, nx = x.shape[-2:]
    k2 = (jnp.fft.fftfreq(ny)[:, None] ** 2 + jnp.fft.rfftfreq(nx)[None, :] ** 2)
    s = jnp.asarray(sigma, x.dtype)[..., None, None]
    gain = jnp.exp(-2.0 * math.pi ** 2 * jnp.square(s) * k2)
    return jnp.fft.irfft2(jnp.fft.rfft2(x) * gain, s=(ny, nx)).astype(x.dtype)


def noise_floor(x: jax.Array, tau: Any) -> jax.Array:
    """E[max(x + n, 0)] with n ~ N(0, (tau mean(x))^2) per pixel, rescaled to sum x (per map over
    the last two axes; ``tau`` a scalar or one per map). tau 0 returns x itself."""
    tau = jnp.asarray(tau, x.dtype)[..., None, None]
    m = jnp.mean(x, axis=(-2, -1), keepdims=True)
    t = jnp.maximum(tau * m, 1e-12 * m + 1e-30)
    z = x / t
    out = x * jax.scipy.special.ndtr(z) + t * jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    total = jnp.sum(x, axis=(-2, -1), keepdims=True)
    out = out * total / jnp.maximum(jnp.sum(out, axis=(-2, -1), keepdims=True), 1e-30)
    return jnp.where(tau > 0, out, x)


@functools.lru_cache(maxsize=256)
def _rotation_plan(shape: tuple[int, int], angle: float
                   ) -> tuple[int, tuple[tuple[str, NDArray[np.complex64]], ...]]:
    """(quarter turns, shears) of :func:`atlasstore.physics.synth.apply_rotation` for a map shape. A shear
    shifts every row (axis "x") or column (axis "y") periodically by ``s`` = whole ``w`` +
    fraction ``f`` pixels with linear interpolation, ``(1 - f) e[i - w] + f e[i - w - 1]``; in
    Fourier space along that axis this is the factor ``exp(-2 pi i k w / n) ((1 - f) + f
    exp(-2 pi i k / n))``, stored per row (or column) and frequency."""
    ny, nx = shape
    r = (float(angle) + 180.0) % 360.0 - 180.0
    quarter = 90.0 if ny == nx else 180.0
    k = int(np.round(r / quarter))
    rest = r - k * quarter
    turns = k * int(quarter // 90)
    shears: list[tuple[str, NDArray[np.complex64]]] = []
    if abs(rest) > 1e-12:
        t = np.deg2rad(-rest)
        a, b = -np.tan(t / 2), np.sin(t)
        sy, sx = (ny, nx) if turns % 2 == 0 else (nx, ny)
        for amount, axis in ((a, "x"), (b, "y"), (a, "x")):
            rows, cols = (sy, sx) if axis == "x" else (sx, sy)
            shifts = amount * (np.arange(rows) - (rows - 1) / 2.0)
            whole = np.floor(shifts)[:, None]
            frac = shifts[:, None] - whole
            phase = np.exp(-2j * np.pi * np.fft.rfftfreq(cols)[None, :])
            h = phase ** whole * ((1 - frac) + frac * phase)          # (rows, cols // 2 + 1)
            shears.append((axis, (h if axis == "x" else h.T).astype(np.complex64)))
    return turns, tuple(shears)


def _shear(x: jax.Array, axis: str, h: NDArray[np.complex64]) -> jax.Array:
    """Apply one shear of :func:`_rotation_plan` by FFTs along its axis (the same linear
    interpolation as a gather, to rounding, and several times faster under XLA on CPU)."""
    ax = -1 if axis == "x" else -2
    n = x.shape[ax]
    return jnp.fft.irfft(jnp.fft.rfft(x, axis=ax) * jnp.asarray(h), n=n, axis=ax).astype(x.dtype)


def rotate(x: jax.Array, angle: float) -> jax.Array:
    """Rotate maps (..., y, x) by ``angle`` degrees about the centre of the periodic domain, as
    :func:`atlasstore.physics.synth.apply_rotation` does (quarter turns, then three shears with linear
    interpolation), without its final float64 rescaling: every step is a permutation or a doubly
    stochastic shear, so sum x is conserved to rounding."""
    turns, shears = _rotation_plan(tuple(int(s) for s in x.shape[-2:]), float(angle))
    out = jnp.rot90(x, turns, axes=(-2, -1)) if turns % 4 else x
    for axis, h in shears:
        out = _shear(out, axis, h)
    return out


def rotate_bank(x: jax.Array, angles: Sequence[float]) -> jax.Array:
    """(J, ..., y, x): ``x`` rotated by each angle of the bank."""
    return jnp.stack([rotate(x, a) for a in angles])


_rotate_bank_jit = jax.jit(rotate_bank, static_argnums=1)


def apply_prior(x: jax.Array, sigma: Any, tau: Any, weights: jax.Array | None,
                angles: Sequence[float]) -> jax.Array:
    """P(x) for maps (B, y, x) with per-map parameters (``sigma``, ``tau``: (B,) or scalars;
    ``weights``: (B, J) over the rotation bank ``angles``, or None without a bank)."""
    u = noise_floor(x, tau)
    if angles:
        bank = rotate_bank(u, angles)                       # (J, B, y, x)
        u = jnp.einsum("jb...,bj->b...", bank, jnp.asarray(weights, x.dtype))
    return heat_blur(u, sigma)


def apply_linear_ar(history: jax.Array, kernels: jax.Array, bias: jax.Array) -> jax.Array:
    """The linear AR stencil of :class:`~.baselines.LinearAR` in JAX, per map: ``history``
    (B, n, y, x) oldest first, ``kernels`` (B, p, k, k) (tau 0 the newest step, p <= n), ``bias``
    (B,); the same periodic convolution as ``LinearAR.predict`` (to float32 rounding)."""
    ny, nx = history.shape[-2:]
    p, k = kernels.shape[1], kernels.shape[-1]
    r = k // 2
    if k > min(ny, nx):
        raise ValueError(f"a {k}-tap stencil does not fit {ny}x{nx} maps")
    if p > history.shape[1]:
        raise ValueError(f"the stencil needs {p} input steps, got {history.shape[1]}")
    full = jnp.pad(kernels.astype(history.dtype), ((0, 0), (0, 0), (0, ny - k), (0, nx - k)))
    full = jnp.roll(full, (-r, -r), axis=(-2, -1))            # tap (dy, dx) at (dy % ny, dx % nx)
    recent = history[:, ::-1][:, :p]                             # tau 0 first
    out = jnp.fft.irfft2(jnp.fft.rfft2(recent) * jnp.fft.rfft2(full), s=(ny, nx)).sum(axis=1)
    return (out + bias[:, None, None]).astype(history.dtype)


# ------------------------------------------------------------------------------------ fitting


@dataclass(frozen=True)
class DomainPrior:
    """The fitted prior of one domain and how well it and simpler predictors fit the pairs."""

    sigma: float
    tau: float
    weights: tuple[float, ...]
    rmse: float               # the prior's RMS error on the fitting pairs (physical units)
    persistence_rmse: float
    diffusion_rmse: float     # the best plain heat kernel of the sigma grid
    pairs: int
    # model.prior "linear_ar": the stencil (p, 2r+1, 2r+1), tau 0 the newest step, and its bias
    # (then ``rmse`` is the stencil's); None for the physics prior
    ar_kernels: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    ar_bias: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = list(self.weights)
        if self.ar_kernels is None:  # physics records stay as they were
            del d["ar_kernels"], d["ar_bias"]
        else:
            d["ar_kernels"] = np.asarray(self.ar_kernels, float).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainPrior:
        k = d.get("ar_kernels")
        return cls(**{**d, "weights": tuple(float(w) for w in d["weights"]),
                      "ar_kernels": None if k is None else tuple(
                          tuple(tuple(float(v) for v in row) for row in kk) for kk in k)})


def _nnls_simplex(gram: NDArray[np.float64], rhs: NDArray[np.float64]) -> NDArray[np.float64]:
    """argmin_w w'Gw - 2 b'w over w >= 0, sum w = 1 (NNLS with a heavily weighted sum row)."""
    j = len(rhs)
    if j == 1:
        return np.ones(1)
    scale = float(np.trace(gram)) / j or 1.0
    g = gram / scale + 1e-9 * np.eye(j)
    chol = np.linalg.cholesky(g)
    a = np.vstack([chol.T, 1e3 * np.ones((1, j))])
    b = np.concatenate([np.linalg.solve(chol, rhs / scale), [1e3]])
    w, _ = optimize.nnls(a, b, maxiter=50 * j)
    s = w.sum()
    return w / s if s > 0 else np.eye(j)[0]


def _spectral_mse(spec: _Spectra, sigma: float) -> float:
    """The least-squares MSE of ``spec`` at ``sigma`` (a sort key over sigmas)."""
    return float(spec.mse(float(sigma))[0])


class _Spectra:
    """Second moments of the spectra of a rotation bank and of the targets, so that the mean
    squared error of sum_j w_j G_sigma R_j x against y costs O(J^2 k) per (sigma, w) by
    Parseval instead of a blur of every map. Built chunk by chunk (``make(chunk)`` gives the
    bank (J, b, y, x) of a chunk of maps), so memory does not grow with the number of pairs."""

    def __init__(self, make: Any, y: NDArray[np.float32], chunk: int = 16) -> None:
        ny, nx = y.shape[-2:]
        kshape = (ny, nx // 2 + 1)
        wk = np.full(kshape[1], 2.0)
        wk[0] = 1.0
        if nx % 2 == 0:
            wk[-1] = 1.0
        norm = wk / (ny * nx * y.size)   # Parseval over rfft, then the mean over all pixels
        k = kshape[0] * kshape[1]
        cross = rhs = None
        self.yy = 0.0
        for i in range(0, y.shape[0], chunk):
            bank = np.asarray(make(slice(i, i + chunk)), np.float64)
            j, b = bank.shape[:2]
            fb = fft.rfft2(bank, workers=-1)                                   # (J, b, ky, kx)
            fy = fft.rfft2(y[i:i + chunk].astype(np.float64), workers=-1)
            fbk = np.ascontiguousarray(fb.reshape(j, b, k).transpose(2, 0, 1))  # (K, J, b)
            c = np.matmul(fbk.conj(), fbk.transpose(0, 2, 1)).real             # (K, J, J)
            r = np.matmul(fbk.conj(), fy.reshape(b, k).T[:, :, None])[..., 0].real  # (K, J)
            cross = c if cross is None else cross + c
            rhs = r if rhs is None else rhs + r
            self.yy += float((np.abs(fy) ** 2 * norm).sum())
        assert cross is not None and rhs is not None
        j = cross.shape[-1]
        self.cross = cross.transpose(1, 2, 0).reshape(j, j, *kshape) * norm
        self.rhs = rhs.T.reshape(j, *kshape) * norm
        self.k2 = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.rfftfreq(nx)[None, :] ** 2

    def moments(self, sigma: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        g = np.exp(-2.0 * math.pi ** 2 * sigma ** 2 * self.k2)
        return (np.einsum("ijyx,yx->ij", self.cross, g * g),
                np.einsum("jyx,yx->j", self.rhs, g))

    def mse(self, sigma: float, w: NDArray[np.float64] | None = None
            ) -> tuple[float, NDArray[np.float64]]:
        """(MSE, weights): with ``w`` None the best simplex weights for this sigma."""
        gram, b = self.moments(sigma)
        if w is None:
            w = _nnls_simplex(gram, b)
        return max(self.yy - 2 * float(w @ b) + float(w @ gram @ w), 0.0), w


def fit_prior(prev: Any, target: Any, angles: Sequence[float] = (),
              sigmas: Sequence[float] = SIGMA_GRID, taus: Sequence[float] = TAU_GRID
              ) -> DomainPrior:
    """Fit (sigma, tau, w) of one domain by least squares on training pairs (B, y, x).

    1. the plain heat kernel on ``sigmas`` (also the diffusion reference);
    2. for every tau of ``taus`` and every sigma of ``sigmas`` and of a fine grid around the best
       of that tau, the non-negative rotation weights summing to 1 that fit best (closed form).
       Angles that get no weight (< 1e-3) at tau 0 are left out for the other taus: a domain
       that does not rotate then costs no rotations.
    Errors come from the spectra by Parseval (:class:`_Spectra`), so a grid point costs no blur.
    """
    x = np.asarray(prev, np.float32)
    y = np.asarray(target, np.float32)
    if x.ndim != 3 or x.shape != y.shape or x.shape[0] < 1:
        raise ValueError(f"fit_prior needs (B, y, x) pairs of equal shape, got {x.shape} and "
                         f"{y.shape}")
    angles = tuple(float(a) for a in angles)
    if angles and 0.0 not in angles:
        raise ValueError(f"the rotation bank must include 0 degrees, got {list(angles)}")
    plain = _Spectra(lambda sl: x[None, sl], y)
    table = {float(s): plain.mse(float(s), np.ones(1))[0] for s in sigmas}
    diffusion = min(table.values())
    best: tuple[float, float, float, dict[float, float]] = (math.inf, 0.0, 0.0, {0.0: 1.0})
    active = angles or (0.0,)

    def bank(t: float, sl: slice) -> Any:
        u = jnp.asarray(x[sl])
        u = noise_floor(u, t) if t > 0 else u
        return _rotate_bank_jit(u, active) if angles else u[None]

    for t in sorted(set(taus) | {0.0}):
        spec = _Spectra(functools.partial(bank, t), y)
        coarse = min(sigmas, key=functools.partial(_spectral_mse, spec))
        fine = np.unique(np.concatenate([np.asarray(sigmas, float),
                                         coarse * np.linspace(0.6, 1.4, 41)]))
        for s in fine:
            err, w = spec.mse(float(s))
            if err < best[0]:
                best = (err, float(s), float(t), dict(zip(active, w.tolist(), strict=True)))
        if t == 0.0 and angles:
            active = tuple(a for a in angles if best[3].get(a, 0.0) >= 1e-3 or a == 0.0)
    err, sigma, tau, wmap = best
    return DomainPrior(sigma=sigma, tau=tau,
                       weights=tuple(float(wmap.get(a, 0.0)) for a in angles),
                       rmse=math.sqrt(err),
                       persistence_rmse=math.sqrt(float(np.mean(np.square(x - y)))),
                       diffusion_rmse=math.sqrt(diffusion), pairs=int(x.shape[0]))
