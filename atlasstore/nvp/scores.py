"""Evaluation metrics of next-step predictions: skill, physics, and uncertainty quality.

Every function takes (B, y, x) maps, or (..., y, x); per-sample values reduce the last two axes.
These are *metrics* in physical units, for reports; the differentiable training terms live in
:mod:`.loss`.

* :func:`vrmse` — variance-scaled RMSE as The Well defines it,
  ``sqrt(mean((y_pred - y)^2) / (var(y) + 1e-7))`` per sample (mean and variance over space),
  averaged over samples in reports. 1 is the skill of predicting the map's own mean.
* :func:`conservation_error` — ``|sum y_pred - sum y| / sum y``.
* :func:`entropy_violations` — share of samples whose predicted entropy is below the input's by
  more than a threshold (the second-law hinge of the loss, counted).
* Uncertainty, for a Gaussian predictive N(mu, sigma^2) per pixel given by its **standard
  deviation**: :func:`gaussian_nll_std`, :func:`gaussian_crps` (closed form, Gneiting & Raftery
  2007: ``sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``, z = (y - mu)/sigma),
  :func:`interval_coverage` of the central 50% and 90% intervals ``mu +- z_q sigma``, and
  :func:`spread_skill` (ratio of RMS predicted spread to RMSE, 1 when calibrated, and the same per
  bin of predicted spread).
* :func:`metric_block` — all of them for one predictor.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = [
    "VRMSE_EPS",
    "conservation_error",
    "entropy_np",
    "entropy_violations",
    "gaussian_crps",
    "gaussian_nll_std",
    "interval_coverage",
    "metric_block",
    "spread_skill",
    "vrmse",
]

VRMSE_EPS = 1e-7


def _xp(*arrays: Any) -> Any:
    """JAX when any argument is a JAX array (also a tracer inside jit), else NumPy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def vrmse(pred: Any, target: Any, eps: float = VRMSE_EPS) -> Any:
    """Per-sample VRMSE over the last two axes: sqrt(mean((pred - y)^2) / (var(y) + eps)).

    NumPy in, NumPy out; JAX in (also inside jit), JAX out.
    """
    xp = _xp(pred, target)
    err = xp.mean(xp.square(pred - target), axis=(-2, -1))
    return xp.sqrt(err / (xp.var(target, axis=(-2, -1)) + eps))


def conservation_error(pred: Any, target: Any) -> Any:
    """Per-sample relative energy error |sum pred - sum target| / sum target (sums over the last
    two axes; a zero-energy target divides by 1). NumPy or JAX, like :func:`vrmse`."""
    xp = _xp(pred, target)
    sp = xp.sum(pred, axis=(-2, -1))
    st = xp.sum(target, axis=(-2, -1))
    return xp.abs(sp - st) / xp.where(st > 0, st, 1.0)


def entropy_np(e: Any) -> NDArray[np.float64]:
    """Shannon entropy (nats) per sample, p = E / sum E (as :func:`atlasstore.physics.fields.entropy`)."""
    from atlasstore.physics.fields import entropy

    return np.atleast_1d(np.asarray(entropy(np.asarray(e, np.float64))))


def entropy_violations(pred: Any, prev: Any, threshold: float = 0.0) -> dict[str, float]:
    """Share of samples with S(pred) < S(prev) - threshold, and the mean/max decrease (nats)."""
    d = entropy_np(prev) - entropy_np(pred) - threshold
    return {"rate": float(np.mean(d > 0)), "mean_excess": float(np.mean(np.maximum(d, 0))),
            "max_excess": float(np.max(np.maximum(d, 0))) if d.size else 0.0,
            "threshold": float(threshold)}


def gaussian_nll_std(mean: Any, std: Any, y: Any) -> NDArray[np.float64]:
    """Per-pixel NLL of y under N(mean, std^2): 0.5 log(2 pi std^2) + (y - mean)^2 / (2 std^2).

    Takes the standard deviation (the evaluation's predictive); the training loss's
    :func:`atlasstore.nvp.loss.gaussian_nll_log_var` takes the log-variance.
    """
    mean, std, y = (np.asarray(a, np.float64) for a in (mean, std, y))
    var = np.square(std)
    return 0.5 * np.log(2 * np.pi * var) + np.square(y - mean) / (2 * var)


def gaussian_crps(mean: Any, std: Any, y: Any) -> NDArray[np.float64]:
    """Per-pixel CRPS of N(mean, std^2) at y (closed form); equals |y - mean| when std -> 0."""
    mean, std, y = (np.asarray(a, np.float64) for a in (mean, std, y))
    safe = np.where(std > 0, std, 1.0)
    z = (y - mean) / safe
    crps = safe * (z * (2 * special.ndtr(z) - 1) + 2 * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
                   - 1 / np.sqrt(np.pi))
    return np.where(std > 0, crps, np.abs(y - mean))


def interval_coverage(mean: Any, std: Any, y: Any, level: float) -> float:
    """Share of pixels inside the central ``level`` interval mu +- z sigma of N(mu, sigma^2)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = float(special.ndtri(0.5 + level / 2))
    mean, std, y = (np.asarray(a, np.float64) for a in (mean, std, y))
    return float(np.mean(np.abs(y - mean) <= z * std))


def spread_skill(mean: Any, std: Any, y: Any, n_bins: int = 10) -> dict[str, Any]:
    """Spread-skill: RMS predicted std over RMSE (1 = calibrated on average) and, per quantile bin
    of predicted std, (RMS spread, RMSE) pairs and their correlation."""
    mean, std, y = (np.asarray(a, np.float64).ravel() for a in (mean, std, y))
    err2 = np.square(y - mean)
    rmse = float(np.sqrt(err2.mean()))
    spread = float(np.sqrt(np.square(std).mean()))
    edges = np.unique(np.quantile(std, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, std, side="right") - 1, 0, max(len(edges) - 2, 0))
    bins = []
    for b in range(max(len(edges) - 1, 1)):
        m = which == b
        if m.any():
            bins.append({"spread": float(np.sqrt(np.square(std[m]).mean())),
                         "rmse": float(np.sqrt(err2[m].mean())), "n": int(m.sum())})
    corr = float("nan")
    if len(bins) > 1:
        s = np.array([b["spread"] for b in bins])
        r = np.array([b["rmse"] for b in bins])
        if s.std() > 0 and r.std() > 0:
            corr = float(np.corrcoef(s, r)[0, 1])
    return {"ratio": spread / rmse if rmse > 0 else float("inf"), "spread": spread, "rmse": rmse,
            "bins": bins, "bin_correlation": corr}


def metric_block(pred: Any, std: Any, target: Any, prev: Any,
                 entropy_threshold: float = 0.0) -> dict[str, Any]:
    """Every one-step metric of a Gaussian predictive (mean ``pred``, ``std``) against
    ``target``."""
    pred, std, target, prev = (np.asarray(a, np.float64) for a in (pred, std, target, prev))
    v = np.asarray(vrmse(pred, target))
    cons = np.asarray(conservation_error(pred, target))
    ss = spread_skill(pred, std, target)
    return {
        "vrmse": float(v.mean()),
        "vrmse_median": float(np.median(v)),
        "mse": float(np.mean(np.square(pred - target))),
        "conservation_error": float(cons.mean()),
        "conservation_error_max": float(cons.max()),
        "entropy_violations": entropy_violations(pred, prev, entropy_threshold),
        "min_prediction": float(pred.min()),
        "nll": float(gaussian_nll_std(pred, std, target).mean()),
        "crps": float(gaussian_crps(pred, std, target).mean()),
        "coverage_50": interval_coverage(pred, std, target, 0.5),
        "coverage_90": interval_coverage(pred, std, target, 0.9),
        "spread_skill": ss["ratio"],
        "spread_skill_bins": ss["bins"],
        "spread_skill_correlation": ss["bin_correlation"],
    }
