"""Evaluating NVP checkpoints: one-step and rollout skill against the baselines.

:func:`evaluate_checkpoint` runs the model on held-out sequences (the checkpoint's validation
split by default, or every matching sequence of another store), fits the baselines
(:mod:`.baselines`) on windows of the *training* split, scores all of them with the metrics of
:mod:`.scores`, and writes ``report.json`` and the figures of :mod:`.plots`. Nothing here prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from ..physics import block_sum
from ..store import AtlasStore
from .baselines import DEFAULT_SIGMAS, FittedBaselines, fit_baselines
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .config import TrainConfig
from .input_pipeline import build_query, spread_indices
from .metrics import read_metrics
from .plots import plot_curves, plot_rollout, plot_sample, plot_spread_skill
from .scores import (
    VRMSE_EPS,
    conservation_error,
    entropy_violations,
    interval_coverage,
    metric_block,
    vrmse,
)

__all__ = ["REPORT_FORMAT", "evaluate_checkpoint", "rollout"]

REPORT_FORMAT = "atlasstore-nvp-eval/1"


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
    return inputs, block_sum(np.asarray(b["target"], np.float64), factor), list(b["ids"])


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


@dataclass
class _Setting:
    """What one evaluation runs on: the checkpoint, its config and the data to score."""

    ck: LoadedCheckpoint
    cfg: TrainConfig
    store: AtlasStore
    location: str
    keys: list[str]
    source: Any           # WindowSource of the evaluated sequences
    resolution: int
    factor: int
    batch_size: int

    @property
    def levels(self) -> list[int]:
        return list(self.ck.model.levels)


def _eval_keys(st: AtlasStore, ck: LoadedCheckpoint, cfg: TrainConfig, split: str,
               sequences: Sequence[str] | None) -> list[str]:
    meta = ck.meta
    if sequences is not None:
        keys = list(sequences)
    elif split in ("val", "train"):
        keys = list(meta["split"][split])
    elif split == "all":
        q = build_query(st, cfg.data, int(meta["query"]["resolution"]))
        keys = sorted(f"{s.domain}/{s.sequence_id}" for s in q.selection())
    else:
        raise ValueError(f"split must be 'val', 'train' or 'all', got {split!r}")
    if not keys:
        raise ValueError("no sequences to evaluate")
    return keys


def _setting(ck: LoadedCheckpoint, store: str | None, split: str,
             sequences: Sequence[str] | None, batch_size: int | None) -> _Setting:
    from ..window_source import WindowSource

    cfg = TrainConfig.from_dict(ck.meta["config"])
    res = int(ck.meta["query"]["resolution"])
    loc = str(store or ck.meta["store"])
    st = AtlasStore.open(loc)
    keys = _eval_keys(st, ck, cfg, split, sequences)
    src = WindowSource(build_query(st, cfg.data, res, keys), cfg.data.n_in, 1,
                       reader=cfg.data.reader)
    if src.base_level < res or res not in src.levels:
        raise ValueError(f"the evaluation data (levels {list(src.levels)}) lacks the model's "
                         f"resolution {res}")
    missing = [lv for lv in ck.model.levels if lv not in src.levels]
    if missing:
        raise ValueError(f"the evaluation data lacks input level(s) {missing}")
    return _Setting(ck, cfg, st, loc, keys, src, res, src.base_level // res,
                    batch_size or cfg.eval.batch_size)


def _fit_baselines(s: _Setting) -> tuple[FittedBaselines, str, int]:
    """Baselines fitted on training windows (on the evaluation data if the training store is
    gone, and said so); (fitted, what they were fitted on, number of windows)."""
    from ..window_source import WindowSource

    cfg, res, train_loc = s.cfg, s.resolution, s.ck.meta["store"]
    fit_on = "train"
    try:
        tst = s.store if train_loc == s.location else AtlasStore.open(train_loc)
        fsrc = WindowSource(build_query(tst, cfg.data, res, s.ck.meta["split"]["train"]),
                            cfg.data.n_in, 1, reader=cfg.data.reader)
        ffactor = fsrc.base_level // res
    except Exception:  # noqa: BLE001 - training store gone: fit on the evaluation data, say so
        fsrc, ffactor, fit_on = s.source, s.factor, "evaluation data (training store unavailable)"
    fidx = spread_indices(len(fsrc), cfg.eval.fit_windows)
    prev, tgt = [], []
    for i in range(0, len(fidx), s.batch_size):
        inp, t, _ = _read(fsrc, fidx[i:i + s.batch_size], [res], ffactor)
        prev.append(np.asarray(inp[res][:, -1], np.float64))
        tgt.append(t[:, 0])
    sigmas = tuple(cfg.eval.diffusion_sigmas or DEFAULT_SIGMAS)
    return fit_baselines(np.concatenate(prev), np.concatenate(tgt), sigmas), fit_on, len(fidx)


def _predict_windows(s: _Setting, idx: Sequence[int], mc: int, seed: int,
                     emit: Callable[[dict[str, Any]], None]
                     ) -> tuple[dict[str, NDArray], list[str]]:
    """MC-dropout predictions of the windows ``idx``: prev, truth, mean, aleatoric and
    epistemic variance (float64), and the window ids."""
    from .model import mc_predict

    key = jax.random.key(seed)
    bs, levels, res = s.batch_size, s.levels, s.resolution
    parts: dict[str, list[NDArray]] = {k: [] for k in ("prev", "truth", "mean", "alea", "epi")}
    ids: list[str] = []
    for bi, i in enumerate(range(0, len(idx), bs)):
        n = len(idx[i:i + bs])
        inp, tgt, wid = _read(s.source, idx[i:i + bs], levels, s.factor, pad_to=bs)
        pr = jax.device_get(mc_predict(s.ck.model, {lv: jnp.asarray(inp[lv]) for lv in levels},
                                       jax.random.fold_in(key, bi), n_samples=mc))
        parts["prev"].append(np.asarray(inp[res][:n, -1], np.float64))
        parts["truth"].append(tgt[:n, 0])
        parts["mean"].append(np.asarray(pr.mean[:n], np.float64))
        parts["alea"].append(np.asarray(pr.aleatoric[:n], np.float64))
        parts["epi"].append(np.asarray(pr.epistemic[:n], np.float64))
        ids += wid[:n]
        emit({"event": "batch", "done": min(i + bs, len(idx)), "total": len(idx)})
    return {k: np.concatenate(v) for k, v in parts.items()}, ids


def _one_step(a: Mapping[str, NDArray], std: NDArray, base: FittedBaselines,
              thr: float) -> dict[str, Any]:
    one = {"model": metric_block(a["mean"], std, a["truth"], a["prev"], thr)}
    for name in base.names:
        pred = base.predict(name, a["prev"])
        one[name] = metric_block(pred, np.full_like(pred, base.std[name]), a["truth"], a["prev"],
                                 thr)
    one["truth_entropy_violations"] = entropy_violations(a["truth"], a["prev"], thr)
    total = (a["alea"] + a["epi"]).sum()
    one["model"]["aleatoric_fraction"] = float(a["alea"].sum() / max(total, 1e-300))
    return one


def _per_domain(a: Mapping[str, NDArray], std: NDArray, ids: Sequence[str],
                v: Mapping[str, NDArray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    doms = np.array([w.split("/", 1)[0] for w in ids])
    for dname in sorted(set(doms)):
        m = doms == dname
        out[dname] = {"windows": int(m.sum()),
                      **{f"{k}_vrmse": float(x[m].mean()) for k, x in v.items()},
                      "model_coverage_90": interval_coverage(a["mean"][m], std[m], a["truth"][m],
                                                             0.9)}
    return out


def _rollout_report(s: _Setting, base: FittedBaselines, horizon: int) -> dict[str, Any]:
    """VRMSE by lead of the model and baselines fed their own predictions, from step 0 of every
    evaluated sequence; {} when the sequences are too short."""
    from ..window_source import WindowSource

    if horizon <= 0:
        return {}
    n_in, res = s.cfg.data.n_in, s.resolution
    n_steps = min(s.store.sequence_info(*k.split("/", 1))["n_steps"] for k in s.keys)
    h = min(horizon, n_steps - n_in)
    if h < 1:
        return {}
    rq = build_query(s.store, s.cfg.data, res, s.keys).where(window=n_in + h, stride=1,
                                                             time_range=(0, n_in + h))
    rsrc = WindowSource(rq, n_in, h, reader=s.cfg.data.reader)
    rv: dict[str, list[NDArray]] = {k: [] for k in ("model", *base.names, "conservation")}
    bs = s.batch_size
    for i in range(0, len(rsrc), bs):
        n = min(i + bs, len(rsrc)) - i
        inp, tgt, _ = _read(rsrc, list(range(i, i + n)), s.levels, s.factor, pad_to=bs)
        traj, tgt = rollout(s.ck.model, inp, h)[:n], tgt[:n]
        e0 = np.asarray(inp[res][:n, -1], np.float64)
        rv["model"].append(np.asarray(vrmse(traj, tgt)))
        for name in base.names:
            rv[name].append(np.asarray(vrmse(base.rollout(name, e0, h), tgt)))
        rv["conservation"].append(np.asarray(conservation_error(traj, tgt)))
    mean = {k: np.concatenate(v).mean(0).tolist() for k, v in rv.items()}
    return {"steps": h, "sequences": len(rsrc), "lead": list(range(1, h + 1)),
            **{f"{k}_vrmse": mean[k] for k in ("model", *base.names)},
            "model_conservation_error": mean["conservation"]}


def _write_figures(out: Path, run_dir: Path, a: Mapping[str, NDArray], std: NDArray,
                   ids: Sequence[str], v: Mapping[str, NDArray], nplot: int,
                   ro: Mapping[str, Any], bins: Sequence[Mapping[str, float]]) -> list[str]:
    figs = []
    for j, i in enumerate(spread_indices(len(ids), nplot) if nplot else []):
        p = out / f"sample_{j}.png"
        plot_sample(p, f"{ids[i]}  (VRMSE {v['model'][i]:.3f}, persistence "
                       f"{v['persistence'][i]:.3f})",
                    a["prev"][i], a["truth"][i], a["mean"][i], std[i])
        figs.append(p.name)
    if plot_curves(out / "training_curves.png", read_metrics(run_dir)):
        figs.append("training_curves.png")
    if ro:
        plot_rollout(out / "rollout.png", ro)
        figs.append("rollout.png")
    plot_spread_skill(out / "spread_skill.png", bins)
    figs.append("spread_skill.png")
    return figs


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
    emit = progress or (lambda e: None)
    t0 = time.perf_counter()
    ck = cast(LoadedCheckpoint, load_checkpoint(checkpoint))
    s = _setting(ck, store, split, sequences, batch_size)
    ev = s.cfg.eval
    mc = ev.mc_samples if mc_samples is None else int(mc_samples)
    horizon = ev.rollout_steps if rollout_steps is None else int(rollout_steps)
    nplot = ev.n_plots if n_plots is None else int(n_plots)
    run_dir = ck.path.parents[2] if len(ck.path.parents) >= 3 else ck.path.parent
    out = Path(out_dir) if out_dir else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    emit({"event": "start", "windows": len(s.source), "sequences": len(s.keys),
          "store": s.location})

    base, fit_on, n_fit = _fit_baselines(s)
    emit({"event": "baselines", "sigma": base.sigma, "fit_on": fit_on})
    idx = spread_indices(len(s.source), ev.max_windows if max_windows is None else max_windows)
    a, ids = _predict_windows(s, idx, mc, seed, emit)
    std = np.sqrt(a["alea"] + a["epi"])
    thr = s.cfg.loss.entropy_threshold
    one = _one_step(a, std, base, thr)
    v = {"model": np.asarray(vrmse(a["mean"], a["truth"]))}
    v.update({n: np.asarray(vrmse(base.predict(n, a["prev"]), a["truth"])) for n in base.names})
    ro = _rollout_report(s, base, horizon)

    pv, mv = one["persistence"]["vrmse"], one["model"]["vrmse"]
    meta = ck.meta
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "checkpoint": {"path": str(ck.path), "step": ck.step, "ckpt_id": meta.get("ckpt_id"),
                       "run_id": meta.get("run_id"), "kind": meta.get("kind")},
        "data": {"store": s.location, "split": split if sequences is None else "sequences",
                 "sequences": s.keys, "windows": len(idx), "resolution": s.resolution,
                 "levels": s.levels, "n_in": s.cfg.data.n_in},
        "settings": {"mc_samples": mc, "rollout_steps": horizon, "vrmse_eps": VRMSE_EPS,
                     "entropy_threshold": thr, "seed": seed},
        "one_step": one,
        "vs_persistence": {"vrmse_reduction": (1 - mv / pv) if pv > 0 else None,
                           "goal_vrmse_reduction": 0.30,
                           "coverage_90_goal": [0.85, 0.95]},
        "per_domain": _per_domain(a, std, ids, v),
        "diffusion": {"sigma": base.sigma, "fit_on": fit_on, "fit_windows": n_fit,
                      "table": base.table, "persistence_std": base.std["persistence"],
                      "diffusion_std": base.std["diffusion"]},
        "rollout": ro,
        "figures": [],
    }
    if plots:
        report["figures"] = _write_figures(out, run_dir, a, std, ids, v, nplot, ro,
                                           one["model"]["spread_skill_bins"])
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
