"""NVP: the neural next-step predictor of energy maps, trained from the store.

* :mod:`.prior` — the per-domain physics prior P_d (noise floor, rotation bank, heat kernel)
  and its least-squares fit (:func:`fit_prior`)
* :mod:`.model` — :class:`NVP` (P_d plus a FiLM-conditioned U-Net correction, variance head,
  calibration, MC dropout), :func:`predict`, :func:`mc_predict`
* :mod:`.loss` — :func:`nvp_loss` (MSE + conservation + entropy hinge + beta-NLL)
* :mod:`.config` — :class:`TrainConfig` and its sections (JSON-Schema validated)
* :mod:`.input_pipeline` — the query, :func:`split_by_sequence` (per domain), normalisation,
  training pairs, iterators
* :mod:`.train_steps` — the compiled training/evaluation steps and validation
* :mod:`.calibration` — per-domain variance calibration on the validation split
* :mod:`.train` — :func:`train`: the prior fit, the optimiser and the loop
* :mod:`.checkpoint` — Orbax checkpoints, ``run.json``, :func:`load_checkpoint`
* :mod:`.metrics` — ``metrics.jsonl`` / TensorBoard, early stopping
* :mod:`.lineage` — catalog registration of runs, dataset versions and checkpoints
* :mod:`.scores` — evaluation metrics (VRMSE, conservation, NLL, CRPS, coverage, spread-skill)
* :mod:`.baselines` — persistence, diffusion and a linear AR stencil, fitted per domain
* :mod:`.goals` — the goals per domain, the headline and the report tables
* :mod:`.evaluate` — :func:`evaluate_checkpoint` (held-out check, report.json and figures)
* :mod:`.plots` — every figure

Imports flow one way: prior <- model <- config <- input_pipeline, checkpoint, lineage, metrics
<- train_steps <- train; scores, baselines, goals, plots <- evaluate; evaluate and train do not
import each other.

Attributes are imported lazily so that ``import atlasstore.nvp`` (and the CLI's parser) does not
import JAX. The commands ``atlas train`` / ``atlas evaluate`` are :mod:`atlasstore.cli.train`.
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
    "DomainPrior": "prior", "fit_prior": "prior", "fit_baselines": "baselines",
    "evaluate_goals": "goals",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{mod}"), name)
