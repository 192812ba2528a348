"""Figures of training and evaluation (matplotlib, no pyplot: no global state, no display).

* Training curves (:func:`curves_figure`): one panel per quantity (each loss term, VRMSE, energy
  fidelity, learning rate, gradient norm, throughput), training and validation overlaid. The
  y axis is logarithmic when every value of the panel is positive and they span a decade or
  more, linear otherwise: a term that reaches zero or changes sign (the entropy hinge, a
  Gaussian NLL) keeps its sign readable, and no symlog bends it.
* Sample panels (:func:`sample_figure`): input, truth, prediction, error, predicted std and
  ``|error| / std``; colour ranges are percentiles (:func:`percentile_limits`), so that a few
  extreme pixels (e.g. at the edges) cannot wash out the rest of a panel. Colour bars show
  arrows where values lie beyond the range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CURVE_PANELS",
    "PERCENTILES",
    "axis_scale",
    "bars_figure",
    "curves_figure",
    "percentile_limits",
    "plot_bars",
    "plot_curves",
    "plot_rollout",
    "plot_sample",
    "plot_spread_skill",
    "rollout_figure",
    "sample_figure",
    "symmetric_limit",
]

#: colour range of the sample panels (percent)
PERCENTILES = (1.0, 99.0)
#: (record key, panel title) of the training-curve panels, in order
CURVE_PANELS: tuple[tuple[str, str], ...] = (
    ("loss", "loss (weighted total)"), ("mse", "MSE"), ("conservation", "conservation error"),
    ("entropy", "entropy hinge"), ("nll", "NLL (train: beta-NLL)"), ("vrmse", "VRMSE"),
    ("energy_fidelity", "energy fidelity"), ("lr", "learning rate"),
    ("grad_norm", "gradient norm"))
DPI = 70


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


# ------------------------------------------------------------------------------------ scales


def axis_scale(values: Sequence[float], decades: float = 1.0) -> str:
    """"log" when every finite value is > 0 and they span at least ``decades`` decades, else
    "linear" (a zero or a sign change has no logarithm; a narrow range reads better linear)."""
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if not v.size or not bool((v > 0).all()):
        return "linear"
    return "log" if np.log10(v.max() / v.min()) >= decades else "linear"


def percentile_limits(*images: Any, percentiles: tuple[float, float] = PERCENTILES
                      ) -> tuple[float, float]:
    """(vmin, vmax): the given percentiles of the finite values of all ``images`` together; a
    flat map gets a range centred on its value (it draws in the middle colour, not as blank)."""
    v = np.concatenate([np.asarray(i, np.float64).ravel() for i in images])
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, percentiles))
    if not hi > lo:
        d = 0.05 * abs(lo) or 1.0
        return lo - d, hi + d
    return lo, hi


def symmetric_limit(image: Any, percentile: float = PERCENTILES[1]) -> float:
    """The ``percentile`` of |image|: a colour range (-lim, lim) centred on zero."""
    v = np.abs(np.asarray(image, np.float64))
    v = v[np.isfinite(v)]
    lim = float(np.percentile(v, percentile)) if v.size else 0.0
    return lim if lim > 0 else 1.0


# ------------------------------------------------------------------------------------ samples


def sample_figure(title: str, prev: NDArray, truth: NDArray, pred: NDArray, std: NDArray) -> Any:
    """One evaluated window: six panels with percentile colour ranges; missing cells (NaN in
    ``truth``) are blank in every panel and left out of the colour ranges."""
    missing = ~np.isfinite(np.asarray(truth))
    if missing.any():
        prev, pred, std = (np.where(missing, np.nan, np.asarray(x, np.float64))
                           for x in (prev, pred, std))
    err = pred - truth
    lo, hi = percentile_limits(truth, pred)
    lim = symmetric_limit(err)
    s_lo, s_hi = percentile_limits(std)
    panels = [(prev, "input E_t", "inferno", lo, hi), (truth, "truth E_t+1", "inferno", lo, hi),
              (pred, "prediction (mean)", "inferno", lo, hi),
              (err, "error (pred - truth)", "RdBu_r", -lim, lim),
              (std, "uncertainty (total std)" + (f": uniform {float(np.mean(std)):.3g}"
                                                 if np.ptp(std) == 0 else ""),
               "viridis", s_lo, s_hi),
              (np.abs(err) / np.maximum(std, 1e-12), "|error| / std", "magma", 0.0, 3.0)]
    fig = _figure(3.3 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels))
    for ax, (img, name, cmap, vmin, vmax) in zip(axes, panels, strict=True):
        im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, extend="both")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_sample(path: Path, title: str, prev: NDArray, truth: NDArray, pred: NDArray,
                std: NDArray) -> None:
    _save(sample_figure(title, prev, truth, pred, std), path)


# ------------------------------------------------------------------------------------ curves


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if isinstance(r.get(key), (int, float))]
    return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def curves_figure(records: Sequence[Mapping[str, Any]]) -> Any | None:
    """Training curves of ``metrics.jsonl`` records, one panel per quantity; None without any."""
    tr = [r for r in records if r.get("split") == "train"]
    va = [r for r in records if r.get("split") == "val"]
    panels = []
    for key, title in CURVE_PANELS:
        lines = [(f"train {key}", "-", *_series(tr, key)), (f"val {key}", "o-", *_series(va, key))]
        if key == "vrmse":
            lines.append(("val persistence", "s--", *_series(va, "persistence_vrmse")))
        lines = [ln for ln in lines if ln[2]]
        if lines:
            panels.append((title, lines))
    steps, rate = _series(tr, "steps_per_s")
    if not panels and not steps:
        return None
    n = len(panels) + bool(steps)
    ncols = min(5, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.0 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, (title, lines) in zip(axes, panels, strict=False):
        for label, style, xs, ys in lines:
            ax.plot(xs, ys, style, label=label, ms=3)
        ax.set_yscale(axis_scale([y for *_, ys in lines for y in ys]))
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    if steps:
        ax = axes[len(panels)]
        ax.plot(steps, rate, label="steps/s")
        ax.set_title("throughput", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ws, wait = _series(tr, "wait_fraction")
        if ws:
            ax2 = ax.twinx()
            ax2.plot(ws, wait, color="tab:red", label="input wait fraction")
            ax2.set_ylim(0, 1)
            ax2.legend(fontsize=7, loc="upper right")
    for ax in axes[:n]:
        ax.set_xlabel("step", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_curves(path: Path, records: Sequence[Mapping[str, Any]]) -> bool:
    """Write the training curves; False (nothing written) without records."""
    fig = curves_figure(records)
    if fig is None:
        return False
    _save(fig, path)
    return True


# ------------------------------------------------------------------------------------ evaluation


_STYLE = (("model", "NVP", "tab:red"), ("persistence", "persistence", "tab:gray"),
          ("diffusion", "diffusion", "tab:blue"), ("linear_ar", "linear AR", "tab:green"))


def _grid(n: int, w: float, h: float) -> tuple[Any, Any]:
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(w * ncols, h * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def rollout_figure(ro: Mapping[str, Any]) -> Any:
    """One panel per domain: VRMSE by lead of the NVP and every baseline."""
    per = ro["per_domain"]
    fig, axes = _grid(len(per), 4.2, 3.3)
    for ax, (d, r) in zip(axes, per.items(), strict=False):
        for k, lab, col in _STYLE:
            if k in r:
                ax.plot(ro["lead"], r[k], marker="o", ms=3, label=lab, color=col)
        ax.set_yscale(axis_scale([y for k, *_ in _STYLE for y in r.get(k, [])]))
        ax.set_title(f"{d} ({r['rollouts']} rollouts)", fontsize=9)
        ax.set_xlabel("lead (steps)", fontsize=8)
        ax.set_ylabel("VRMSE", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("rollout: predictions fed back", fontsize=10)
    return fig


def plot_rollout(path: Path, ro: Mapping[str, Any]) -> None:
    _save(rollout_figure(ro), path)


def bars_figure(per_domain: Mapping[str, Mapping[str, Any]]) -> Any:
    """One panel per domain: one-step VRMSE of the NVP and every baseline (each domain has its
    own scale: their errors differ fifty-fold)."""
    fig, axes = _grid(len(per_domain), 3.4, 3.0)
    for ax, (d, b) in zip(axes, per_domain.items(), strict=False):
        names = [(k, lab, col) for k, lab, col in _STYLE if k in b]
        vals = [b[k]["vrmse"] for k, *_ in names]
        ax.bar(range(len(vals)), vals, color=[c for *_, c in names])
        ax.set_xticks(range(len(vals)), [lab for _, lab, _ in names], rotation=30, fontsize=7)
        lo = min(vals)
        ax.set_ylim(0.0, max(vals) * 1.15)
        ax.axhline(b["model"]["vrmse"], color="tab:red", lw=0.8, ls="--")
        ax.set_title(f"{d}\nNVP {b['model']['vrmse']:.4f}, best baseline "
                     f"{min(v for v, (k, *_) in zip(vals, names, strict=True) if k != 'model'):.4f}",
                     fontsize=8)
        ax.text(0, lo, f"{lo:.3g}", ha="center", va="bottom", fontsize=7)
    fig.suptitle("one-step VRMSE per domain (lower is better)", fontsize=10)
    return fig


def plot_bars(path: Path, per_domain: Mapping[str, Mapping[str, Any]]) -> None:
    _save(bars_figure(per_domain), path)


def plot_spread_skill(path: Path, bins: Sequence[Mapping[str, float]]) -> None:
    s = [b["spread"] for b in bins]
    r = [b["rmse"] for b in bins]
    fig = _figure(4, 4)
    ax = fig.subplots()
    ax.plot(s, r, marker="o", label="NVP")
    hi = max(s + r) if s else 1.0
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="ideal")
    ax.set_xlabel("RMS predicted std (bin)")
    ax.set_ylabel("RMSE (bin)")
    ax.set_title("spread-skill")
    ax.legend()
    _save(fig, path)
