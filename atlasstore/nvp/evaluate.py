"""Evaluating NVP checkpoints: one-step and rollout skill, physics, and uncertainty quality.

Metrics (every function takes (B, y, x) maps, or (..., y, x); per-sample values reduce the last two
axes):

* :func:`vrmse` — variance-scaled RMSE as The Well defines it,
  ``sqrt(mean((y_pred - y)^2) / (var(y) + 1e-7))`` per sample (mean and variance over space),
  averaged over samples in reports. 1 is the skill of predicting the map's own mean.
* :func:`conservation_error` — ``|sum y_pred - sum y| / sum y``.
* :func:`entropy_violations` — share of samples whose predicted entropy is below the input's by
  more than a threshold (the second-law hinge of the loss, counted).
* Uncertainty, for a Gaussian predictive N(mu, sigma^2) per pixel: :func:`gaussian_nll`,
  :func:`gaussian_crps` (closed form, Gneiting & Raftery 2007:
  ``sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``, z = (y - mu)/sigma),
  :func:`interval_coverage` of the central 50% and 90% intervals ``mu +- z_q sigma``, and
  :func:`spread_skill` (ratio of RMS predicted spread to RMSE, 1 when calibrated, and the same per
  bin of predicted spread).

Baselines: **persistence** (E_pred = E_t) and **diffusion**, a periodic Gaussian blur of E_t
whose sigma is fitted (grid search, least squares) on windows of the *training* split
(:func:`fit_diffusion_sigma`). Both get a homoscedastic Gaussian predictive whose variance is
their mean squared error on the same training windows, so that NLL, CRPS and coverage compare.

:func:`evaluate_checkpoint` runs all of it on held-out sequences (the checkpoint's validation split
by default, or every matching sequence of another store) and writes ``report.json`` and PNGs.
Nothing here prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, special

__all__ = [
    "VRMSE_EPS", "vrmse", "conservation_error", "conservation_error_np", "entropy_np",
    "entropy_violations", "gaussian_nll", "gaussian_crps", "interval_coverage", "spread_skill",
    "persistence", "diffusion", "fit_diffusion_sigma", "metric_block", "evaluate_checkpoint",
    "rollout", "DEFAULT_SIGMAS",
]

VRMSE_EPS = 1e-7
DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0,
                                     3.5, 4.0, 5.0, 6.0)
REPORT_FORMAT = "atlasstore-nvp-eval/1"


def _xp(x: Any) -> Any:
    return jnp if isinstance(x, jax.Array) else np


# ------------------------------------------------------------------------------------ metrics


def vrmse(pred: Any, target: Any, eps: float = VRMSE_EPS) -> Any:
    """Per-sample VRMSE over the last two axes: sqrt(mean((pred - y)^2) / (var(y) + eps)).

    NumPy in, NumPy out; JAX in (also inside jit), JAX out.
    """
    xp = _xp(pred) if _xp(pred) is jnp else _xp(target)
    err = xp.mean(xp.square(pred - target), axis=(-2, -1))
    return xp.sqrt(err / (xp.var(target, axis=(-2, -1)) + eps))


def conservation_error(pred: Any, target: Any) -> Any:
    """Per-sample |sum pred - sum target| / sum target (sums over the last two axes)."""
    xp = _xp(pred) if _xp(pred) is jnp else _xp(target)
    sp = xp.sum(pred, axis=(-2, -1))
    st = xp.sum(target, axis=(-2, -1))
    return xp.abs(sp - st) / xp.where(st > 0, st, 1.0)


def conservation_error_np(pred: Any, target: Any) -> NDArray[np.float64]:
    return np.asarray(conservation_error(np.asarray(pred, np.float64),
                                         np.asarray(target, np.float64)))


def entropy_np(e: Any) -> NDArray[np.float64]:
    """Shannon entropy (nats) per sample, p = E / sum E (as :func:`atlasstore.physics.entropy`)."""
    from ..physics import entropy

    return np.atleast_1d(np.asarray(entropy(np.asarray(e, np.float64))))


def entropy_violations(pred: Any, prev: Any, threshold: float = 0.0) -> dict[str, float]:
    """Share of samples with S(pred) < S(prev) - threshold, and the mean/max decrease (nats)."""
    d = entropy_np(prev) - entropy_np(pred) - threshold
    return {"rate": float(np.mean(d > 0)), "mean_excess": float(np.mean(np.maximum(d, 0))),
            "max_excess": float(np.max(np.maximum(d, 0))) if d.size else 0.0,
            "threshold": float(threshold)}


def gaussian_nll(mean: Any, std: Any, y: Any) -> NDArray[np.float64]:
    """Per-pixel Gaussian NLL: 0.5 log(2 pi sigma^2) + (y - mu)^2 / (2 sigma^2)."""
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


# ------------------------------------------------------------------------------------ baselines


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
    """The sigma (pixels) of :func:`diffusion` with the least MSE against ``target``; and the table."""
    prev = np.asarray(prev, np.float64)
    target = np.asarray(target, np.float64)
    table = [{"sigma": float(s), "mse": float(np.mean(np.square(diffusion(prev, s, mode) - target)))}
             for s in sigmas]
    best = min(table, key=lambda r: r["mse"])
    return best["sigma"], table


def metric_block(pred: Any, std: Any, target: Any, prev: Any,
                 entropy_threshold: float = 0.0) -> dict[str, Any]:
    """Every one-step metric of a Gaussian predictive (mean ``pred``, ``std``) against ``target``."""
    pred, std, target, prev = (np.asarray(a, np.float64) for a in (pred, std, target, prev))
    v = np.asarray(vrmse(pred, target))
    ss = spread_skill(pred, std, target)
    return {
        "vrmse": float(v.mean()),
        "vrmse_median": float(np.median(v)),
        "mse": float(np.mean(np.square(pred - target))),
        "conservation_error": float(conservation_error_np(pred, target).mean()),
        "conservation_error_max": float(conservation_error_np(pred, target).max()),
        "entropy_violations": entropy_violations(pred, prev, entropy_threshold),
        "min_prediction": float(pred.min()),
        "nll": float(gaussian_nll(pred, std, target).mean()),
        "crps": float(gaussian_crps(pred, std, target).mean()),
        "coverage_50": interval_coverage(pred, std, target, 0.5),
        "coverage_90": interval_coverage(pred, std, target, 0.9),
        "spread_skill": ss["ratio"],
        "spread_skill_bins": ss["bins"],
        "spread_skill_correlation": ss["bin_correlation"],
    }


# ------------------------------------------------------------------------------------ data helpers


def _down_np(x: NDArray, factor: int) -> NDArray:
    if factor == 1:
        return x
    *lead, ny, nx = x.shape
    return x.reshape(*lead, ny // factor, factor, nx // factor, factor).sum(axis=(-3, -1))


def _read(source: Any, idx: Sequence[int], levels: Sequence[int], factor: int,
          pad_to: int | None = None) -> tuple[dict[int, NDArray], NDArray, list[str]]:
    """Inputs at ``levels``, the target block-summed by ``factor``, the ids. With ``pad_to`` the
    batch is padded by repeating its last window (callers drop rows past ``len(idx)``), so one
    compiled program serves every batch."""
    idx = list(idx)
    if pad_to is not None and len(idx) < pad_to:
        idx = idx + [idx[-1]] * (pad_to - len(idx))
    b = source.read_batch(idx)
    inputs = {lv: np.asarray(b["inputs"][lv]) for lv in levels}
    return inputs, _down_np(np.asarray(b["target"], np.float64), factor), list(b["ids"])


def _even(n: int, k: int | None) -> list[int]:
    if k is None or n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


# ------------------------------------------------------------------------------------ rollout


def rollout(model: Any, inputs: Mapping[int, Any], steps: int) -> NDArray[np.float64]:
    """Autoregressive mean predictions (B, steps, y, x): each prediction is fed back as the newest
    input step, its coarser levels made by block sums (as the store derives them)."""
    from .model import predict, pyramid_inputs

    cur = {lv: jnp.asarray(x) for lv, x in inputs.items()}
    outs = []
    for _ in range(steps):
        p = predict(model, {lv: cur[lv] for lv in model.levels})
        outs.append(np.asarray(p.mean, np.float64))
        pyr = pyramid_inputs(p.mean, model.levels)
        cur = {lv: jnp.concatenate([cur[lv][:, 1:], pyr[lv][:, None]], axis=1)
               for lv in model.levels}
    return np.stack(outs, axis=1)


# ------------------------------------------------------------------------------------ plots


def _plot_sample(path: Path, title: str, prev: NDArray, truth: NDArray, pred: NDArray,
                 std: NDArray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = pred - truth
    lim = float(np.abs(err).max()) or 1.0
    vmin, vmax = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
    panels = [(prev, "input E_t", "inferno", vmin, vmax), (truth, "truth E_t+1", "inferno", vmin, vmax),
              (pred, "prediction (mean)", "inferno", vmin, vmax),
              (err, "error (pred - truth)", "RdBu_r", -lim, lim),
              (std, "uncertainty (total std)", "viridis", None, None),
              (np.abs(err) / np.maximum(std, 1e-12), "|error| / std", "magma", 0, 3)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4))
    for ax, (img, name, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def _plot_curves(path: Path, records: Sequence[Mapping[str, Any]]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in records if r.get("split") == "train"]
    va = [r for r in records if r.get("split") == "val"]
    if not tr and not va:
        return False
    keys = ["loss", "mse", "conservation", "entropy", "nll"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for k in keys:
        xs = [r["step"] for r in tr if k in r]
        if xs:
            axes[0].plot(xs, [r[k] for r in tr if k in r], label=f"train {k}")
    axes[0].set_yscale("symlog", linthresh=1e-4)
    axes[0].set_title("training loss terms")
    axes[0].legend(fontsize=7)
    for k in ("vrmse", "persistence_vrmse", "energy_fidelity", "conservation"):
        xs = [r["step"] for r in va if k in r]
        if xs:
            axes[1].plot(xs, [r[k] for r in va if k in r], marker="o", label=f"val {k}")
    axes[1].set_title("validation")
    axes[1].legend(fontsize=7)
    xs = [r["step"] for r in tr if "wait_fraction" in r]
    if xs:
        axes[2].plot(xs, [r["steps_per_s"] for r in tr if "wait_fraction" in r], label="steps/s")
        ax2 = axes[2].twinx()
        ax2.plot(xs, [r["wait_fraction"] for r in tr if "wait_fraction" in r], color="tab:red",
                 label="input wait fraction")
        ax2.set_ylim(0, 1)
        ax2.legend(fontsize=7, loc="upper right")
    axes[2].set_title("throughput")
    axes[2].legend(fontsize=7, loc="upper left")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return True


def _plot_rollout(path: Path, ro: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k, lab in (("model_vrmse", "NVP"), ("persistence_vrmse", "persistence"),
                   ("diffusion_vrmse", "diffusion")):
        ax.plot(ro["lead"], ro[k], marker="o", label=lab)
    ax.set_xlabel("lead (steps)")
    ax.set_ylabel("VRMSE")
    ax.set_title("rollout")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def _plot_spread_skill(path: Path, bins: Sequence[Mapping[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [b["spread"] for b in bins]
    r = [b["rmse"] for b in bins]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(s, r, marker="o", label="NVP")
    hi = max(s + r) if s else 1.0
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="ideal")
    ax.set_xlabel("RMS predicted std (bin)")
    ax.set_ylabel("RMSE (bin)")
    ax.set_title("spread-skill")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# ------------------------------------------------------------------------------------ checkpoint


def _domain(wid: str) -> str:
    return wid.split("/", 1)[0]


def evaluate_checkpoint(checkpoint: str | Path, *, store: str | None = None,
                        out_dir: str | Path | None = None, split: str = "val",
                        sequences: Sequence[str] | None = None, mc_samples: int | None = None,
                        rollout_steps: int | None = None, n_plots: int | None = None,
                        max_windows: int | None = None, batch_size: int | None = None,
                        plots: bool = True, seed: int = 0,
                        progress: Callable[[dict[str, Any]], None] | None = None
                        ) -> dict[str, Any]:
    """Evaluate a checkpoint against persistence and diffusion; write report.json and PNGs.

    ``split``: "val" (the checkpoint's held-out sequences, default), "train", or "all" (every
    sequence of ``store`` that the training query selects, e.g. a separately generated test
    store); ``sequences`` overrides it. Options default to the config's ``eval`` section.
    Returns the report (also written to ``<out_dir>/report.json``; ``out_dir`` defaults to
    ``<run dir>/eval``).
    """
    from ..store import AtlasStore
    from ..stream import WindowSource
    from .model import mc_predict
    from .train import TrainConfig, build_query, load_checkpoint, read_metrics

    emit = progress or (lambda e: None)
    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    meta = ck.meta
    cfg = TrainConfig.from_dict(meta["config"])
    ev = cfg.eval
    mc = ev.mc_samples if mc_samples is None else int(mc_samples)
    horizon = ev.rollout_steps if rollout_steps is None else int(rollout_steps)
    nplot = ev.n_plots if n_plots is None else int(n_plots)
    maxw = ev.max_windows if max_windows is None else max_windows
    bs = batch_size or ev.batch_size
    model = ck.model
    levels = list(model.levels)
    res = int(meta["query"]["resolution"])
    run_dir = ck.path.parents[2] if len(ck.path.parents) >= 3 else ck.path.parent
    out = Path(out_dir) if out_dir else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)

    train_loc = meta["store"]
    loc = str(store or train_loc)
    st = AtlasStore.open(loc)
    if sequences is not None:
        keys = list(sequences)
    elif split == "val":
        keys = list(meta["split"]["val"])
    elif split == "train":
        keys = list(meta["split"]["train"])
    elif split == "all":
        q = build_query(st, cfg.data, res)
        keys = sorted(f"{s.domain}/{s.sequence_id}" for s in q.selection())
    else:
        raise ValueError(f"split must be 'val', 'train' or 'all', got {split!r}")
    if not keys:
        raise ValueError("no sequences to evaluate")
    src = WindowSource(build_query(st, cfg.data, res, keys), cfg.data.n_in, 1,
                       reader=cfg.data.reader)
    if src.base_level < res or res not in src.levels:
        raise ValueError(f"the evaluation data (levels {list(src.levels)}) lacks the model's "
                         f"resolution {res}")
    factor = src.base_level // res
    missing = [lv for lv in levels if lv not in src.levels]
    if missing:
        raise ValueError(f"the evaluation data lacks input level(s) {missing}")
    emit({"event": "start", "windows": len(src), "sequences": len(keys), "store": loc})

    # ---- baselines fitted on training windows
    sigmas = tuple(ev.diffusion_sigmas or DEFAULT_SIGMAS)
    fit_on = "train"
    try:
        tst = st if train_loc == loc else AtlasStore.open(train_loc)
        fsrc = WindowSource(build_query(tst, cfg.data, res, meta["split"]["train"]),
                            cfg.data.n_in, 1, reader=cfg.data.reader)
        ffactor = fsrc.base_level // res
    except Exception:  # noqa: BLE001 - training store gone: fit on the evaluation data, say so
        fsrc, ffactor, fit_on = src, factor, "evaluation data (training store unavailable)"
    fidx = _even(len(fsrc), ev.fit_windows)
    fprev, ftgt = [], []
    for i in range(0, len(fidx), bs):
        inp, tgt, _ = _read(fsrc, fidx[i:i + bs], [res], ffactor)
        fprev.append(np.asarray(inp[res][:, -1], np.float64))
        ftgt.append(tgt[:, 0])
    fprev_a, ftgt_a = np.concatenate(fprev), np.concatenate(ftgt)
    sigma, table = fit_diffusion_sigma(fprev_a, ftgt_a, sigmas)
    pers_std = float(np.sqrt(np.mean(np.square(fprev_a - ftgt_a))))
    diff_std = float(np.sqrt(np.mean(np.square(diffusion(fprev_a, sigma) - ftgt_a))))
    emit({"event": "baselines", "sigma": sigma, "fit_on": fit_on})

    # ---- one-step predictions
    idx = _even(len(src), maxw)
    key = jax.random.key(seed)
    P: dict[str, list[NDArray]] = {k: [] for k in ("prev", "truth", "mean", "alea", "epi")}
    ids: list[str] = []
    for bi, i in enumerate(range(0, len(idx), bs)):
        n = len(idx[i:i + bs])
        inp, tgt, wid = _read(src, idx[i:i + bs], levels, factor, pad_to=bs)
        pr = mc_predict(model, {lv: jnp.asarray(inp[lv]) for lv in levels},
                        jax.random.fold_in(key, bi), n_samples=mc)
        pr = jax.device_get(pr)
        P["prev"].append(np.asarray(inp[res][:n, -1], np.float64))
        P["truth"].append(tgt[:n, 0])
        P["mean"].append(np.asarray(pr.mean[:n], np.float64))
        P["alea"].append(np.asarray(pr.aleatoric[:n], np.float64))
        P["epi"].append(np.asarray(pr.epistemic[:n], np.float64))
        ids += wid[:n]
        emit({"event": "batch", "done": min(i + bs, len(idx)), "total": len(idx)})
    A = {k: np.concatenate(v) for k, v in P.items()}
    std = np.sqrt(A["alea"] + A["epi"])
    thr = cfg.loss.entropy_threshold
    pers = A["prev"]
    diff = diffusion(A["prev"], sigma)
    one = {
        "model": metric_block(A["mean"], std, A["truth"], A["prev"], thr),
        "persistence": metric_block(pers, np.full_like(pers, pers_std), A["truth"], A["prev"], thr),
        "diffusion": metric_block(diff, np.full_like(diff, diff_std), A["truth"], A["prev"], thr),
    }
    one["truth_entropy_violations"] = entropy_violations(A["truth"], A["prev"], thr)
    one["model"]["aleatoric_fraction"] = float(A["alea"].sum() / max((A["alea"] + A["epi"]).sum(),
                                                                     1e-300))
    vm = np.asarray(vrmse(A["mean"], A["truth"]))
    vp = np.asarray(vrmse(pers, A["truth"]))
    vd = np.asarray(vrmse(diff, A["truth"]))
    per_domain: dict[str, Any] = {}
    doms = np.array([_domain(w) for w in ids])
    for dname in sorted(set(doms)):
        m = doms == dname
        per_domain[dname] = {"windows": int(m.sum()), "model_vrmse": float(vm[m].mean()),
                             "persistence_vrmse": float(vp[m].mean()),
                             "diffusion_vrmse": float(vd[m].mean()),
                             "model_coverage_90": interval_coverage(A["mean"][m], std[m],
                                                                    A["truth"][m], 0.9)}

    # ---- rollout
    ro: dict[str, Any] = {}
    if horizon > 0:
        n_steps = min(st.sequence_info(*k.split("/", 1))["n_steps"] for k in keys)
        h = min(horizon, n_steps - cfg.data.n_in)
        if h >= 1:
            rq = build_query(st, cfg.data, res, keys).where(
                window=cfg.data.n_in + h, stride=1, time_range=(0, cfg.data.n_in + h))
            rsrc = WindowSource(rq, cfg.data.n_in, h, reader=cfg.data.reader)
            rv: dict[str, list[NDArray]] = {"model": [], "persistence": [], "diffusion": [],
                                            "conservation": []}
            for i in range(0, len(rsrc), bs):
                n = min(i + bs, len(rsrc)) - i
                inp, tgt, _ = _read(rsrc, list(range(i, i + n)), levels, factor, pad_to=bs)
                traj = rollout(model, inp, h)[:n]
                tgt = tgt[:n]
                e0 = np.asarray(inp[res][:n, -1], np.float64)
                rv["model"].append(np.asarray(vrmse(traj, tgt)))
                rv["persistence"].append(np.asarray(vrmse(np.broadcast_to(e0[:, None], tgt.shape),
                                                          tgt)))
                dk, cur = [], e0
                for _ in range(h):
                    cur = diffusion(cur, sigma)
                    dk.append(cur)
                rv["diffusion"].append(np.asarray(vrmse(np.stack(dk, 1), tgt)))
                rv["conservation"].append(conservation_error_np(traj, tgt))
            ro = {"steps": h, "sequences": len(rsrc), "lead": list(range(1, h + 1)),
                  "model_vrmse": np.concatenate(rv["model"]).mean(0).tolist(),
                  "persistence_vrmse": np.concatenate(rv["persistence"]).mean(0).tolist(),
                  "diffusion_vrmse": np.concatenate(rv["diffusion"]).mean(0).tolist(),
                  "model_conservation_error": np.concatenate(rv["conservation"]).mean(0).tolist()}

    # ---- report
    pv, mv = one["persistence"]["vrmse"], one["model"]["vrmse"]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "checkpoint": {"path": str(ck.path), "step": ck.step, "ckpt_id": meta.get("ckpt_id"),
                       "run_id": meta.get("run_id"), "kind": meta.get("kind")},
        "data": {"store": loc, "split": split if sequences is None else "sequences",
                 "sequences": keys, "windows": len(idx), "resolution": res, "levels": levels,
                 "n_in": cfg.data.n_in},
        "settings": {"mc_samples": mc, "rollout_steps": horizon, "vrmse_eps": VRMSE_EPS,
                     "entropy_threshold": thr, "seed": seed},
        "one_step": one,
        "vs_persistence": {"vrmse_reduction": (1 - mv / pv) if pv > 0 else None,
                           "goal_vrmse_reduction": 0.30,
                           "coverage_90_goal": [0.85, 0.95]},
        "per_domain": per_domain,
        "diffusion": {"sigma": sigma, "fit_on": fit_on, "fit_windows": len(fidx),
                      "table": table, "persistence_std": pers_std, "diffusion_std": diff_std},
        "rollout": ro,
        "figures": [],
    }
    if plots:
        figs = []
        for j, i in enumerate(_even(len(ids), nplot) if nplot else []):
            p = out / f"sample_{j}.png"
            _plot_sample(p, f"{ids[i]}  (VRMSE {vm[i]:.3f}, persistence {vp[i]:.3f})",
                         A["prev"][i], A["truth"][i], A["mean"][i], std[i])
            figs.append(p.name)
        if _plot_curves(out / "training_curves.png", read_metrics(run_dir)):
            figs.append("training_curves.png")
        if ro:
            _plot_rollout(out / "rollout.png", ro)
            figs.append("rollout.png")
        _plot_spread_skill(out / "spread_skill.png", one["model"]["spread_skill_bins"])
        figs.append("spread_skill.png")
        report["figures"] = figs
    report["seconds"] = time.perf_counter() - t0
    report = _finite(report)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json_default,
                                                allow_nan=False))
    report["out_dir"] = str(out)
    emit({"event": "end", "out_dir": str(out)})
    return report


def _finite(x: Any) -> Any:
    """Non-finite floats (e.g. an undefined correlation) become None: strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
