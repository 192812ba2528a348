"""Reference predictors the model must beat, each fitted **per domain** on training pairs.

* **persistence**: E_pred = E_t.
* **diffusion**: a periodic Gaussian blur of E_t, sigma from a wide grid (0 to 32 px: the
  rotating domain wants about 24 px at 128) by least squares (:func:`fit_diffusion_sigma`).
* **linear_ar**: the best affine stencil on the last p steps,
  ``E_pred = sum_tau K_tau * E_{t-tau} + c`` with (2r+1)^2 periodic taps per step, fitted by
  least squares (:func:`fit_linear_ar`; the normal equations come from FFT correlations, so the
  fit is exact and cheap).

Each gets a homoscedastic Gaussian predictive whose standard deviation is its RMS error on the
same training pairs of its domain, so that NLL, CRPS and coverage compare with the model's; the
persistence one is the "persistence-centred Gaussian with the training residual variance" of the
goals. :func:`fit_baselines` fits all of them for every domain; nothing here sees evaluation data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from atlasstore.nvp.prior import SIGMA_GRID, DomainPrior, fit_prior

#: scipy.ndimage boundary modes :func:`diffusion` accepts
BlurMode = Literal["wrap", "reflect", "nearest", "mirror", "constant"]

__all__ = [
    "BASELINES",
    "DEFAULT_SIGMAS",
    "DomainBaselines",
    "FittedBaselines",
    "LinearAR",
    "diffusion",
    "fit_baselines",
    "fit_diffusion_sigma",
    "fit_linear_ar",
    "linear_ar_prior",
    "persistence",
]

DEFAULT_SIGMAS: tuple[float, ...] = SIGMA_GRID
#: the baselines, in report order
BASELINES = ("persistence", "diffusion", "linear_ar")


def persistence(prev: Any) -> NDArray[np.float64]:
    """E_pred = E_t."""
    return np.asarray(prev, np.float64)


def diffusion(prev: Any, sigma: float, mode: BlurMode = "wrap") -> NDArray[np.float64]:
    """Gaussian blur of E_t over the last two axes (periodic by default: the synthetic data's
    thermal blur is periodic); conserves sum E; sigma 0 is persistence."""
    e = np.asarray(prev, np.float64)
    if sigma <= 0:
        return e.copy()
    return ndimage.gaussian_filter(e, sigma, mode=mode, axes=(e.ndim - 2, e.ndim - 1))


def fit_diffusion_sigma(prev: Any, target: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                        mode: BlurMode = "wrap") -> tuple[float, list[dict[str, float]]]:
    """The sigma (pixels) of :func:`diffusion` with the least MSE against ``target``, and the
    table of every sigma tried."""
    prev = np.asarray(prev, np.float64)
    target = np.asarray(target, np.float64)
    table = [{"sigma": float(s),
              "mse": float(np.mean(np.square(diffusion(prev, s, mode) - target)))}
             for s in sigmas]
    best = min(table, key=lambda r: r["mse"])
    return best["sigma"], table


# ------------------------------------------------------------------------------------ linear AR


@dataclass(frozen=True)
class LinearAR:
    """An affine periodic stencil on the last ``p`` steps: ``kernels[tau]`` (2r+1, 2r+1) applies
    to E_{t-tau} (tau 0 is the newest), centred; ``bias`` is added."""

    kernels: NDArray[np.float64]  # (p, 2r+1, 2r+1)
    bias: float

    @property
    def steps(self) -> int:
        return int(self.kernels.shape[0])

    def predict(self, history: Any) -> NDArray[np.float64]:
        """One step from ``history`` (B, n, y, x), oldest first (n >= p); (B, y, x)."""
        h = np.asarray(history, np.float64)
        if h.ndim != 4 or h.shape[1] < self.steps:
            raise ValueError(f"linear AR needs (B, >= {self.steps}, y, x) history, got {h.shape}")
        ny, nx = h.shape[-2:]
        r = self.kernels.shape[-1] // 2
        if 2 * r + 1 > min(ny, nx):
            raise ValueError(f"a {2 * r + 1}-tap stencil does not fit {ny}x{nx} maps")
        out = np.zeros((h.shape[0], ny, nx))
        for tau in range(self.steps):
            full = np.zeros((ny, nx))
            ky, kx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
            full[ky % ny, kx % nx] = self.kernels[tau]
            out += np.fft.irfft2(np.fft.rfft2(h[:, -1 - tau]) * np.fft.rfft2(full), s=(ny, nx))
        return out + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "radius": int(self.kernels.shape[-1] // 2),
                "bias": self.bias, "kernel_sums": self.kernels.sum(axis=(1, 2)).tolist()}


def _xcorr(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """sum over the batch of the periodic cross-correlation R(d) = sum_u a(u) b(u + d)."""
    ny, nx = a.shape[-2:]
    return np.fft.irfft2((np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b)).sum(0), s=(ny, nx))


def fit_linear_ar(history: Any, target: Any, radius: int = 4, steps: int = 1,
                  ridge: float = 1e-9) -> LinearAR:
    """Least-squares affine stencil of ``steps`` steps and ``radius`` taps each way from
    ``history`` (B, n, y, x) (oldest first) to ``target`` (B, y, x).

    The normal equations are built from FFT cross-correlations (exact for periodic maps): the
    Gram entry of taps s, s' of steps tau, tau' is R_{tau,tau'}(s - s') and the right-hand side
    R_{tau,y}(s). ``ridge`` (relative to the mean diagonal) only guards the solve.
    """
    h = np.asarray(history, np.float64)
    y = np.asarray(target, np.float64)
    if h.ndim != 4 or y.shape != (h.shape[0], *h.shape[2:]):
        raise ValueError(f"fit_linear_ar needs history (B, n, y, x) and target (B, y, x), got "
                         f"{h.shape} and {y.shape}")
    if not 1 <= steps <= h.shape[1]:
        raise ValueError(f"steps must be in [1, {h.shape[1]}], got {steps}")
    ny, nx = y.shape[-2:]
    if radius < 0 or 2 * radius + 1 > min(ny, nx):
        raise ValueError(f"radius {radius} does not fit {ny}x{nx} maps")
    offs = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    x = [h[:, -1 - tau] for tau in range(steps)]
    m = len(offs)
    n = steps * m + 1
    gram = np.zeros((n, n))
    rhs = np.zeros(n)
    for i in range(steps):
        for j in range(i, steps):
            r = _xcorr(x[i], x[j])
            blk = np.array([[r[(s[0] - t[0]) % ny, (s[1] - t[1]) % nx] for t in offs]
                            for s in offs])
            gram[i * m:(i + 1) * m, j * m:(j + 1) * m] = blk
            gram[j * m:(j + 1) * m, i * m:(i + 1) * m] = blk.T
        ry = _xcorr(x[i], y)
        rhs[i * m:(i + 1) * m] = [ry[dy % ny, dx % nx] for dy, dx in offs]
        gram[-1, i * m:(i + 1) * m] = gram[i * m:(i + 1) * m, -1] = x[i].sum()
    gram[-1, -1] = y.size
    rhs[-1] = y.sum()
    gram += ridge * np.trace(gram) / n * np.eye(n)
    coef = np.linalg.solve(gram, rhs)
    k = np.asarray(coef[:-1], np.float64).reshape(steps, 2 * radius + 1, 2 * radius + 1)
    return LinearAR(k, float(coef[-1]))


def linear_ar_prior(history: Any, target: Any, angles: Sequence[float] = (), radius: int = 4,
                    steps: int | None = None) -> DomainPrior:
    """The model's prior for ``model.prior = "linear_ar"``: the physics fit of (the history's
    last step, target) (:func:`~.prior.fit_prior`, kept for the record) with the stencil of
    :func:`fit_linear_ar` (``steps`` default: every input step) as the prior, and its RMS error
    on these pairs as ``rmse`` (the unit of the model's correction)."""
    h = np.asarray(history, np.float64)
    y = np.asarray(target, np.float64)
    phys = fit_prior(h[:, -1], y, angles)
    ar = fit_linear_ar(h, y, radius, min(steps or h.shape[1], h.shape[1]))
    return replace(phys, rmse=_rms(ar.predict(h) - y), ar_bias=float(ar.bias),
                   ar_kernels=tuple(tuple(tuple(float(v) for v in row) for row in k)
                                    for k in ar.kernels))


# ------------------------------------------------------------------------------------ fitted set


def _rms(x: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@dataclass(frozen=True)
class DomainBaselines:
    """The baselines of one domain: diffusion's sigma, the stencil, each one's predictive std."""

    sigma: float
    ar: LinearAR
    std: dict[str, float] = field(default_factory=dict)
    table: list[dict[str, float]] = field(default_factory=list)
    pairs: int = 0

    def predict(self, name: str, history: Any) -> NDArray[np.float64]:
        """One step of baseline ``name`` from ``history`` (B, n, y, x), oldest first."""
        h = np.asarray(history, np.float64)
        if name == "persistence":
            return persistence(h[:, -1])
        if name == "diffusion":
            return diffusion(h[:, -1], self.sigma)
        if name == "linear_ar":
            return self.ar.predict(h)
        raise ValueError(f"unknown baseline {name!r} (one of {BASELINES})")

    def rollout(self, name: str, history: Any, steps: int) -> NDArray[np.float64]:
        """(B, steps, y, x): the baseline fed its own predictions ``steps`` times."""
        h = np.asarray(history, np.float64)
        out = []
        for _ in range(steps):
            nxt = self.predict(name, h)
            out.append(nxt)
            h = np.concatenate([h[:, 1:], nxt[:, None]], axis=1)
        return np.stack(out, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"diffusion_sigma": self.sigma, "diffusion_table": self.table,
                "linear_ar": self.ar.to_dict(), "std": dict(self.std), "pairs": self.pairs}


@dataclass(frozen=True)
class FittedBaselines:
    """Every baseline, fitted for every domain of the training split."""

    domains: dict[str, DomainBaselines]
    names: tuple[str, ...] = BASELINES

    def of(self, domain: str) -> DomainBaselines:
        if domain not in self.domains:
            raise ValueError(f"no baselines fitted for domain {domain!r}: the training split has "
                             f"{sorted(self.domains)}")
        return self.domains[domain]


def fit_baselines(pairs: Mapping[str, tuple[Any, Any]], sigmas: Sequence[float] = DEFAULT_SIGMAS,
                  ar_radius: int = 4, ar_steps: int = 1) -> FittedBaselines:
    """Fit every baseline per domain on ``{domain: (history (B, n, y, x), target (B, y, x))}``
    pairs of training windows."""
    out: dict[str, DomainBaselines] = {}
    for dom, (hist, tgt) in sorted(pairs.items()):
        hist = np.asarray(hist, np.float64)
        tgt = np.asarray(tgt, np.float64)
        sigma, table = fit_diffusion_sigma(hist[:, -1], tgt, sigmas)
        ar = fit_linear_ar(hist, tgt, ar_radius, min(ar_steps, hist.shape[1]))
        unscored = DomainBaselines(sigma, ar)
        std = {n: _rms(unscored.predict(n, hist) - tgt) for n in BASELINES}
        out[dom] = DomainBaselines(sigma, ar, std, table, int(tgt.shape[0]))
    return FittedBaselines(out)
