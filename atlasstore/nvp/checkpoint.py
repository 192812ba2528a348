"""A run directory: Orbax checkpoints and the run record ``run.json``.

::

    <out_dir>/run.json                 the run record: id, config, query, split, dataset version,
                                       model description, checkpoints, finished/stopped
    <out_dir>/checkpoints/latest/<step>/  model, optimiser, stream state, meta (kept: a few)
    <out_dir>/checkpoints/best/<step>/    model, meta (kept: one)
    <out_dir>/metrics.jsonl, tb/          see :mod:`.metrics`

A checkpoint holds the model state, the optimiser state and the stream's state (``latest``
only) and a JSON ``meta`` item (format, step, config, query, split, model description, metrics,
early-stopping state), so that it restores without the run directory and a resumed run continues
exactly. ``run.json`` is replaced atomically on every update: a crash leaves the old record or
the new one, never a truncated file that ``--resume`` cannot read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flax import nnx

from atlasstore.errors import TrainError
from atlasstore.io.locations import atomic_write
from atlasstore.io.provenance import code_version, host, utc_now
from atlasstore.nvp.config import TrainConfig
from atlasstore.nvp.input_pipeline import DataPlan
from atlasstore.nvp.lineage import dataset_version_id
from atlasstore.nvp.model import NVP, ModelConfig
from atlasstore.nvp.prior import DomainPrior

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointWriter",
    "LoadedCheckpoint",
    "checkpoint_meta",
    "checkpoint_steps",
    "clear_run",
    "load_checkpoint",
    "new_run_record",
    "read_run_record",
    "record_checkpoint",
    "resolve_checkpoint",
    "resolve_out_dir",
    "resolved_config_file",
    "run_file",
    "write_resolved_config",
    "write_run_record",
]

CHECKPOINT_FORMAT = "atlasstore-nvp-checkpoint/2"


# ------------------------------------------------------------------------------------ run.json


def resolve_out_dir(cfg: TrainConfig, out_dir: str | Path | None) -> Path:
    """The run directory: ``out_dir``, else the config's, else ``runs/<name>``."""
    return Path(out_dir or cfg.out_dir or Path("runs") / cfg.name)


def run_file(out_dir: Path) -> Path:
    return out_dir / "run.json"


def new_run_record(cfg: TrainConfig, location: str, out_dir: Path, plan: DataPlan,
                   model_desc: Mapping[str, Any]) -> dict[str, Any]:
    """The run record of a new run: id, config (with the store and run directory it runs with),
    query, split, dataset version, provenance, model description, no checkpoints yet."""
    started = utc_now()
    cfg_doc = cfg.with_overrides(store=location, out_dir=str(out_dir)).to_dict()
    run_hash = hashlib.sha256(json.dumps([cfg_doc, started], sort_keys=True).encode()
                              ).hexdigest()[:8]
    query = plan.query_record(location)
    split = plan.split_record(cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed)
    return {"run_id": f"{cfg.name}-{started.replace(':', '').replace('+0000', 'Z')}-{run_hash}",
            "started": started, "finished": None, "config": cfg_doc, "query": query,
            "split": split, "dataset_version_id": dataset_version_id(query, split, plan.keys),
            "code_version": code_version(), "host": host(), "model": dict(model_desc),
            "checkpoints": []}


def resolved_config_file(out_dir: Path) -> Path:
    return out_dir / "config.resolved.json"


def write_resolved_config(out_dir: Path, config: Mapping[str, Any]) -> None:
    """``config.resolved.json``: the whole configuration a run started with, its defaults
    taken from the data filled in (a valid ``--config`` for another run)."""
    atomic_write(resolved_config_file(out_dir), json.dumps(config, indent=1) + "\n")


def read_run_record(out_dir: Path) -> dict[str, Any]:
    return json.loads(run_file(out_dir).read_text())


def write_run_record(out_dir: Path, record: Mapping[str, Any]) -> None:
    """Replace ``run.json`` atomically (the old record or the new one survive a crash)."""
    atomic_write(run_file(out_dir), json.dumps(record, indent=1))


def record_checkpoint(out_dir: Path, info: Mapping[str, Any]) -> dict[str, Any]:
    """Add (or replace, by kind and step) a checkpoint entry of ``run.json``; the new record."""
    rec = read_run_record(out_dir)
    rec["checkpoints"] = [c for c in rec.get("checkpoints", [])
                          if not (c["kind"] == info["kind"] and c["step"] == info["step"])]
    rec["checkpoints"].append(dict(info))
    write_run_record(out_dir, rec)
    return rec


def clear_run(out_dir: str | Path) -> None:
    """Delete a run directory's checkpoints, metrics and run record (for a fresh start)."""
    out = Path(out_dir)
    for name in ("checkpoints", "tb"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "run.json", "config.resolved.json"):
        (out / name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ saving


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
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


def checkpoint_meta(run: Mapping[str, Any], store: str, kind: str, step: int,
                    metrics: Mapping[str, Any], trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The ``meta`` item of a checkpoint of run record ``run`` trained from ``store``."""
    return {"format": CHECKPOINT_FORMAT, "kind": kind, "step": step, "run_id": run["run_id"],
            "ckpt_id": f"{run['run_id']}/{kind}/{step}", "created": utc_now(),
            "store": store, "config": run["config"], "query": run["query"],
            "split": run["split"], "dataset_version_id": run["dataset_version_id"],
            "model": run["model"], "metrics": dict(metrics), "trainer": dict(trainer)}


class CheckpointWriter:
    """The ``latest`` (``keep`` newest, with optimiser and stream state) and ``best`` (one, model
    only) checkpoint managers of a run directory."""

    def __init__(self, out_dir: Path, keep: int) -> None:
        self.dirs = {"latest": out_dir / "checkpoints" / "latest",
                     "best": out_dir / "checkpoints" / "best"}
        self._mngrs = {"latest": _manager(self.dirs["latest"], keep)}
        try:
            self._mngrs["best"] = _manager(self.dirs["best"], 1)
        except BaseException:
            self._mngrs["latest"].close()
            raise

    def save(self, meta: Mapping[str, Any], model: NVP, optimizer: nnx.Optimizer | None = None,
             stream_state: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write a checkpoint of kind ``meta["kind"]`` at ``meta["step"]``; its record (ckpt_id,
        step, absolute path, kind, metrics, created)."""
        import orbax.checkpoint as ocp

        kind, step = meta["kind"], int(meta["step"])
        items: dict[str, Any] = {"model": ocp.args.StandardSave(nnx.state(model)),
                                 "meta": ocp.args.JsonSave(json.loads(json.dumps(meta)))}
        if optimizer is not None:
            items["opt"] = ocp.args.StandardSave(nnx.state(optimizer))
        if stream_state is not None:
            items["stream"] = ocp.args.JsonSave(dict(stream_state))
        mngr = self._mngrs[kind]
        mngr.save(step, args=ocp.args.Composite(**items), force=True)
        mngr.wait_until_finished()
        path = Path(mngr.directory) / str(step)
        return {"ckpt_id": meta["ckpt_id"], "step": step, "path": str(path.resolve()),
                "kind": kind, "metrics": json.loads(json.dumps(meta["metrics"], default=float)),
                "created": meta["created"]}

    def close(self) -> None:
        for m in self._mngrs.values():
            m.close()


# ------------------------------------------------------------------------------------ loading


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


def checkpoint_steps(d: Path) -> list[int]:
    """The steps with a complete checkpoint in manager directory ``d``."""
    if not d.is_dir():
        return []
    return [int(c.name) for c in d.iterdir() if c.is_dir() and c.name.isdigit()
            and (c / "meta").exists()]


def resolve_checkpoint(path: str | Path) -> tuple[Path, int]:
    """(manager directory, step) for a run directory (its best checkpoint, else its latest), a
    manager directory (``checkpoints/best``: its latest step) or a step directory."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    if (p / "checkpoints").is_dir():
        for kind in ("best", "latest"):
            m = p / "checkpoints" / kind
            if checkpoint_steps(m):
                return m, max(checkpoint_steps(m))
        raise TrainError(f"run directory {p} has no checkpoint yet")
    if p.name.isdigit() and (p / "meta").exists():
        return p.parent, int(p.name)
    if checkpoint_steps(p):
        return p, max(checkpoint_steps(p))
    raise TrainError(f"{p} is not a run directory, checkpoint directory or checkpoint step")


def _model_from_meta(meta: Mapping[str, Any], rngs_seed: int = 0) -> NVP:
    m = meta["model"]
    if "prior" not in m:
        raise TrainError("this checkpoint predates the physics prior (its model record has no "
                         "'prior'); retrain it with this version")
    stats = {int(k): (float(v[0]), float(v[1])) for k, v in m["stats"].items()}
    priors = {d: DomainPrior.from_dict(m["prior"][d]) for d in m["domains"]}
    return NVP(ModelConfig.from_dict(m["config"]), m["levels"], m["n_in"], stats, priors,
               shape=tuple(m["shape"]), seed=rngs_seed,
               non_negative=bool(m.get("non_negative", True)))  # (older runs: energy)


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
        fmt = str(meta.get("format"))
        if fmt != CHECKPOINT_FORMAT:
            older = fmt.startswith(CHECKPOINT_FORMAT.rsplit("/", 1)[0] + "/")
            raise TrainError(f"{mdir / str(step)} is " + (
                f"an NVP checkpoint of another format ({fmt}; this version reads "
                f"{CHECKPOINT_FORMAT}): retrain it" if older
                else f"not an NVP checkpoint (format {fmt!r})"))
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
