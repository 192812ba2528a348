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


def vrmse(pred: Any, target: Any, eps: float = VRMSE_EPS, mask: Any = None) -> Any:
    """Per-sample VRMSE over the last two axes: sqrt(mean((pred - y)^2) / (var(y) + eps)); with
    ``mask`` (1 valid, 0 missing), mean and variance over the valid cells only.

    NumPy in, NumPy out; JAX in (also inside jit), JAX out.
    """
    xp = _xp(pred, target)
    if mask is None:
        err = xp.mean(xp.square(pred - target), axis=(-2, -1))
        return xp.sqrt(err / (xp.var(target, axis=(-2, -1)) + eps))
    w = xp.asarray(mask, dtype=target.dtype)
    n = xp.maximum(xp.sum(w, axis=(-2, -1)), 1.0)
    t = xp.where(w > 0, target, 0.0)
    err = xp.sum(w * xp.square(xp.where(w > 0, pred, 0.0) - t), axis=(-2, -1)) / n
    mean = xp.sum(w * t, axis=(-2, -1), keepdims=True) / n[..., None, None]
    var = xp.sum(w * xp.square(t - mean), axis=(-2, -1)) / n
    return xp.sqrt(err / (var + eps))


def valid_cells(target: Any) -> NDArray[np.bool_] | None:
    """Where ``target`` holds data (not NaN: a missing cell); None when it all does."""
    ok = np.isfinite(np.asarray(target))
    return None if ok.all() else ok


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
    """Share of pixels inside the central ``level`` interval mu +- z sigma of N(mu, sigma^2);
    pixels where ``y`` is NaN (missing cells) are left out."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = float(special.ndtri(0.5 + level / 2))
    mean, std, y = (np.asarray(a, np.float64) for a in (mean, std, y))
    inside = np.abs(y - mean) <= z * std
    valid = np.broadcast_to(np.isfinite(y), inside.shape)
    return float(np.mean(inside if valid.all() else inside[valid]))


def spread_skill(mean: Any, std: Any, y: Any, n_bins: int = 10) -> dict[str, Any]:
    """Spread-skill: RMS predicted std over RMSE (1 = calibrated on average) and, per quantile bin
    of predicted std, (RMS spread, RMSE) pairs and their correlation."""
    mean, std, y = (np.broadcast_to(np.asarray(a, np.float64), np.shape(y)).ravel()
                    for a in (mean, std, y))
    ok = np.isfinite(y)  # missing cells (NaN) are left out
    if not ok.all():
        mean, std, y = mean[ok], std[ok], y[ok]
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
    ``target``; cells where ``target`` is NaN (missing) are left out of every metric (sums and
    entropies are over the valid cells)."""
    pred, std, target, prev = (np.asarray(a, np.float64) for a in (pred, std, target, prev))
    valid = valid_cells(target)
    if valid is not None:
        target = np.where(valid, target, 0.0)
        pred0, prev0 = np.where(valid, pred, 0.0), np.where(valid, prev, 0.0)
    else:
        pred0, prev0 = pred, prev

    def mean(x: NDArray[np.float64]) -> float:
        return float(x.mean() if valid is None else x[valid].mean())

    v = np.asarray(vrmse(pred, target, mask=valid))
    cons = np.asarray(conservation_error(pred0, target))
    y = target if valid is None else np.where(valid, target, np.nan)
    ss = spread_skill(pred, std, y)
    return {
        "vrmse": float(v.mean()),
        "vrmse_median": float(np.median(v)),
        "mse": mean(np.square(pred - target)),
        "conservation_error": float(cons.mean()),
        "conservation_error_max": float(cons.max()),
        "entropy_violations": entropy_violations(pred0, prev0, entropy_threshold),
        "min_prediction": float(pred.min()),
        "nll": mean(gaussian_nll_std(pred, std, target)),
        "crps": mean(gaussian_crps(pred, std, target)),
        "coverage_50": interval_coverage(pred, std, y, 0.5),
        "coverage_90": interval_coverage(pred, std, y, 0.9),
        "spread_skill": ss["ratio"],
        "spread_skill_bins": ss["bins"],
        "spread_skill_correlation": ss["bin_correlation"],
    }
