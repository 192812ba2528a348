"""Training the NVP model: the optimiser, the training and evaluation steps, and the loop.

>>> from atlasstore.nvp.config import TrainConfig
>>> from atlasstore.nvp.train import train
>>> result = train(TrainConfig.load("configs/nvp-cpu-small.json"), store="atlas.zarr")
>>> result.best["ckpt_id"], result.best["path"]

What a run does
---------------
1. Selects sequences with the query of ``config.data`` and splits them **by sequence**
   (:mod:`.input_pipeline`): no time step of a sequence is on both sides.
2. Measures the normalisation on the training split and builds :class:`~.model.NVP` with it.
3. Streams training batches (endless, seeded shuffle, prefetch) and logs how long each step
   waited on them.
4. Optimises :func:`~.loss.nvp_loss` with Optax Adam (lr 1e-4 default; schedule constant /
   cosine / warmup_cosine; optional clipping and weight decay).
5. Every ``eval_every`` steps (and at step 0 with ``eval_at_start``) evaluates the validation
   sequences (dropout off) and tracks the monitored metric, by default **energy fidelity** =
   VRMSE + relative conservation error of the one-step prediction (lower is better).
   Conservation alone is not a usable criterion: an untrained model predicts persistence, which
   conserves energy exactly, so early stopping on it would stop at step 0. The best checkpoint
   is kept apart (``checkpoints/best``) from the latest ones (``checkpoints/latest``); training
   stops after ``patience`` evaluations without an improvement larger than ``min_delta``
   (:class:`~.metrics.EarlyStopping`).
6. Checkpoints (:mod:`.checkpoint`) hold everything a resumed run (``resume=True``) needs to
   continue with exactly the losses the uninterrupted run would have had.
7. Metrics go to ``metrics.jsonl`` and TensorBoard (:mod:`.metrics`); lineage to the catalog
   (:mod:`.lineage`).

Nothing here prints: progress goes to the ``progress`` callback (the CLI prints it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from atlasstore.catalog.protocol import CatalogArg
from atlasstore.errors import TrainError
from atlasstore.io.cache_settings import CacheSettings
from atlasstore.io.provenance import utc_now
from atlasstore.nvp.baselines import linear_ar_prior
from atlasstore.nvp.checkpoint import (
    CheckpointWriter,
    LoadedCheckpoint,
    checkpoint_meta,
    checkpoint_steps,
    clear_run,
    load_checkpoint,
    new_run_record,
    read_run_record,
    record_checkpoint,
    resolve_out_dir,
    run_file,
    write_resolved_config,
    write_run_record,
)
from atlasstore.nvp.config import OptimConfig, TrainConfig
from atlasstore.nvp.input_pipeline import (
    DataPlan,
    plan_data,
    pooled_stats,
    resolve_batch_size,
    select_sequences,
    split_by_sequence,
    train_iterator,
    training_pairs,
    val_source,
)
from atlasstore.nvp.lineage import LineageRecorder
from atlasstore.nvp.metrics import EarlyStopping, MetricsLog
from atlasstore.nvp.model import NVP
from atlasstore.nvp.prior import DomainPrior, fit_prior
from atlasstore.nvp.train_steps import target_mask, train_step, validate_model
from atlasstore.store.atlas_store import AtlasStore

__all__ = [
    "TrainResult",
    "fit_priors",
    "make_optimizer",
    "make_schedule",
    "train",
]

Emit = Callable[[dict[str, Any]], None]


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


# ------------------------------------------------------------------------------------ set-up


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


def _as_config(config: TrainConfig | Mapping[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, (str, Path)):
        return TrainConfig.load(config)
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(config)
    return config


def _check_out_dir(out: Path, resume: bool) -> None:
    """Refuse to start over a run that can be resumed; clear what a start that never reached a
    checkpoint left behind (its run record, metrics, a best checkpoint of step 0), so the same
    command can simply be run again."""
    latest = checkpoint_steps(out / "checkpoints" / "latest")
    if resume and not latest:
        raise TrainError(f"nothing to resume in {out}: no checkpoint in "
                         f"{out / 'checkpoints' / 'latest'}")
    if not resume and latest:
        raise TrainError(f"{out} already holds a training run (checkpoint at step "
                         f"{max(latest)}); resume it (--resume) or choose another output "
                         "directory (--out)")
    if not resume and run_file(out).exists():
        clear_run(out)


def _plan(st: AtlasStore, cfg: TrainConfig, prior: Mapping[str, Any] | None
          ) -> tuple[TrainConfig, DataPlan]:
    """The data of a new run (a fresh split), or of a resumed one (its split, on the same data
    and configuration); the config with its batch size cut to the training windows."""
    keys = select_sequences(st, cfg.data)
    if prior is None:
        seed = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
        train_keys, val_keys = split_by_sequence(keys, cfg.data.val_fraction, seed)
    else:
        train_keys, val_keys = prior["split"]["train"], prior["split"]["val"]
    plan = plan_data(st, cfg.data, train_keys, val_keys)
    changes: dict[str, Any] = {}
    batch = resolve_batch_size(cfg.data, plan.train_query.count())
    if batch != cfg.data.batch_size:
        changes["data_batch_size"] = batch
    if cfg.data.resolution is None:
        changes["data_resolution"] = plan.resolution  # written out: the level it trains at
    if changes:
        cfg = cfg.with_overrides(**changes)
        plan = dataclasses.replace(plan, data=cfg.data)
    if prior is None:
        return cfg, plan
    now = cfg.to_dict()
    changed = [k for k in ("seed", "data", "model", "loss", "optim")
               if now[k] != prior["config"][k]]
    if changed:
        raise TrainError(f"the config differs from the run's in {', '.join(changed)}; a run "
                         "resumes with the configuration it started with (only the 'train' "
                         "section may change)")
    if sorted(train_keys + val_keys) != keys:
        raise TrainError("the store's selection differs from the run's dataset version "
                         f"({prior['dataset_version_id']}); cannot resume on other data")
    return cfg, plan


def fit_priors(st: AtlasStore, cfg: TrainConfig, plan: DataPlan) -> dict[str, DomainPrior]:
    """The prior of every domain of the training split, fitted on up to
    ``model.prior_fit_windows`` of its training windows: the physics prior
    (:func:`~.prior.fit_prior`), and with ``model.prior = "linear_ar"`` the evaluation's linear
    AR stencil on top (:func:`linear_ar_prior`)."""
    pairs = training_pairs(st, plan, cfg.model.prior_fit_windows,
                           history=cfg.model.prior == "linear_ar")
    if cfg.model.prior == "linear_ar":
        return {d: linear_ar_prior(h, tgt, cfg.model.prior_angles, cfg.eval.ar_radius,
                                   cfg.eval.ar_steps) for d, (h, tgt) in pairs.items()}
    return {d: fit_prior(prev, tgt, cfg.model.prior_angles) for d, (prev, tgt) in pairs.items()}



def _new_model(cfg: TrainConfig, plan: DataPlan, stats: Mapping[int, tuple[float, float]],
               priors: Mapping[str, DomainPrior]) -> tuple[NVP, nnx.Optimizer, dict[str, Any]]:
    """The model, its optimiser and its description (the ``model`` item of run.json)."""
    model = NVP(cfg.model, plan.levels, cfg.data.n_in, dict(stats), dict(priors),
                shape=plan.model_shape, seed=cfg.seed, non_negative=plan.kind == "extensive")
    optimizer = nnx.Optimizer(model, make_optimizer(cfg.optim, cfg.train.max_steps),
                              wrt=nnx.Param)
    n_params = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    desc = {"config": cfg.model.to_dict(), "levels": list(plan.levels), "n_in": cfg.data.n_in,
            "shape": list(plan.model_shape), "non_negative": plan.kind == "extensive",
            "stats": {str(k): list(v) for k, v in stats.items()},
            "domains": list(model.domains),
            "prior": {d: p.to_dict() for d, p in priors.items()}, "params": n_params}
    return model, optimizer, desc


# ------------------------------------------------------------------------------------ the loop


class _Loop:
    """One training run in progress: its state, and the parts of an iteration as methods."""

    def __init__(self, cfg: TrainConfig, loc: str, out: Path, run: dict[str, Any], plan: DataPlan,
                 model: NVP, optimizer: nnx.Optimizer, resources: contextlib.ExitStack,
                 lineage: LineageRecorder, emit: Emit, resume: bool) -> None:
        self.cfg, self.loc, self.out, self.run, self.plan = cfg, loc, out, run, plan
        self.model, self.optimizer, self.lineage, self.emit = model, optimizer, lineage, emit
        self.it = train_iterator(plan, cfg.seed)
        resources.callback(self.it.close)
        from jax.sharding import NamedSharding, PartitionSpec

        self.batch_sharding = NamedSharding(self.it.mesh, PartitionSpec("data"))
        self.val_src = val_source(plan)
        self.stopper = EarlyStopping(cfg.train.patience, cfg.train.min_delta)
        self.step = 0
        self.resumed_from: int | None = None
        self.best: dict[str, Any] | None = None
        self.latest: dict[str, Any] | None = None
        if resume:
            self._restore()
        self._replicate()
        self.log = MetricsLog(out, self.resumed_from)
        resources.callback(self.log.close)
        self.writer = CheckpointWriter(out, cfg.train.keep_checkpoints)
        resources.callback(self.writer.close)
        self.schedule = make_schedule(cfg.optim, cfg.train.max_steps)
        self.key = jax.random.key(cfg.seed)
        self.losses: list[dict[str, float]] = []
        self.last_train: dict[str, float] = {}
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.t_start = self.t_log = time.perf_counter()
        self.n_wait0 = len(self.it.wait_times)

    def _restore(self) -> None:
        """Model, optimiser, stream position and early-stopping state of the latest checkpoint."""
        loaded, sstate = cast(tuple[LoadedCheckpoint, Any], load_checkpoint(
            self.out / "checkpoints" / "latest", optimizer=self.optimizer, model=self.model,
            with_stream=True))
        self.step = self.resumed_from = int(loaded.meta["step"])
        self.stopper = EarlyStopping.from_dict(loaded.meta["trainer"]["early_stopping"])
        if sstate is not None:
            self.it.restore(sstate)
        best = checkpoint_steps(self.out / "checkpoints" / "best")
        if best:
            b = max(best)
            self.best = {"step": b, "ckpt_id": f"{self.run['run_id']}/best/{b}",
                         "path": str(self.out / "checkpoints" / "best" / str(b))}

    def _replicate(self) -> None:
        """Parameters and optimiser state replicated on the stream's mesh: every step then sees
        the same input shardings (else the first update changes them and the step compiles
        twice)."""
        from jax.sharding import NamedSharding, PartitionSpec

        state = nnx.state((self.model, self.optimizer))
        nnx.update((self.model, self.optimizer),
                   jax.device_put(state, NamedSharding(self.it.mesh, PartitionSpec())))

    def start_event(self) -> dict[str, Any]:
        p = self.plan
        return {"event": "start", "run_id": self.run["run_id"], "out_dir": str(self.out),
                "resumed_from": self.resumed_from, "train_sequences": len(p.train_keys),
                "val_sequences": len(p.val_keys), "train_windows": len(self.it.source),
                "val_windows": len(self.val_src), "levels": list(p.levels),
                "resolution": p.resolution, "params": self.run["model"]["params"],
                "field": p.field, "batch_size": p.data.batch_size,
                "steps_per_epoch": self.it.steps_per_epoch,
                "dataset_version_id": self.run["dataset_version_id"]}

    def interrupted_event(self) -> dict[str, Any]:
        """Where a run stopped by Ctrl-C is: its last completed step and the checkpoint a resume
        continues from (None before the first)."""
        steps = checkpoint_steps(self.out / "checkpoints" / "latest")
        latest = str(self.out / "checkpoints" / "latest" / str(max(steps))) if steps else None
        return {"event": "interrupted", "run_id": self.run["run_id"], "out_dir": str(self.out),
                "step": self.step, "latest_step": max(steps) if steps else None,
                "latest": latest}

    def train_one_step(self) -> None:
        batch = next(self.it)
        inputs = {lv: batch["inputs"][lv] for lv in self.plan.levels}
        key = jax.random.fold_in(self.key, self.step)
        domain = jax.device_put(self.model.domain_index(batch["ids"]), self.batch_sharding)
        terms = train_step(self.model, self.optimizer, inputs, batch["target"], domain, key,
                           self.cfg.loss, self.plan.factor, target_mask(batch, self.plan.factor))
        self.step += 1
        self.pending.append((self.step, terms))

    def log_train(self) -> None:
        """Fetch the pending steps' loss terms; log their mean, the rate and the input wait."""
        fetched = jax.device_get([t for _, t in self.pending])
        now = time.perf_counter()
        waits = self.it.wait_times[self.n_wait0:]
        for (s, _), h in zip(self.pending, fetched, strict=True):
            self.last_train = {k: float(v) for k, v in h.items()}
            self.losses.append({"step": s, **self.last_train})
        rec = {k: float(np.mean([h[k] for h in fetched])) for k in fetched[0]}
        rec.update(lr=float(self.schedule(self.step - 1)),
                   steps_per_s=len(self.pending) / max(now - self.t_log, 1e-9),
                   wait_s=float(np.mean(waits)) if waits else 0.0,
                   wait_fraction=float(np.sum(waits) / max(now - self.t_log, 1e-9)),
                   epoch=self.step / self.it.steps_per_epoch)
        self.log.write("train", self.step, rec)
        self.emit({"event": "log", "step": self.step, **rec})
        self.pending = []
        self.n_wait0 = len(self.it.wait_times)
        self.t_log = now

    def validate(self) -> None:
        """Evaluate on the validation windows; keep a best checkpoint when the monitor improves."""
        loop = self.cfg.train
        vm, var_scale = validate_model(self.model, self.val_src, self.cfg.loss, self.plan.factor,
                                       loop.val_batch_size or self.cfg.data.batch_size,
                                       loop.val_max_windows)
        # the variance calibration of this model (used at prediction time, not in training)
        self.model.var_scale[...] = jax.device_put(jnp.asarray(var_scale, jnp.float32),
                                                   self.model.var_scale[...].sharding)
        improved = self.stopper.update(vm[loop.monitor], self.step)
        rec = {**vm, "monitor": loop.monitor, "best": self.stopper.best,
               "bad_evals": self.stopper.bad_evals}
        self.log.write("val", self.step, rec)
        self.emit({"event": "eval", "step": self.step, "improved": improved, **rec})
        if improved:
            self.best = self.save("best", {"val": vm, "train": self.last_train})
        self.t_log = time.perf_counter()  # evaluation time is not training throughput

    def save(self, kind: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint of ``kind``, registered in the catalog and in run.json."""
        trainer = {"early_stopping": self.stopper.to_dict(), "monitor": self.cfg.train.monitor}
        meta = checkpoint_meta(self.run, self.loc, kind, self.step, metrics, trainer)
        latest = kind == "latest"
        info = self.writer.save(meta, self.model, self.optimizer if latest else None,
                                self.it.state() if latest else None)
        self.lineage.register_checkpoint(self.run["run_id"], info)
        record_checkpoint(self.out, info)
        self.emit({"event": "checkpoint", **info})
        return info

    def run_until_stopped(self, stop_at: int | None) -> str:
        """Iterate to ``max_steps`` or an earlier stop; the reason it stopped."""
        loop = self.cfg.train
        ckpt_every = loop.checkpoint_every or loop.eval_every
        if loop.eval_at_start and self.step == 0:
            self.validate()  # the untrained model (the prior) is a candidate for the best
        while self.step < loop.max_steps:
            self.train_one_step()
            step = self.step
            over_time = (loop.max_minutes is not None
                         and time.perf_counter() - self.t_start > 60 * loop.max_minutes)
            last = step == loop.max_steps or over_time  # a final evaluation and checkpoint
            do_eval = step % loop.eval_every == 0 or last
            do_ckpt = step % ckpt_every == 0 or last
            interrupt = stop_at is not None and step >= stop_at
            if step % loop.log_every == 0 or last or do_eval or do_ckpt or interrupt:
                self.log_train()
            if do_eval:
                self.validate()
            stopped = ("early_stopping" if self.stopper.should_stop else "time_limit" if over_time
                       else "stop_at" if interrupt and step < loop.max_steps else None)
            if do_ckpt or stopped:
                self.latest = self.save("latest", {"train": self.last_train})
                self.t_log = time.perf_counter()
            if stopped:
                return stopped
        return "max_steps"


# ------------------------------------------------------------------------------------ the run


def train(config: TrainConfig | Mapping[str, Any] | str | Path, *, store: str | Path | None = None,
          catalog: CatalogArg = None, out_dir: str | Path | None = None, resume: bool = False,
          stop_at: int | None = None, progress: Emit | None = None,
          cache: CacheSettings | None = None, field: str | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue training) an NVP model; see the module docstring.

    ``config``: a :class:`TrainConfig`, a dict, or a JSON file path. ``store``/``catalog``/
    ``out_dir`` override the config's. ``catalog``: a Catalog object, a spec, None (config's,
    else the SQLite file beside the store) or False (no lineage). ``stop_at``: stop after this
    global step as if interrupted (a checkpoint is written), without changing the schedule.
    ``progress`` receives event dicts (``event``: start, log, eval, checkpoint, end).
    ``cache``: the disk cache of a remote store's reads (default: the environment's).
    ``field``: the field to train on, which must be the selected sequences' primary field (the
    default). What the config leaves to the data is resolved from the store: the level (the
    selection's full resolution), the levels below it, and a batch size no larger than the
    training windows; the resolved config is ``config.resolved.json`` of the run directory.
    Ctrl-C emits an ``interrupted`` event (step reached, last checkpoint) and re-raises.
    Whatever happens, the stream, the checkpoint managers, the metrics files and a catalog
    opened here are closed on return.
    """
    cfg = _as_config(config)
    loc = str(store or cfg.store or "")
    if not loc:
        raise TrainError("no store given (config 'store' or --store)")
    emit: Emit = progress or (lambda e: None)
    out = resolve_out_dir(cfg, out_dir)
    _check_out_dir(out, resume)
    st = AtlasStore.open(loc, cache=cache)
    prior = read_run_record(out) if resume else None
    cfg, plan = _plan(st, cfg, prior)
    if field is not None and field != plan.field:
        raise TrainError(f"the model trains on the sequences' primary field, {plan.field!r}, "
                         f"not {field!r}")
    if prior is not None:
        stats = {int(k): (float(v[0]), float(v[1])) for k, v in prior["model"]["stats"].items()}
        priors = {d: DomainPrior.from_dict(v) for d, v in prior["model"]["prior"].items()}
    else:
        stats = pooled_stats(st, plan.train_keys, plan.levels, cfg.data.reader, plan.field)
        priors = fit_priors(st, cfg, plan)
    model, optimizer, model_desc = _new_model(cfg, plan, stats, priors)
    run = prior
    if run is None:
        run = new_run_record(cfg, loc, out, plan, model_desc)
        out.mkdir(parents=True, exist_ok=True)
        write_run_record(out, run)
        write_resolved_config(out, run["config"])
    spec = catalog if catalog is not None else cfg.catalog
    with LineageRecorder(spec, loc, emit) as lineage, contextlib.ExitStack() as resources:
        lineage.register_run(run, st)
        loop = _Loop(cfg, loc, out, run, plan, model, optimizer, resources, lineage, emit, resume)
        emit(loop.start_event())
        try:
            stopped = loop.run_until_stopped(stop_at)
        except KeyboardInterrupt:
            emit(loop.interrupted_event())
            raise
        wall = time.perf_counter() - loop.t_start
        wait = loop.it.wait_summary()
        resources.close()  # the stream, metrics files and checkpoint managers
        if stopped != "stop_at":
            run = {**read_run_record(out), "finished": utc_now(), "stopped": stopped}
            write_run_record(out, run)
            lineage.finish_run(run)
    n_steps = loop.step - (loop.resumed_from or 0)
    result = TrainResult(run_id=run["run_id"], out_dir=out, step=loop.step, stopped=stopped,
                         dataset_version_id=run["dataset_version_id"], best=loop.best,
                         latest=loop.latest, train_sequences=list(plan.train_keys),
                         val_sequences=list(plan.val_keys), losses=loop.losses, wait=wait,
                         steps_per_second=n_steps / wall if wall > 0 else 0.0,
                         resumed_from=loop.resumed_from, catalog_errors=lineage.errors)
    emit({"event": "end", "run_id": run["run_id"], "step": loop.step, "stopped": stopped,
          "best": loop.best, "latest": loop.latest, "wait": wait,
          "steps_per_second": result.steps_per_second, "catalog_errors": lineage.errors})
    return result
