"""Reference predictors the model must beat: persistence and a fitted diffusion.

* **persistence**: E_pred = E_t.
* **diffusion**: a periodic Gaussian blur of E_t whose sigma is fitted (grid search, least
  squares) on windows of the *training* split (:func:`fit_diffusion_sigma`).

Both get a homoscedastic Gaussian predictive whose standard deviation is their RMSE on the same
training windows (:func:`fit_baselines`), so that NLL, CRPS and coverage compare with the
model's. A new baseline is a function of E_t fitted on (E_t, E_t+1) pairs and an entry in
:class:`FittedBaselines`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "DEFAULT_SIGMAS",
    "FittedBaselines",
    "diffusion",
    "fit_baselines",
    "fit_diffusion_sigma",
    "persistence",
]

DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0,
                                     3.5, 4.0, 5.0, 6.0)


def persistence(prev: Any) -> NDArray[np.float64]:
    """E_pred = E_t."""
    return np.asarray(prev, np.float64)


def diffusion(prev: Any, sigma: float, mode: str = "wrap") -> NDArray[np.float64]:
    """Gaussian blur of E_t over the last two axes (periodic by default: the synthetic data's
    thermal blur is periodic); conserves sum E; sigma 0 is persistence."""
    e = np.asarray(prev, np.float64)
    if sigma <= 0:
        return e.copy()
    return ndimage.gaussian_filter(e, sigma, mode=mode, axes=(e.ndim - 2, e.ndim - 1))


def fit_diffusion_sigma(prev: Any, target: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                        mode: str = "wrap") -> tuple[float, list[dict[str, float]]]:
    """The sigma (pixels) of :func:`diffusion` with the least MSE against ``target``, and the
    table of every sigma tried."""
    prev = np.asarray(prev, np.float64)
    target = np.asarray(target, np.float64)
    table = [{"sigma": float(s),
              "mse": float(np.mean(np.square(diffusion(prev, s, mode) - target)))}
             for s in sigmas]
    best = min(table, key=lambda r: r["mse"])
    return best["sigma"], table


def _rms(x: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@dataclass(frozen=True)
class FittedBaselines:
    """The baselines fitted on training pairs: diffusion's sigma and each one's predictive std."""

    sigma: float
    table: list[dict[str, float]] = field(default_factory=list)
    std: dict[str, float] = field(default_factory=dict)

    names: ClassVar[tuple[str, ...]] = ("persistence", "diffusion")

    def predict(self, name: str, prev: Any) -> NDArray[np.float64]:
        """One step of baseline ``name`` from E_t."""
        if name == "persistence":
            return persistence(prev)
        if name == "diffusion":
            return diffusion(prev, self.sigma)
        raise ValueError(f"unknown baseline {name!r} (one of {self.names})")

    def rollout(self, name: str, prev: Any, steps: int) -> NDArray[np.float64]:
        """(B, steps, y, x): the baseline applied to its own output ``steps`` times."""
        out, cur = [], np.asarray(prev, np.float64)
        for _ in range(steps):
            cur = self.predict(name, cur)
            out.append(cur)
        return np.stack(out, axis=1)


def fit_baselines(prev: Any, target: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS
                  ) -> FittedBaselines:
    """Fit every baseline on (E_t, E_t+1) pairs of training windows."""
    prev = np.asarray(prev, np.float64)
    target = np.asarray(target, np.float64)
    sigma, table = fit_diffusion_sigma(prev, target, sigmas)
    unscored = FittedBaselines(sigma, table)
    return FittedBaselines(sigma, table, {name: _rms(unscored.predict(name, prev) - target)
                                          for name in FittedBaselines.names})
