"""NVP: the neural next-step predictor of energy maps, trained from the store.

* :mod:`.model` — :class:`NVP` (Flax NNX encoder-decoder, multi-scale input, non-negative
  residual prediction, variance head, MC dropout), :func:`predict`, :func:`mc_predict`
* :mod:`.loss` — :func:`nvp_loss` (MSE + conservation + entropy hinge + beta-NLL)
* :mod:`.config` — :class:`TrainConfig` and its sections (JSON-Schema validated)
* :mod:`.input_pipeline` — the query, :func:`split_by_sequence`, normalisation, iterators
* :mod:`.train` — :func:`train`: the optimiser, the training/evaluation steps and the loop
* :mod:`.checkpoint` — Orbax checkpoints, ``run.json``, :func:`load_checkpoint`
* :mod:`.metrics` — ``metrics.jsonl`` / TensorBoard, early stopping
* :mod:`.lineage` — catalog registration of runs, dataset versions and checkpoints
* :mod:`.scores` — evaluation metrics (VRMSE, conservation, NLL, CRPS, coverage, spread-skill)
* :mod:`.baselines` — persistence and fitted diffusion
* :mod:`.evaluate` — :func:`evaluate_checkpoint` (report.json and figures)
* :mod:`.plots` — every figure
* :mod:`.cli` — ``atlas train`` / ``atlas evaluate``

Imports flow one way: config <- input_pipeline, checkpoint, lineage, metrics <- train; scores,
baselines, plots <- evaluate; evaluate and train do not import each other.

Attributes are imported lazily so that ``import atlasstore.nvp`` (and the CLI's parser) does not
import JAX.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "NVP": "model", "ModelConfig": "model", "Prediction": "model", "MCPrediction": "model",
    "predict": "model", "mc_predict": "model", "combine_mc": "model",
    "LossConfig": "loss", "nvp_loss": "loss",
    "TrainConfig": "config", "TrainError": "config",
    "TrainResult": "train", "train": "train",
    "split_by_sequence": "input_pipeline",
    "load_checkpoint": "checkpoint",
    "register_lineage": "lineage", "generation_lineage": "lineage",
    "evaluate_checkpoint": "evaluate", "vrmse": "scores",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{mod}"), name)
