"""Training the NVP model: config, split by sequence, streaming input, checkpoints, lineage.

>>> from atlasstore.nvp.train import TrainConfig, train
>>> result = train(TrainConfig.load("configs/nvp-cpu-small.json"), store="atlas.zarr")
>>> result.best["ckpt_id"], result.best["path"]

What a run does
---------------
1. Selects sequences with a :class:`~atlasstore.query.Query` built from ``config.data`` and splits
   them **by sequence** (:func:`split_by_sequence`): no time step of a sequence is on both sides.
2. Measures the normalisation (mean/std of the energy at every input level) on the training split
   and builds :class:`~atlasstore.nvp.model.NVP` with it (the model normalises internally; the
   stream delivers physical values, ``normalise=False``: see :mod:`atlasstore.nvp.model`).
3. Streams training batches with :func:`atlasstore.stream.stream` (endless, seeded shuffle,
   prefetch) and logs how long each step waited on it.
4. Optimises :func:`atlasstore.nvp.loss.nvp_loss` with Optax Adam (lr 1e-4 default; schedule
   constant / cosine / warmup_cosine; optional clipping and weight decay).
5. Every ``eval_every`` steps evaluates the validation sequences (dropout off) and tracks the
   monitored metric, by default **energy fidelity** = VRMSE + relative conservation error of the
   one-step prediction (lower is better). Conservation alone is not a usable criterion: an
   untrained model predicts persistence, which conserves energy exactly, so early stopping on it
   would stop at step 0. The best checkpoint is kept apart (``checkpoints/best``) from the latest
   ones (``checkpoints/latest``); training stops after ``patience`` evaluations without an
   improvement larger than ``min_delta``.
6. Checkpoints (Orbax) hold the model, the optimiser state, the stream's state and a JSON
   ``meta`` item (step, config, split, model description, early-stopping state): a resumed run
   (``resume=True``) continues with exactly the losses the uninterrupted run would have had.
7. Metrics go to ``metrics.jsonl`` (one JSON object per line) and TensorBoard event files
   (``tb/``, tensorboardX).
8. Lineage: the DatasetVersion (the exact query and split), the TrainingRun and every checkpoint
   are registered in the catalog (default: the SQLite catalog beside the store), so that
   ``catalog.generation_runs_for("Checkpoint:<ckpt_id>")`` returns the generation runs (seeds,
   configs, code versions) behind the training data.

Nothing here prints: progress goes to the ``progress`` callback (the CLI prints it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..locations import default_catalog_location, is_remote
from ..provenance import code_version, host, utc_now
from ..query import Query
from ..schemas import load_json, validate
from ..store import AtlasStore
from .evaluate import vrmse
from .loss import LossConfig, beta_nll, conservation_error, entropy_hinge, mse, nvp_loss
from .model import NVP, ModelConfig, downsample_sum

__all__ = [
    "TrainError", "DataConfig", "OptimConfig", "LoopConfig", "EvalConfig", "TrainConfig",
    "TrainResult", "split_by_sequence", "make_schedule", "make_optimizer", "train",
    "train_step", "eval_step", "LoadedCheckpoint", "load_checkpoint", "resolve_checkpoint",
    "register_lineage", "generation_lineage", "EarlyStopping", "MONITORS", "build_query",
]

CHECKPOINT_FORMAT = "atlasstore-nvp-checkpoint/1"
MONITORS = ("energy_fidelity", "vrmse", "conservation", "mse", "nll", "loss")


class TrainError(ValueError):
    """A training run that cannot start or continue as configured."""


# ------------------------------------------------------------------------------------ config


def _from_dict(cls: Any, d: Mapping[str, Any] | None, what: str) -> Any:
    d = dict(d or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise TrainError(f"unknown {what} option(s): {', '.join(unknown)}")
    for k, v in list(d.items()):
        if isinstance(v, list):
            d[k] = tuple(v)
    return cls(**d)


@dataclass(frozen=True)
class DataConfig:
    """Which windows to train on and how to stream them."""

    domains: tuple[str, ...] | None = None
    sequences: tuple[str, ...] | None = None
    resolution: int | None = None
    n_in: int = 1
    stride: int = 1
    time_range: tuple[int, int] | None = None
    entropy: tuple[float, float] | None = None
    mean: tuple[float, float] | None = None
    variance: tuple[float, float] | None = None
    perturbation: str | None = None
    run_id: str | None = None
    batch_size: int = 8
    val_fraction: float = 0.05
    split_seed: int | None = None
    prefetch: int = 2
    workers: int = 2
    reader: str = "auto"


@dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    end_lr_factor: float = 0.0
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int = 1000
    max_minutes: float | None = None
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int | None = None  # default: eval_every
    keep_checkpoints: int = 2
    patience: int | None = 10
    min_delta: float = 0.0
    monitor: str = "energy_fidelity"
    val_batch_size: int | None = None
    val_max_windows: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    mc_samples: int = 16
    rollout_steps: int = 5
    n_plots: int = 3
    batch_size: int = 8
    max_windows: int | None = None
    fit_windows: int = 64
    diffusion_sigmas: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """A whole training configuration (``schemas/train-config.schema.json``)."""

    name: str = "nvp"
    store: str | None = None
    catalog: str | None | bool = None
    out_dir: str | None = None
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TrainConfig:
        """Validate against the schema, then build (with defaults for what is omitted)."""
        doc = validate(json.loads(json.dumps(doc)), "train-config", what="training config")
        top = {k: v for k, v in doc.items() if k not in ("data", "model", "loss", "optim",
                                                         "train", "eval", "$schema")}
        try:
            cfg = cls(**top,
                      data=_from_dict(DataConfig, doc.get("data"), "data"),
                      model=ModelConfig.from_dict(doc.get("model")),
                      loss=LossConfig.from_dict(doc.get("loss")),
                      optim=_from_dict(OptimConfig, doc.get("optim"), "optim"),
                      train=_from_dict(LoopConfig, doc.get("train"), "train"),
                      eval=_from_dict(EvalConfig, doc.get("eval"), "eval"))
        except TypeError as exc:
            raise TrainError(f"training config: {exc}") from None
        cfg.check()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON config file validated against ``train-config``."""
        return cls.from_dict(load_json(path, "train-config"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))

    def check(self) -> None:
        if self.train.monitor not in MONITORS:
            raise TrainError(f"train.monitor must be one of {MONITORS}, got {self.train.monitor!r}")
        if self.optim.schedule not in ("constant", "cosine", "warmup_cosine"):
            raise TrainError(f"unknown optim.schedule {self.optim.schedule!r}")
        if self.data.time_range is not None and self.data.time_range[1] <= self.data.time_range[0]:
            raise TrainError(f"data.time_range must be [start, stop) with start < stop, got "
                             f"{list(self.data.time_range)}")

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields (store, catalog, out_dir, seed, name) or whole sections
        changed; ``train_max_steps=...`` style keys change one option of a section."""
        top: dict[str, Any] = {}
        for k, v in changes.items():
            sec, sep, opt = k.partition("_")
            if sep and sec in ("data", "model", "loss", "optim", "train", "eval") and \
                    opt in {f.name for f in fields(getattr(self, sec))}:
                top[sec] = replace(top.get(sec, getattr(self, sec)), **{opt: v})
            else:
                top[k] = v
        cfg = replace(self, **top)
        cfg.check()
        return cfg


# ------------------------------------------------------------------------------------ split


def split_by_sequence(keys: Sequence[str], val_fraction: float = 0.05, seed: int = 0
                      ) -> tuple[list[str], list[str]]:
    """(train, validation) sequence keys: a seeded random choice of whole sequences.

    ``n_val = clamp(round(val_fraction * n), 1, n - 1)``: at least one validation sequence and
    at least one training sequence, so at least two sequences are needed. The choice depends only
    on the sorted set of keys and the seed. Both lists come back sorted.
    """
    uniq = sorted(set(keys))
    n = len(uniq)
    if n < 2:
        raise TrainError(f"a split by sequence needs at least 2 sequences, the selection has {n} "
                         f"({', '.join(uniq) or 'none'}); generate more sequences or widen the "
                         "query")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x5EC5])))
    perm = rng.permutation(n)
    val = sorted(uniq[i] for i in perm[:n_val])
    train_keys = sorted(uniq[i] for i in perm[n_val:])
    return train_keys, val


# ------------------------------------------------------------------------------------ optimiser


def make_schedule(o: OptimConfig, max_steps: int) -> optax.Schedule:
    """The learning-rate schedule: constant, cosine decay, or linear warmup then cosine decay.

    Decay runs over ``decay_steps`` (default ``max_steps``) to ``end_lr_factor * lr``.
    """
    lr = float(o.learning_rate)
    decay = int(o.decay_steps or max_steps)
    if o.schedule == "constant":
        return optax.constant_schedule(lr)
    if o.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=max(decay, 1), alpha=o.end_lr_factor)
    if o.schedule == "warmup_cosine":
        warm = int(o.warmup_steps)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warm,
                                                  decay_steps=max(decay, warm + 1),
                                                  end_value=lr * o.end_lr_factor)
    raise TrainError(f"unknown schedule {o.schedule!r} (constant, cosine, warmup_cosine)")


@functools.lru_cache(maxsize=32)
def make_optimizer(o: OptimConfig, max_steps: int) -> optax.GradientTransformation:
    """Adam (AdamW with weight decay) on the schedule, after global-norm clipping.

    Cached: the transformation is a static part of the optimiser's graph, so an equal config
    must give the *same* object for a compiled training step to be reused (e.g. on resume in one
    process, or several runs in one test session).
    """
    sched = make_schedule(o, max_steps)
    parts = []
    if o.grad_clip:
        parts.append(optax.clip_by_global_norm(float(o.grad_clip)))
    parts.append(optax.adamw(sched, weight_decay=o.weight_decay) if o.weight_decay
                 else optax.adam(sched))
    return optax.chain(*parts)


# ------------------------------------------------------------------------------------ steps


def _target(target: jax.Array, factor: int) -> jax.Array:
    """(B, n_out, y, x) stream target at the stored base level -> (B, y, x) at the model's level."""
    return downsample_sum(target[:, 0], factor)


@nnx.jit(static_argnames=("loss_cfg", "factor"))
def train_step(model: NVP, optimizer: nnx.Optimizer, inputs: Mapping[int, jax.Array],
               target: jax.Array, key: jax.Array, loss_cfg: LossConfig, factor: int = 1
               ) -> dict[str, jax.Array]:
    """One optimisation step on a batch (dropout on); returns the loss terms and grad norm.

    The loss is computed on E / s (s: the model's output scale), see :mod:`.loss`.
    """
    tgt = _target(target, factor)
    prev = inputs[model.base][:, -1]

    def loss_fn(m: NVP) -> tuple[jax.Array, dict[str, jax.Array]]:
        p = m(inputs, deterministic=False, key=key)
        s = m.out_scale
        return nvp_loss(p.mean / s, p.log_var - 2 * jnp.log(s), tgt / s, prev / s, loss_cfg)

    (_, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return {**terms, "grad_norm": optax.tree.norm(grads)}


@nnx.jit(static_argnames=("loss_cfg", "factor"))
def eval_step(model: NVP, inputs: Mapping[int, jax.Array], target: jax.Array,
              loss_cfg: LossConfig, factor: int = 1) -> dict[str, jax.Array]:
    """Per-sample validation metrics of the deterministic prediction (dropout off), (B,) each."""
    tgt = _target(target, factor)
    prev = inputs[model.base][:, -1]
    p = model(inputs, deterministic=True)
    s = model.out_scale
    pm, lv, t, e0 = p.mean / s, p.log_var - 2 * jnp.log(s), tgt / s, prev / s
    out = {
        "mse": mse(pm, t),
        "conservation": conservation_error(pm, t),
        "entropy": entropy_hinge(pm, e0, loss_cfg.entropy_threshold),
        "nll": beta_nll(pm, lv, t, 0.0),
        "vrmse": vrmse(p.mean, tgt),
        "persistence_vrmse": vrmse(prev, tgt),
    }
    out["loss"] = (loss_cfg.lambda_mse * out["mse"] + loss_cfg.lambda_conservation
                   * out["conservation"] + loss_cfg.lambda_entropy * out["entropy"]
                   + loss_cfg.lambda_nll * beta_nll(pm, lv, t, loss_cfg.beta))
    out["energy_fidelity"] = out["vrmse"] + out["conservation"]
    return out


# ------------------------------------------------------------------------------------ early stop


@dataclass
class EarlyStopping:
    """Track the best value of a lower-is-better metric; ``should_stop`` after ``patience``
    evaluations without an improvement larger than ``min_delta`` (never when patience is None)."""

    patience: int | None = 10
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = -1
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record a value; True when it is a new best."""
        if not math.isfinite(value):
            self.bad_evals += 1
            return False
        if value < self.best - self.min_delta:
            self.best, self.best_step, self.bad_evals = float(value), int(step), 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta,
                "best": self.best if math.isfinite(self.best) else None,
                "best_step": self.best_step, "bad_evals": self.bad_evals}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EarlyStopping:
        best = d.get("best")
        return cls(d.get("patience"), float(d.get("min_delta", 0.0)),
                   math.inf if best is None else float(best), int(d.get("best_step", -1)),
                   int(d.get("bad_evals", 0)))


# ------------------------------------------------------------------------------------ data


def build_query(store: AtlasStore, data: DataConfig, scale: int,
                sequences: Sequence[str] | None = None) -> Query:
    """The Query of the configured selection (``sequences`` overrides ``data.sequences``)."""
    seqs = tuple(sequences) if sequences is not None else data.sequences
    return Query(store, domains=data.domains, sequences=seqs, scale=scale,
                 window=data.n_in + 1, stride=data.stride, time_range=data.time_range,
                 entropy=data.entropy, mean=data.mean, variance=data.variance,
                 perturbation=data.perturbation, run_id=data.run_id)


def _store_levels(store: AtlasStore, keys: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, int]]:
    sig = set()
    for k in keys:
        d, s = k.split("/", 1)
        info = store.sequence_info(d, s)
        sig.add((tuple(sorted(info["levels"], reverse=True)), tuple(info["shape"])))
    if len(sig) != 1:
        raise TrainError(f"the selected sequences mix levels or map shapes ({sorted(sig)}); "
                         "select one scale and shape (data.domains / data.sequences)")
    (levels, shape), = sig
    return levels, (int(shape[0]), int(shape[1]))


def _pooled_stats(store: AtlasStore, keys: Sequence[str], levels: Sequence[int],
                  reader: str) -> dict[int, tuple[float, float]]:
    """Mean and std of the energy at every level over all values of the given sequences."""
    from ..normalization import compute_stats

    seqs = [tuple(k.split("/", 1)) for k in keys]
    st = compute_stats(store, seqs, ["energy"], list(levels), reader=reader, fingerprint="-")
    out: dict[int, tuple[float, float]] = {}
    for lv in levels:
        n = s1 = s2 = 0.0
        for dom in st.values.values():
            v = dom["energy"][str(lv)]
            c, m, sd = float(v["count"]), float(v["mean"]), float(v["std"])
            n += c
            s1 += c * m
            s2 += c * (sd * sd + m * m)
        mean = s1 / n
        std = math.sqrt(max(s2 / n - mean * mean, 0.0))
        out[int(lv)] = (mean, std if std > 0 else 1.0)
    return out


def _val_batches(source: Any, batch_size: int, max_windows: int | None) -> list[list[int]]:
    n = len(source)
    idx = list(range(n))
    if max_windows is not None and n > max_windows:
        idx = [int(i) for i in np.linspace(0, n - 1, max_windows).round().astype(int)]
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def validate_model(model: NVP, source: Any, loss_cfg: LossConfig, factor: int,
                   batch_size: int, max_windows: int | None = None) -> dict[str, float]:
    """Mean validation metrics over the windows of a :class:`~atlasstore.stream.WindowSource`.

    The last chunk is padded to ``batch_size`` (and the padding dropped) so that one compiled
    evaluation step serves every chunk.
    """
    acc: dict[str, list[np.ndarray]] = {}
    chunks = _val_batches(source, batch_size, max_windows)
    for chunk in chunks:
        n = len(chunk)
        b = source.read_batch(list(chunk) + [chunk[-1]] * (batch_size - n))
        inputs = {lv: jnp.asarray(b["inputs"][lv]) for lv in model.levels}
        out = eval_step(model, inputs, jnp.asarray(b["target"]), loss_cfg, factor)
        for k, v in jax.device_get(out).items():
            acc.setdefault(k, []).append(np.asarray(v)[:n])
    res = {k: float(np.mean(np.concatenate(v))) for k, v in acc.items()}
    res["windows"] = float(sum(len(c) for c in chunks))
    return res


# ------------------------------------------------------------------------------------ logging


class MetricsLog:
    """``metrics.jsonl`` (append, one JSON object per line) plus TensorBoard scalars."""

    def __init__(self, out_dir: Path, resume_step: int | None) -> None:
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if int(rec.get("step", 0)) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(k + "\n" for k in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._fh = self.path.open("a")
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(logdir=str(out_dir / "tb"),
                                purge_step=None if resume_step is None else resume_step + 1)

    def write(self, split: str, step: int, values: Mapping[str, Any]) -> None:
        rec = {"split": split, "step": int(step), "time": time.time(), **values}
        self._fh.write(json.dumps(rec, default=float) + "\n")
        self._fh.flush()
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        self.tb.flush()
        self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# ------------------------------------------------------------------------------------ checkpoints


@contextlib.contextmanager
def _quiet_absl() -> Any:
    """Orbax logs absl warnings for read-only managers ("setting save_interval_steps=0", "Given
    directory is read only"): expected here, so hide them while a manager is opened."""
    lg = logging.getLogger("absl")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def _manager(directory: Path, keep: int | None, read_only: bool = False) -> Any:
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                        enable_async_checkpointing=False, read_only=read_only,
                                        save_interval_steps=0 if read_only else 1)
    with _quiet_absl():
        return ocp.CheckpointManager(directory.resolve(), options=opts)


def _save(mngr: Any, step: int, model: NVP, optimizer: nnx.Optimizer | None,
          stream_state: Mapping[str, Any] | None, meta: Mapping[str, Any]) -> Path:
    import orbax.checkpoint as ocp

    items: dict[str, Any] = {"model": ocp.args.StandardSave(nnx.state(model)),
                             "meta": ocp.args.JsonSave(json.loads(json.dumps(meta)))}
    if optimizer is not None:
        items["opt"] = ocp.args.StandardSave(nnx.state(optimizer))
    if stream_state is not None:
        items["stream"] = ocp.args.JsonSave(dict(stream_state))
    mngr.save(step, args=ocp.args.Composite(**items), force=True)
    mngr.wait_until_finished()
    return Path(mngr.directory) / str(step)


@dataclass
class LoadedCheckpoint:
    """A restored checkpoint: the model, its meta record and where it came from."""

    model: NVP
    meta: dict[str, Any]
    step: int
    path: Path

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["config"])


def resolve_checkpoint(path: str | Path) -> tuple[Path, int]:
    """(manager directory, step) for a run directory (its best checkpoint, else its latest), a
    manager directory (``checkpoints/best``: its latest step) or a step directory."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    if (p / "checkpoints").is_dir():
        for kind in ("best", "latest"):
            m = p / "checkpoints" / kind
            if m.is_dir() and _steps(m):
                return m, max(_steps(m))
        raise TrainError(f"run directory {p} has no checkpoint yet")
    if p.name.isdigit() and (p / "meta").exists():
        return p.parent, int(p.name)
    if _steps(p):
        return p, max(_steps(p))
    raise TrainError(f"{p} is not a run directory, checkpoint directory or checkpoint step")


def _steps(d: Path) -> list[int]:
    if not d.is_dir():
        return []
    return [int(c.name) for c in d.iterdir() if c.is_dir() and c.name.isdigit()
            and (c / "meta").exists()]


def _model_from_meta(meta: Mapping[str, Any], rngs_seed: int = 0) -> NVP:
    m = meta["model"]
    stats = {int(k): (float(v[0]), float(v[1])) for k, v in m["stats"].items()}
    return NVP(ModelConfig.from_dict(m["config"]), m["levels"], m["n_in"], stats,
               shape=tuple(m["shape"]), seed=rngs_seed)


def load_checkpoint(path: str | Path, *, optimizer: nnx.Optimizer | None = None,
                    model: NVP | None = None, with_stream: bool = False
                    ) -> LoadedCheckpoint | tuple[LoadedCheckpoint, dict[str, Any] | None]:
    """Restore a checkpoint (see :func:`resolve_checkpoint` for what ``path`` may be).

    Builds the model from the checkpoint's meta record unless ``model`` is given; restores the
    optimiser state into ``optimizer`` when given. With ``with_stream`` returns
    ``(loaded, stream_state)``.
    """
    import orbax.checkpoint as ocp

    mdir, step = resolve_checkpoint(path)
    mngr = _manager(mdir, None, read_only=True)
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"{mdir / str(step)} is not an NVP checkpoint "
                             f"(format {meta.get('format')!r})")
        model = model if model is not None else _model_from_meta(meta)
        items: dict[str, Any] = {"model": ocp.args.StandardRestore(nnx.state(model))}
        if optimizer is not None:
            items["opt"] = ocp.args.StandardRestore(nnx.state(optimizer))
        if with_stream:
            items["stream"] = ocp.args.JsonRestore()
        got = mngr.restore(step, args=ocp.args.Composite(**items))
    finally:
        mngr.close()
    nnx.update(model, got["model"])
    if optimizer is not None:
        nnx.update(optimizer, got["opt"])
    loaded = LoadedCheckpoint(model, dict(meta), step, mdir / str(step))
    if with_stream:
        return loaded, (dict(got["stream"]) if got.get("stream") is not None else None)
    return loaded


# ------------------------------------------------------------------------------------ lineage


def _open_catalog(spec: Any, store_location: str) -> tuple[Any, bool]:
    """(catalog or None, opened_here)."""
    if spec is False:
        return None, False
    if spec is None:
        if is_remote(store_location):
            return None, False
        spec = default_catalog_location(store_location)
    if isinstance(spec, (str, os.PathLike)):
        from ..catalog import open_catalog

        return open_catalog(spec), True
    return spec, False


def dataset_version_id(query: Mapping[str, Any], split: Mapping[str, Any],
                       keys: Sequence[str]) -> str:
    blob = json.dumps({"query": query, "split": split, "keys": sorted(keys)}, sort_keys=True)
    return "dv-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def register_lineage(catalog: Any, run: Mapping[str, Any], store: AtlasStore | None = None,
                     checkpoints: Sequence[Mapping[str, Any]] = ()) -> str:
    """Register a run's DatasetVersion, TrainingRun and checkpoints in ``catalog``.

    ``run`` is the run record (``run.json`` of a run directory: run_id, dataset version id, query,
    split, config, ...). Sequences missing from the catalog are first registered from ``store``
    (``index.sync_catalog`` without pruning). Idempotent. Returns the dataset version id.
    """
    keys = list(run["split"]["train"]) + list(run["split"]["val"])
    missing = [k for k in keys if catalog.get_sequence(k) is None]
    if missing:
        if store is None:
            from ..catalog.base import CatalogNotFound, missing_message

            raise CatalogNotFound(missing_message("sequences", missing, " (training data)"))
        from ..index import sync_catalog

        sync_catalog(store, catalog, prune=False)
    dv = catalog.register_dataset_version(run["dataset_version_id"], run["query"], run["split"],
                                          keys, created=run["started"])
    catalog.register_training_run(run["run_id"], run["config"], dv.version_id,
                                  code_version=run.get("code_version"), host=run.get("host"),
                                  started=run["started"], finished=run.get("finished"))
    for ck in checkpoints:
        catalog.register_checkpoint(ck["ckpt_id"], run["run_id"], int(ck["step"]),
                                    ck.get("metrics", {}), str(ck["path"]),
                                    created=ck.get("created"))
    return dv.version_id


def generation_lineage(catalog: Any, ckpt_id: str) -> dict[str, Any]:
    """From a checkpoint id: its training run, dataset version, the generation runs (seed,
    config, code version) and the sequences (with their seeds) behind its training data."""
    nid = f"Checkpoint:{ckpt_id}"
    runs = catalog.generation_runs_for(nid)
    lin = catalog.lineage(nid)
    seqs = [{"key": n.key, "seed": n.properties.get("seed"), "run_id": n.properties.get("run_id")}
            for n in lin.of_kind("Sequence")]
    return {"checkpoint": ckpt_id,
            "training_runs": [n.key for n in lin.of_kind("TrainingRun")],
            "dataset_versions": [n.key for n in lin.of_kind("DatasetVersion")],
            "generation_runs": [{"run_id": r.run_id, "seed": r.seed, "config": r.config,
                                 "code_version": r.code_version} for r in runs],
            "sequences": seqs}


# ------------------------------------------------------------------------------------ the run


@dataclass
class TrainResult:
    run_id: str
    out_dir: Path
    step: int
    stopped: str
    dataset_version_id: str
    best: dict[str, Any] | None
    latest: dict[str, Any] | None
    train_sequences: list[str]
    val_sequences: list[str]
    losses: list[dict[str, float]]
    wait: dict[str, float]
    steps_per_second: float
    resumed_from: int | None = None
    catalog_errors: list[str] = field(default_factory=list)


def _resolve_out_dir(cfg: TrainConfig, out_dir: str | Path | None) -> Path:
    return Path(out_dir or cfg.out_dir or Path("runs") / cfg.name)


def train(config: TrainConfig | Mapping[str, Any] | str | Path, *, store: str | Path | None = None,
          catalog: Any = None, out_dir: str | Path | None = None, resume: bool = False,
          stop_at: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None
          ) -> TrainResult:
    """Train (or, with ``resume``, continue training) an NVP model; see the module docstring.

    ``config``: a :class:`TrainConfig`, a dict, or a JSON file path. ``store``/``catalog``/
    ``out_dir`` override the config's. ``catalog``: a Catalog object, a spec, None (config's,
    else the SQLite file beside the store) or False (no lineage). ``stop_at``: stop after this
    global step as if interrupted (a checkpoint is written), without changing the schedule.
    ``progress`` receives event dicts (``event``: start, log, eval, checkpoint, end).
    """
    if isinstance(config, (str, Path)):
        cfg = TrainConfig.load(config)
    elif isinstance(config, Mapping):
        cfg = TrainConfig.from_dict(config)
    else:
        cfg = config
    loc = str(store or cfg.store or "")
    if not loc:
        raise TrainError("no store given (config 'store' or --store)")
    emit = progress or (lambda e: None)
    out = _resolve_out_dir(cfg, out_dir)
    latest_dir = out / "checkpoints" / "latest"
    run_file = out / "run.json"
    if resume:
        if not _steps(latest_dir):
            raise TrainError(f"nothing to resume in {out}: no checkpoint in {latest_dir}")
    elif _steps(latest_dir) or run_file.exists():
        raise TrainError(f"{out} already holds a training run; resume it (--resume) or choose "
                         "another output directory (--out)")
    out.mkdir(parents=True, exist_ok=True)

    st = AtlasStore.open(loc)
    d = cfg.data
    split_seed = cfg.seed if d.split_seed is None else d.split_seed

    # ---- selection, split, levels
    scale = d.resolution
    if scale is None:  # the full resolution of the selected sequences
        from ..query import StoreSelector

        sel = StoreSelector().select(build_query(st, d, scale=64))
        if not sel:
            raise TrainError("the data selection matches no sequences")
        scale = max(sel[0].levels)
    selected = build_query(st, d, scale=scale).selection()
    keys = sorted(f"{s.domain}/{s.sequence_id}" for s in selected)
    if resume:
        run = json.loads(run_file.read_text())
        now_doc = cfg.to_dict()
        changed = [k for k in ("seed", "data", "model", "loss", "optim")
                   if now_doc[k] != run["config"][k]]
        if changed:
            raise TrainError(f"the config differs from the run's in {', '.join(changed)}; a run "
                             "resumes with the configuration it started with (only the 'train' "
                             "section may change)")
        train_keys, val_keys = run["split"]["train"], run["split"]["val"]
        if sorted(train_keys + val_keys) != keys:
            raise TrainError("the store's selection differs from the run's dataset version "
                             f"({run['dataset_version_id']}); cannot resume on other data")
    else:
        train_keys, val_keys = split_by_sequence(keys, d.val_fraction, split_seed)
    stored_levels, shape = _store_levels(st, keys)
    base = stored_levels[0]
    res = d.resolution or base
    if res not in stored_levels:
        raise TrainError(f"data.resolution {res} is not a stored level ({list(stored_levels)})")
    factor = 1  # the stream delivers the target at the query's scale, res
    levels = tuple(lv for lv in stored_levels if lv <= res)
    model_shape = (shape[0] * res // base, shape[1] * res // base)
    train_q = build_query(st, d, res, train_keys)
    val_q = build_query(st, d, res, val_keys)

    # ---- model, optimiser
    if resume:
        stats = {int(k): tuple(v) for k, v in run["model"]["stats"].items()}
    else:
        stats = _pooled_stats(st, train_keys, levels, d.reader)
    model = NVP(cfg.model, levels, d.n_in, stats, shape=model_shape, seed=cfg.seed)
    tx = make_optimizer(cfg.optim, cfg.train.max_steps)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    n_params = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    model_meta = {"config": cfg.model.to_dict(), "levels": list(levels), "n_in": d.n_in,
                  "shape": list(model_shape), "stats": {str(k): list(v) for k, v in stats.items()},
                  "params": n_params}

    # ---- run record
    query_rec = {"store": loc, "domains": list(d.domains) if d.domains else None,
                 "sequences": list(d.sequences) if d.sequences else None,
                 "resolution": res, "levels": list(levels), "n_in": d.n_in, "n_out": 1,
                 "window": d.n_in + 1, "stride": d.stride,
                 "time_range": list(d.time_range) if d.time_range else None,
                 "entropy": d.entropy, "mean": d.mean, "variance": d.variance,
                 "perturbation": d.perturbation, "run_id": d.run_id}
    query_rec = json.loads(json.dumps(query_rec))
    split_rec = {"method": "by_sequence", "val_fraction": d.val_fraction, "seed": split_seed,
                 "train": train_keys, "val": val_keys}
    if not resume:
        started = utc_now()
        cfg_doc = cfg.with_overrides(store=loc, out_dir=str(out)).to_dict()
        run_hash = hashlib.sha256(json.dumps([cfg_doc, started], sort_keys=True).encode()
                                  ).hexdigest()[:8]
        run = {"run_id": f"{cfg.name}-{started.replace(':', '').replace('+0000', 'Z')}-{run_hash}",
               "started": started, "finished": None, "config": cfg_doc, "query": query_rec,
               "split": split_rec,
               "dataset_version_id": dataset_version_id(query_rec, split_rec, keys),
               "code_version": code_version(), "host": host(),
               "model": model_meta, "checkpoints": []}
        run_file.write_text(json.dumps(run, indent=1))
    run_id = run["run_id"]

    # ---- catalog
    cat, opened = _open_catalog(catalog if catalog is not None else cfg.catalog, loc)
    catalog_errors: list[str] = []

    def cat_safe(fn: Callable[[], Any]) -> None:
        if cat is None or catalog_errors:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the run goes on; lineage can be re-registered
            catalog_errors.append(f"{type(exc).__name__}: {exc}")
            emit({"event": "catalog_error", "error": catalog_errors[-1]})

    cat_safe(lambda: register_lineage(cat, run, st))

    # ---- data streams
    from ..stream import WindowSource, stream

    it = stream(train_q, n_in=d.n_in, n_out=1, batch_size=d.batch_size, seed=cfg.seed,
                shuffle=True, num_epochs=None, prefetch=d.prefetch, workers=d.workers,
                normalise=False, reader=d.reader)
    val_src = WindowSource(val_q, d.n_in, 1, reader=d.reader)

    # ---- resume
    loop = cfg.train
    stopper = EarlyStopping(loop.patience, loop.min_delta)
    start_step = 0
    resumed_from = None
    if resume:
        loaded, sstate = load_checkpoint(latest_dir, optimizer=optimizer, model=model,
                                         with_stream=True)
        start_step = int(loaded.meta["step"])
        resumed_from = start_step
        stopper = EarlyStopping.from_dict(loaded.meta["trainer"]["early_stopping"])
        if sstate is not None:
            it.restore(sstate)
    # parameters and optimiser state replicated on the stream's mesh: every step then sees the
    # same input shardings (else the first update changes them and the step compiles twice)
    from jax.sharding import NamedSharding, PartitionSpec

    nnx.update((model, optimizer), jax.device_put(nnx.state((model, optimizer)),
                                                  NamedSharding(it.mesh, PartitionSpec())))
    log = MetricsLog(out, resumed_from)
    latest_mngr = _manager(latest_dir, loop.keep_checkpoints)
    best_mngr = _manager(out / "checkpoints" / "best", 1)
    ckpt_every = loop.checkpoint_every or loop.eval_every
    val_bs = loop.val_batch_size or d.batch_size
    base_key = jax.random.key(cfg.seed)
    loss_cfg = cfg.loss

    emit({"event": "start", "run_id": run_id, "out_dir": str(out), "resumed_from": resumed_from,
          "train_sequences": len(train_keys), "val_sequences": len(val_keys),
          "train_windows": len(it.source), "val_windows": len(val_src), "levels": list(levels),
          "resolution": res, "params": n_params, "steps_per_epoch": it.steps_per_epoch,
          "dataset_version_id": run["dataset_version_id"]})

    def meta(step: int, kind: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "kind": kind, "step": step, "run_id": run_id,
                "ckpt_id": f"{run_id}/{kind}/{step}", "created": utc_now(), "store": loc,
                "config": run["config"], "query": run["query"], "split": run["split"],
                "dataset_version_id": run["dataset_version_id"], "model": model_meta,
                "metrics": dict(metrics),
                "trainer": {"early_stopping": stopper.to_dict(), "monitor": loop.monitor}}

    best_info: dict[str, Any] | None = None
    latest_info: dict[str, Any] | None = None
    if resume:
        bsteps = _steps(out / "checkpoints" / "best")
        if bsteps:
            b = max(bsteps)
            best_info = {"step": b, "ckpt_id": f"{run_id}/best/{b}",
                         "path": str(out / "checkpoints" / "best" / str(b))}

    def save(kind: str, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        mngr = latest_mngr if kind == "latest" else best_mngr
        m = meta(step, kind, metrics)
        path = _save(mngr, step, model, optimizer if kind == "latest" else None,
                     it.state() if kind == "latest" else None, m)
        info = {"ckpt_id": m["ckpt_id"], "step": step, "path": str(path.resolve()),
                "kind": kind, "metrics": json.loads(json.dumps(dict(metrics), default=float)),
                "created": m["created"]}
        cat_safe(lambda: cat.register_checkpoint(info["ckpt_id"], run_id, step, info["metrics"],
                                                 info["path"], created=info["created"]))
        rec = json.loads(run_file.read_text())
        rec["checkpoints"] = [c for c in rec.get("checkpoints", [])
                              if not (c["kind"] == kind and c["step"] == step)] + [info]
        run_file.write_text(json.dumps(rec, indent=1))
        emit({"event": "checkpoint", **info})
        return info

    losses: list[dict[str, float]] = []
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    stopped = "max_steps"
    t_start = time.perf_counter()
    t_log = t_start
    n_wait0 = len(it.wait_times)
    step = start_step
    last_train: dict[str, float] = {}
    try:
        while step < loop.max_steps:
            batch = next(it)
            inputs = {lv: batch["inputs"][lv] for lv in levels}
            key = jax.random.fold_in(base_key, step)
            terms = train_step(model, optimizer, inputs, batch["target"], key, loss_cfg, factor)
            step += 1
            pending.append((step, terms))
            over_time = (loop.max_minutes is not None
                         and time.perf_counter() - t_start > 60 * loop.max_minutes)
            last = step == loop.max_steps or over_time  # a final evaluation and checkpoint
            do_log = step % loop.log_every == 0 or last
            do_eval = step % loop.eval_every == 0 or last
            do_ckpt = step % ckpt_every == 0 or last
            interrupt = stop_at is not None and step >= stop_at
            if do_log or do_eval or do_ckpt or over_time or interrupt:
                fetched = jax.device_get([t for _, t in pending])
                now = time.perf_counter()
                waits = it.wait_times[n_wait0:]
                for (s, _), h in zip(pending, fetched):
                    rec = {k: float(v) for k, v in h.items()}
                    losses.append({"step": s, **rec})
                    last_train = rec
                mean_terms = {k: float(np.mean([h[k] for h in fetched])) for k in fetched[0]}
                rec = {**mean_terms, "lr": float(make_schedule(cfg.optim, loop.max_steps)(step - 1)),
                       "steps_per_s": len(pending) / max(now - t_log, 1e-9),
                       "wait_s": float(np.mean(waits)) if waits else 0.0,
                       "wait_fraction": float(np.sum(waits) / max(now - t_log, 1e-9)),
                       "epoch": step / it.steps_per_epoch}
                log.write("train", step, rec)
                emit({"event": "log", "step": step, **rec})
                pending = []
                n_wait0 = len(it.wait_times)
                t_log = now
            if do_eval:
                vm = validate_model(model, val_src, loss_cfg, factor, val_bs,
                                    loop.val_max_windows)
                improved = stopper.update(vm[loop.monitor], step)
                vm_rec = {**vm, "monitor": loop.monitor, "best": stopper.best,
                          "bad_evals": stopper.bad_evals}
                log.write("val", step, vm_rec)
                emit({"event": "eval", "step": step, "improved": improved, **vm_rec})
                if improved:
                    best_info = save("best", step, {"val": vm, "train": last_train})
                t_log = time.perf_counter()  # evaluation time is not training throughput
            if stopper.should_stop:
                stopped = "early_stopping"
            elif over_time:
                stopped = "time_limit"
            elif interrupt and step < loop.max_steps:
                stopped = "stop_at"
            if do_ckpt or stopped != "max_steps":
                latest_info = save("latest", step, {"train": last_train})
                t_log = time.perf_counter()
            if stopped != "max_steps":
                break
        wall = time.perf_counter() - t_start
        wait = it.wait_summary()
    finally:
        it.close()
        log.close()
        latest_mngr.close()
        best_mngr.close()
    if stopped != "stop_at":
        rec = json.loads(run_file.read_text())
        rec["finished"] = utc_now()
        rec["stopped"] = stopped
        run_file.write_text(json.dumps(rec, indent=1))
        run = rec
        cat_safe(lambda: cat.register_training_run(
            run_id, run["config"], run["dataset_version_id"], code_version=run["code_version"],
            host=run["host"], started=run["started"], finished=run["finished"]))
    if opened and cat is not None:
        cat.close()
    n_steps = step - start_step
    result = TrainResult(run_id=run_id, out_dir=out, step=step, stopped=stopped,
                         dataset_version_id=run["dataset_version_id"], best=best_info,
                         latest=latest_info, train_sequences=list(train_keys),
                         val_sequences=list(val_keys), losses=losses, wait=wait,
                         steps_per_second=n_steps / wall if wall > 0 else 0.0,
                         resumed_from=resumed_from, catalog_errors=catalog_errors)
    emit({"event": "end", "run_id": run_id, "step": step, "stopped": stopped,
          "best": best_info, "latest": latest_info, "wait": wait,
          "steps_per_second": result.steps_per_second, "catalog_errors": catalog_errors})
    return result


def clear_run(out_dir: str | Path) -> None:
    """Delete a run directory's checkpoints, metrics and run record (for a fresh start)."""
    out = Path(out_dir)
    for name in ("checkpoints", "tb"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "run.json"):
        (out / name).unlink(missing_ok=True)
