"""Evaluating NVP checkpoints: per-domain one-step and rollout skill against fitted baselines.

:func:`evaluate_checkpoint` runs the model on the evaluation sequences (by default every matching
sequence of a held-out store, or the checkpoint's validation split of its own store), fits the
baselines (:mod:`.baselines`) per domain on windows of the checkpoint's **training** split
only (never the evaluated data: without the training store it refuses), scores everything per
domain and overall with :mod:`.scores`, checks the goals (:mod:`.goals`), says whether the
evaluation is held out (:func:`held_out_check`) and writes ``report.json`` and the figures of
:mod:`.plots`. Nothing here prints.
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

from atlasstore.errors import EvalError
from atlasstore.io.cache_settings import CacheSettings
from atlasstore.nvp.baselines import BASELINES, DEFAULT_SIGMAS, FittedBaselines, fit_baselines
from atlasstore.nvp.checkpoint import LoadedCheckpoint, load_checkpoint
from atlasstore.nvp.config import TrainConfig
from atlasstore.nvp.goals import evaluate_goals, headline
from atlasstore.nvp.input_pipeline import build_query, spread_indices
from atlasstore.nvp.metrics import read_metrics
from atlasstore.nvp.plots import plot_bars, plot_curves, plot_rollout, plot_sample, plot_spread_skill
from atlasstore.nvp.scores import (
    VRMSE_EPS,
    conservation_error,
    entropy_violations,
    metric_block,
    valid_cells,
    vrmse,
)
from atlasstore.physics.fields import block_sum
from atlasstore.store.atlas_store import AtlasStore

__all__ = ["REPORT_FORMAT", "EvalError", "evaluate_checkpoint", "held_out_check", "rollout"]

REPORT_FORMAT = "atlasstore-nvp-eval/2"
Emit = Callable[[dict[str, Any]], None]


def _read(source: Any, idx: Sequence[int], levels: Sequence[int], factor: int,
          pad_to: int | None = None, missing_as_nan: bool = True
          ) -> tuple[dict[int, NDArray], NDArray, list[str]]:
    """Inputs at ``levels``, the target block-summed by ``factor``, the ids. With ``pad_to`` the
    batch is padded by repeating its last window (callers drop rows past ``len(idx)``), so one
    compiled program serves every batch. Missing cells of the target are NaN (the metrics leave
    them out) unless ``missing_as_nan`` is False (filled, as the stream delivers them)."""
    idx = list(idx)
    if pad_to is not None and len(idx) < pad_to:
        idx = idx + [idx[-1]] * (pad_to - len(idx))
    b = source.read_batch(idx)
    inputs = {lv: np.asarray(b["inputs"][lv]) for lv in levels}
    target = np.asarray(b["target"], np.float64)
    if "mask" in b and missing_as_nan:
        target = np.where(b["mask"][:, -target.shape[1]:], target, np.nan)
    return inputs, block_sum(target, factor), list(b["ids"])


def rollout(model: Any, inputs: Mapping[int, Any], domain: Any, steps: int
            ) -> NDArray[np.float64]:
    """Autoregressive mean predictions (B, steps, y, x): each prediction is fed back as the newest
    input step, its coarser levels made by block sums (as the store derives them)."""
    from atlasstore.nvp.model import predict, pyramid_inputs

    cur = {lv: jnp.asarray(x) for lv, x in inputs.items()}
    dom = jnp.asarray(domain, jnp.int32)
    outs = []
    for _ in range(steps):
        p = predict(model, {lv: cur[lv] for lv in model.levels}, dom)
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
    split: str
    keys: list[str]
    source: Any           # WindowSource of the evaluated sequences
    resolution: int
    factor: int
    batch_size: int

    @property
    def levels(self) -> list[int]:
        return list(self.ck.model.levels)


def _same_location(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _setting(ck: LoadedCheckpoint, store: str | None, split: str | None,
             sequences: Sequence[str] | None, batch_size: int | None,
             cache: CacheSettings | None = None) -> _Setting:
    from atlasstore.training.windows import WindowSource

    cfg = TrainConfig.from_dict(ck.meta["config"])
    res = int(ck.meta["query"]["resolution"])
    loc = str(store or ck.meta["store"])
    st = AtlasStore.open(loc, cache=cache)
    if split is None:
        split = "val" if _same_location(loc, ck.meta["store"]) else "all"
    if sequences is not None:
        keys, split = list(sequences), "sequences"
    elif split in ("val", "train"):
        keys = list(ck.meta["split"][split])
    elif split == "all":
        q = build_query(st, cfg.data, res)
        keys = sorted(f"{s.domain}/{s.sequence_id}" for s in q.selection())
    else:
        raise EvalError(f"split must be 'val', 'train' or 'all', got {split!r}")
    if not keys:
        raise EvalError("no sequences to evaluate")
    unknown = sorted({k.split("/", 1)[0] for k in keys} - set(ck.model.domains))
    if unknown:
        raise EvalError(f"the evaluation data holds domain(s) {unknown} the model was not trained "
                        f"on (it knows {list(ck.model.domains)})")
    src = WindowSource(build_query(st, cfg.data, res, keys), cfg.data.n_in, 1,
                       reader=cfg.data.reader)
    if src.base_level < res or res not in src.levels:
        raise EvalError(f"the evaluation data (levels {list(src.levels)}) lacks the model's "
                        f"resolution {res}")
    missing = [lv for lv in ck.model.levels if lv not in src.levels]
    if missing:
        raise EvalError(f"the evaluation data lacks input level(s) {missing}")
    return _Setting(ck, cfg, st, loc, split, keys, src, res, src.base_level // res,
                    batch_size or cfg.eval.batch_size)


def _content(st: AtlasStore, keys: Sequence[str]) -> dict[tuple[Any, ...], str]:
    """What identifies each sequence's content, mapped to its key: the domain and generation
    seed of generated data, every source file part (SHA-256 and member) of imported data, and
    the checksum of every stored array."""
    out: dict[tuple[Any, ...], str] = {}
    for k in keys:
        info = st.sequence_info(*k.split("/", 1))
        gen = info.get("generation") or {}
        if gen.get("seed") is not None:
            out[("seed", k.split("/", 1)[0], gen["seed"])] = k
        for src in gen.get("sources") or ():
            if src.get("sha256"):
                out[("source", src["sha256"], src.get("member"))] = k
        for arr in (info.get("arrays") or {}).values():
            if arr.get("checksum"):
                out[("array", arr["checksum"])] = k
    return out


def held_out_check(s: _Setting, train_store: AtlasStore | None) -> tuple[bool, str]:
    """(held out?, a sentence saying so): not held out when the evaluated sequences are the
    training store's validation split, or any of them was trained or validated on: the same
    store and key, or - in another store - the same content (a generation seed of the domain, a
    source file's SHA-256, an array checksum of the training run's sequences)."""
    meta = s.ck.meta
    same = _same_location(s.location, meta["store"])
    trained = set(meta["split"]["train"])
    seen = sorted(k for k in s.keys if same and k in trained)
    if seen:
        return False, (f"NOT a held-out evaluation: {len(seen)} of the {len(s.keys)} evaluated "
                       f"sequences were trained on (e.g. {seen[0]})")
    if not same and train_store is not None:
        ref = _content(train_store, list(meta["split"]["train"]) + list(meta["split"]["val"]))
        overlap = sorted({k for key, k in _content(s.store, s.keys).items() if key in ref})
        if overlap:
            return False, (f"NOT a held-out evaluation: {len(overlap)} of the {len(s.keys)} "
                           f"evaluated sequences have the content of sequences the run trained "
                           f"or validated on (same source file, array checksum or generation "
                           f"seed; e.g. {overlap[0]})")
    if same and set(s.keys) <= set(meta["split"]["val"]):
        return False, ("NOT a held-out evaluation: validation split of the training store (it "
                       "chose the best checkpoint and calibrated the variance); evaluate on a "
                       "separately generated store with --store for a held-out figure")
    if same:
        return False, ("NOT a held-out evaluation: sequences of the training store outside its "
                       "recorded split")
    return True, (f"held-out evaluation: {len(s.keys)} sequences of {s.location}, none trained "
                  "or validated on, none with their content")


def _training_pairs(s: _Setting, train_store: str | None
                    ) -> tuple[dict[str, tuple[NDArray, NDArray]], AtlasStore, dict[str, Any]]:
    """History/target pairs of the checkpoint's training split, per domain (up to
    ``eval.fit_windows`` each), from the training store (or ``train_store`` where it moved)."""
    from atlasstore.training.windows import WindowSource

    meta, cfg, res = s.ck.meta, s.cfg, s.resolution
    loc = str(train_store or meta["store"])
    keys = list(meta["split"]["train"])
    try:
        tst = (s.store if _same_location(loc, s.location)
               else AtlasStore.open(loc, cache=s.store.cache_settings))
        fsrc = WindowSource(build_query(tst, cfg.data, res, keys), cfg.data.n_in, 1,
                            reader=cfg.data.reader)
    except Exception as exc:
        raise EvalError(f"the baselines are fitted on the checkpoint's training split only, and "
                        f"its store {loc} cannot be read ({type(exc).__name__}: {exc}); pass "
                        "the training store's new location (--train-store)") from exc
    by_dom: dict[str, list[int]] = {}
    for i, w in enumerate(fsrc.windows):
        by_dom.setdefault(w.domain, []).append(i)
    pairs = {}
    for dom, idx in sorted(by_dom.items()):
        pick = [idx[j] for j in spread_indices(len(idx), cfg.eval.fit_windows)]
        hist, tgt = [], []
        for i in range(0, len(pick), s.batch_size):
            inp, t, _ = _read(fsrc, pick[i:i + s.batch_size], [res], fsrc.base_level // res,
                              missing_as_nan=False)
            hist.append(np.asarray(inp[res], np.float64))
            tgt.append(t[:, 0])
        pairs[dom] = (np.concatenate(hist), np.concatenate(tgt))
    info = {"store": loc, "sequences": len(keys),
            "windows": {d: int(p[1].shape[0]) for d, p in pairs.items()}}
    return pairs, tst, info


def _predict_windows(s: _Setting, idx: Sequence[int], mc: int, seed: int, emit: Emit
                     ) -> tuple[dict[str, NDArray], list[str]]:
    """MC predictions of the windows ``idx``: history, truth, mean, aleatoric and epistemic
    variance (float64), the domain of each, and the window ids."""
    from atlasstore.nvp.model import mc_predict

    key = jax.random.key(seed)
    bs, levels, res, model = s.batch_size, s.levels, s.resolution, s.ck.model
    parts: dict[str, list[NDArray]] = {k: [] for k in ("hist", "truth", "mean", "alea", "epi")}
    ids: list[str] = []
    for bi, i in enumerate(range(0, len(idx), bs)):
        n = len(idx[i:i + bs])
        inp, tgt, wid = _read(s.source, idx[i:i + bs], levels, s.factor, pad_to=bs)
        dom = jnp.asarray(model.domain_index(wid))
        pr = jax.device_get(mc_predict(model, {lv: jnp.asarray(inp[lv]) for lv in levels}, dom,
                                       jax.random.fold_in(key, bi), n_samples=mc))
        parts["hist"].append(np.asarray(inp[res][:n], np.float64))
        parts["truth"].append(tgt[:n, 0])
        parts["mean"].append(np.asarray(pr.mean[:n], np.float64))
        parts["alea"].append(np.asarray(pr.aleatoric[:n], np.float64))
        parts["epi"].append(np.asarray(pr.epistemic[:n], np.float64))
        ids += wid[:n]
        emit({"event": "batch", "done": min(i + bs, len(idx)), "total": len(idx)})
    return {k: np.concatenate(v) for k, v in parts.items()}, ids


def _blocks(a: Mapping[str, NDArray], std: NDArray, m: NDArray, base: FittedBaselines,
            doms: NDArray, thr: float) -> dict[str, Any]:
    """Metric blocks of the model and every baseline on the windows selected by ``m``."""
    prev = a["hist"][m][:, -1]
    out: dict[str, Any] = {"model": metric_block(a["mean"][m], std[m], a["truth"][m], prev, thr)}
    for name in BASELINES:
        pred = np.empty_like(a["truth"][m])
        sd = np.empty_like(pred)
        for d in sorted(set(doms[m])):
            sel = doms[m] == d
            fb = base.of(d)
            pred[sel] = fb.predict(name, a["hist"][m][sel])
            sd[sel] = fb.std[name]
        out[name] = metric_block(pred, sd, a["truth"][m], prev, thr)
    out["truth_entropy_violations"] = entropy_violations(a["truth"][m], prev, thr)
    total = (a["alea"][m] + a["epi"][m]).sum()
    out["model"]["aleatoric_fraction"] = float(a["alea"][m].sum() / max(total, 1e-300))
    out["windows"] = int(m.sum())
    return out


def _rollouts(s: _Setting, base: FittedBaselines, horizon: int) -> dict[str, Any]:
    """VRMSE by lead of the model and the baselines fed their own predictions, from every step
    of every evaluated sequence that leaves ``horizon`` steps to compare with (at least step 0),
    per domain; {} when the sequences are too short."""
    from atlasstore.training.windows import WindowSource

    if horizon <= 0:
        return {}
    n_in, res, model = s.cfg.data.n_in, s.resolution, s.ck.model
    n_steps = min(s.store.sequence_info(*k.split("/", 1))["n_steps"] for k in s.keys)
    h = min(horizon, n_steps - n_in)
    if h < 1:
        return {}
    rq = build_query(s.store, s.cfg.data, res, s.keys).where(window=n_in + h, stride=1)
    rsrc = WindowSource(rq, n_in, h, reader=s.cfg.data.reader)
    names = ("model", *BASELINES)
    per: dict[str, dict[str, list[NDArray]]] = {}
    bs = s.batch_size
    for i in range(0, len(rsrc), bs):
        n = min(i + bs, len(rsrc)) - i
        inp, tgt, wid = _read(rsrc, list(range(i, i + n)), s.levels, s.factor, pad_to=bs)
        dom = model.domain_index(wid)
        traj, tgt = rollout(model, inp, dom, h)[:n], tgt[:n]
        hist = np.asarray(inp[res][:n], np.float64)
        for j, w in enumerate(wid[:n]):
            d = w.split("/", 1)[0]
            acc = per.setdefault(d, {k: [] for k in (*names, "conservation")})
            ok = valid_cells(tgt[j])
            t0 = tgt[j] if ok is None else np.where(ok, tgt[j], 0.0)
            acc["model"].append(np.asarray(vrmse(traj[j], t0, mask=ok)))
            acc["conservation"].append(np.asarray(conservation_error(
                traj[j] if ok is None else np.where(ok, traj[j], 0.0), t0)))
            for name in BASELINES:
                acc[name].append(np.asarray(vrmse(base.of(d).rollout(name, hist[j:j + 1], h)[0],
                                                  t0, mask=ok)))
    out: dict[str, Any] = {"steps": h, "lead": list(range(1, h + 1)), "per_domain": {}}
    for d, acc in sorted(per.items()):
        out["per_domain"][d] = {"rollouts": len(acc["model"]),
                                **{k: np.mean(acc[k], axis=0).tolist() for k in names},
                                "model_conservation_error": np.mean(acc["conservation"],
                                                                    axis=0).tolist()}
    out["overall"] = {k: np.mean([v[k] for v in out["per_domain"].values()], axis=0).tolist()
                      for k in names}
    return out


def _figures(out: Path, run_dir: Path, a: Mapping[str, NDArray], std: NDArray,
             ids: Sequence[str], nplot: int, report: Mapping[str, Any]) -> list[str]:
    figs = []
    ok = valid_cells(a["truth"])
    truth = a["truth"] if ok is None else np.where(ok, a["truth"], 0.0)
    v = np.asarray(vrmse(a["mean"], truth, mask=ok))
    vp = np.asarray(vrmse(a["hist"][:, -1], truth, mask=ok))
    doms = [w.split("/", 1)[0] for w in ids]
    picks = ([doms.index(d) for d in sorted(set(doms))] if nplot >= len(set(doms))
             else spread_indices(len(ids), nplot) if nplot else [])
    for j, i in enumerate(picks[:nplot] if nplot else []):
        p = out / f"sample_{j}.png"
        plot_sample(p, f"{ids[i]}  (VRMSE {v[i]:.3f}, persistence {vp[i]:.3f})",
                    a["hist"][i, -1], a["truth"][i], a["mean"][i], std[i])
        figs.append(p.name)
    if plot_curves(out / "training_curves.png", read_metrics(run_dir)):
        figs.append("training_curves.png")
    plot_bars(out / "domains.png", report["one_step"]["per_domain"])
    figs.append("domains.png")
    if report["rollout"]:
        plot_rollout(out / "rollout.png", report["rollout"])
        figs.append("rollout.png")
    plot_spread_skill(out / "spread_skill.png",
                      report["one_step"]["overall"]["model"]["spread_skill_bins"])
    figs.append("spread_skill.png")
    return figs


def evaluate_checkpoint(checkpoint: str | Path, *, store: str | None = None,
                        train_store: str | None = None, out_dir: str | Path | None = None,
                        split: str | None = None, sequences: Sequence[str] | None = None,
                        mc_samples: int | None = None, rollout_steps: int | None = None,
                        n_plots: int | None = None, max_windows: int | None = None,
                        batch_size: int | None = None, plots: bool = True, seed: int = 0,
                        progress: Emit | None = None,
                        cache: CacheSettings | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint per domain against persistence, diffusion and a linear AR stencil;
    check the goals; write report.json and PNGs. Returns the report.

    ``store``: the evaluation store (default: the checkpoint's own). ``split``: "all" (every
    sequence of ``store`` the training query selects: the default for another store), "val"
    (the checkpoint's validation split: the default on its own store, and reported as NOT
    held out) or "train"; ``sequences`` overrides it. ``train_store``: where the training store
    is now, when it moved (the baselines are fitted on its training split, nothing else).
    Options default to the config's ``eval`` section; ``out_dir`` to ``<run dir>/eval``.
    """
    emit = progress or (lambda e: None)
    t0 = time.perf_counter()
    ck = cast(LoadedCheckpoint, load_checkpoint(checkpoint))
    s = _setting(ck, store, split, sequences, batch_size, cache)
    ev = s.cfg.eval
    mc = ev.mc_samples if mc_samples is None else int(mc_samples)
    horizon = ev.rollout_steps if rollout_steps is None else int(rollout_steps)
    nplot = ev.n_plots if n_plots is None else int(n_plots)
    run_dir = ck.path.parents[2] if len(ck.path.parents) >= 3 else ck.path.parent
    out = Path(out_dir) if out_dir else run_dir / "eval"
    emit({"event": "start", "windows": len(s.source), "sequences": len(s.keys),
          "store": s.location})

    pairs, tst, fit_info = _training_pairs(s, train_store)
    held_out, note = held_out_check(s, tst)
    emit({"event": "held_out", "held_out": held_out, "note": note})
    sigmas = tuple(ev.diffusion_sigmas or DEFAULT_SIGMAS)
    base = fit_baselines(pairs, sigmas, ev.ar_radius, ev.ar_steps or s.cfg.data.n_in)
    emit({"event": "baselines", "fit_on": fit_info})
    idx = spread_indices(len(s.source), ev.max_windows if max_windows is None else max_windows)
    a, ids = _predict_windows(s, idx, mc, seed, emit)
    std = np.sqrt(a["alea"] + a["epi"])
    thr = s.cfg.loss.entropy_threshold
    doms = np.array([w.split("/", 1)[0] for w in ids])
    per = {d: _blocks(a, std, doms == d, base, doms, thr) for d in sorted(set(doms))}
    overall = _blocks(a, std, np.ones(len(ids), bool), base, doms, thr)
    meta = ck.meta
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "checkpoint": {"path": str(ck.path), "step": ck.step, "ckpt_id": meta.get("ckpt_id"),
                       "run_id": meta.get("run_id"), "kind": meta.get("kind")},
        "data": {"store": s.location, "split": s.split, "sequences": s.keys,
                 "windows": len(idx), "resolution": s.resolution, "levels": s.levels,
                 "n_in": s.cfg.data.n_in, "held_out": held_out, "held_out_note": note},
        "settings": {"mc_samples": mc, "rollout_steps": horizon, "vrmse_eps": VRMSE_EPS,
                     "entropy_threshold": thr, "seed": seed},
        "one_step": {"overall": overall, "per_domain": per},
        "rollout": _rollouts(s, base, horizon),
        "baselines": {"fit_on": fit_info,
                      "per_domain": {d: b.to_dict() for d, b in base.domains.items()}},
        "model": {"prior": meta["model"]["prior"],
                  "calibration": dict(zip(ck.model.domains,
                                          np.sqrt(np.asarray(ck.model.var_scale[...])).tolist(),
                                          strict=True))},
        "figures": [],
    }
    report["goals"] = evaluate_goals(report)
    report["headline"] = headline(report)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        report["figures"] = _figures(out, run_dir, a, std, ids, nplot, report)
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
