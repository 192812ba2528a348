"""The training configuration: :class:`TrainConfig` and its sections, validated by JSON Schema.

Every way a configuration is made (a JSON file, a dict, a checkpoint's record, command-line
overrides) goes through ``schemas/train-config.schema.json`` and :meth:`TrainConfig.check`, so a
value the schema refuses (``train.max_steps`` 0, a negative learning rate) never reaches a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from atlasstore.errors import TrainError
from atlasstore.io.schemas import load_json, validate
from atlasstore.nvp.loss import LossConfig
from atlasstore.nvp.model import ModelConfig

__all__ = [
    "DEFAULT_CONFIG",
    "MONITORS",
    "SECTIONS",
    "DataConfig",
    "EvalConfig",
    "LoopConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainError",
]

#: validation metrics that may pick the best checkpoint and stop early (lower is better)
MONITORS = ("energy_fidelity", "vrmse", "conservation", "mse", "nll", "loss")
#: the sections of a config, each a dataclass
SECTIONS = ("data", "model", "loss", "optim", "train", "eval")


#: The configuration of ``atlas train`` without ``--config``: ``configs/nvp-cpu-small.json``'s
#: model, loss, optimiser and loop (a small model, a fixed number of steps: minutes on a CPU),
#: with nothing in ``data`` fixed, so it is taken from the store: the selection's full
#: resolution and every stored level below it, the sequences' primary field, and the batch size
#: cut to the training windows the data holds (:func:`~.input_pipeline.resolve_batch_size`).
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "nvp-cpu-small",
    "seed": 0,
    "data": {"n_in": 1, "stride": 1, "batch_size": 8, "val_fraction": 0.1, "prefetch": 2,
             "workers": 2},
    "model": {"width": 12, "max_width": 48, "depth": 3, "blocks": 1, "dropout": 0.0,
              "groups": 4, "embed": 8, "log_var_init": 0.0,
              "prior_angles": list(range(-90, 91, 15)), "prior_fit_windows": 256},
    "loss": {"lambda_mse": 1.0, "lambda_conservation": 0.1, "lambda_entropy": 0.05,
             "entropy_threshold": 0.0, "lambda_nll": 1.0, "beta": 0.5},
    "optim": {"learning_rate": 0.001, "schedule": "warmup_cosine", "warmup_steps": 20,
              "end_lr_factor": 0.05, "grad_clip": 1.0},
    "train": {"max_steps": 300, "log_every": 10, "eval_every": 50, "keep_checkpoints": 2,
              "patience": 4, "min_delta": 0.0, "monitor": "mse", "eval_at_start": True},
    "eval": {"mc_samples": 16, "rollout_steps": 5, "n_plots": 5, "batch_size": 8,
             "fit_windows": 64},
}


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
    eval_at_start: bool = False  # validate (and possibly keep as best) the untrained model
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
    fit_windows: int = 64                     # training windows per domain for the baselines
    diffusion_sigmas: tuple[float, ...] | None = None
    ar_radius: int = 4                        # linear AR stencil: (2r+1)^2 taps per step
    ar_steps: int | None = None               # steps it uses (default: n_in)


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
    def from_dict(cls, doc: Mapping[str, Any], what: str = "training config") -> TrainConfig:
        """Validate against the schema, then build (with defaults for what is omitted)."""
        doc = validate(json.loads(json.dumps(doc)), "train-config", what=what)
        top = {k: v for k, v in doc.items() if k not in (*SECTIONS, "$schema")}
        try:
            cfg = cls(**top,
                      data=_from_dict(DataConfig, doc.get("data"), "data"),
                      model=ModelConfig.from_dict(doc.get("model")),
                      loss=LossConfig.from_dict(doc.get("loss")),
                      optim=_from_dict(OptimConfig, doc.get("optim"), "optim"),
                      train=_from_dict(LoopConfig, doc.get("train"), "train"),
                      eval=_from_dict(EvalConfig, doc.get("eval"), "eval"))
        except TypeError as exc:
            raise TrainError(f"{what}: {exc}") from None
        cfg.check()
        return cfg

    @classmethod
    def default(cls) -> TrainConfig:
        """:data:`DEFAULT_CONFIG`: what ``atlas train`` runs without ``--config``."""
        return cls.from_dict(DEFAULT_CONFIG, what="the default training config")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a JSON config file validated against ``train-config``."""
        return cls.from_dict(load_json(path, "train-config"), what=f"train-config file {path}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this config; :meth:`from_dict` of it gives an equal config."""
        return json.loads(json.dumps(asdict(self)))

    def check(self) -> None:
        """The rules JSON Schema cannot state."""
        if self.train.monitor not in MONITORS:
            raise TrainError(f"train.monitor must be one of {MONITORS}, got {self.train.monitor!r}")
        if self.optim.schedule not in ("constant", "cosine", "warmup_cosine"):
            raise TrainError(f"unknown optim.schedule {self.optim.schedule!r}")
        if self.data.time_range is not None and self.data.time_range[1] <= self.data.time_range[0]:
            raise TrainError(f"data.time_range must be [start, stop) with start < stop, got "
                             f"{list(self.data.time_range)}")

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with top-level fields (store, catalog, out_dir, seed, name) or whole sections
        changed; ``train_max_steps=...`` style keys change one option of a section.

        The result is validated like a loaded config: an override the schema refuses raises
        :class:`~atlasstore.io.schemas.SchemaError` naming the option.
        """
        doc = self.to_dict()
        for k, v in changes.items():
            sec, sep, opt = k.partition("_")
            if sep and sec in SECTIONS and opt in doc[sec]:
                doc[sec][opt] = v
            elif is_dataclass(v) and not isinstance(v, type):  # a whole section
                doc[k] = json.loads(json.dumps(asdict(v)))
            else:
                doc[k] = v
        shown = ", ".join(f"{k}={v!r}" for k, v in changes.items())
        return TrainConfig.from_dict(doc, what=f"training config with overrides ({shown})")
