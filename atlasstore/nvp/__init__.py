"""NVP: the neural next-step predictor of energy maps, trained from the store.

* :mod:`.model` — :class:`NVP` (Flax NNX encoder-decoder, multi-scale input, non-negative
  residual prediction, variance head, MC dropout), :func:`predict`, :func:`mc_predict`
* :mod:`.loss` — :func:`nvp_loss` (MSE + conservation + entropy hinge + beta-NLL)
* :mod:`.train` — :func:`train`, :class:`TrainConfig`, :func:`split_by_sequence`,
  :func:`load_checkpoint`, lineage helpers
* :mod:`.evaluate` — metrics, baselines, :func:`evaluate_checkpoint`
* :mod:`.cli` — ``atlas train`` / ``atlas evaluate``

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
    "TrainConfig": "train", "TrainResult": "train", "TrainError": "train", "train": "train",
    "split_by_sequence": "train", "load_checkpoint": "train", "register_lineage": "train",
    "generation_lineage": "train",
    "evaluate_checkpoint": "evaluate", "vrmse": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{mod}"), name)
