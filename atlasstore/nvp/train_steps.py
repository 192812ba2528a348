"""The compiled training and evaluation steps, and validation over a window source.

The loss (:func:`~.loss.nvp_loss`) is computed on maps divided by ``rho_d``, the prior's RMS
error of the sample's domain on the training split: MSE and NLL are then per-domain normalised
(1 for the untrained model, whose prediction is the prior), so the five domains, whose errors
differ by a factor of fifty, weigh alike. Conservation and entropy are scale invariant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from atlasstore.errors import TrainError
from atlasstore.nvp.calibration import domain_factors
from atlasstore.nvp.input_pipeline import val_batches
from atlasstore.nvp.loss import LossConfig, beta_nll, conservation_penalty, entropy_hinge, mse, nvp_loss
from atlasstore.nvp.model import NVP
from atlasstore.nvp.scores import interval_coverage, vrmse
from atlasstore.physics.fields import block_sum

__all__ = ["eval_step", "target_mask", "train_step", "validate_model"]


def _scaled(model: NVP, domain: jax.Array) -> jax.Array:
    return model.rho[...][domain][:, None, None]


@nnx.jit(static_argnames=("loss_cfg", "factor"))
def train_step(model: NVP, optimizer: nnx.Optimizer, inputs: Mapping[int, jax.Array],
               target: jax.Array, domain: jax.Array, key: jax.Array, loss_cfg: LossConfig,
               factor: int = 1, mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """One optimisation step on a batch (dropout on); returns the loss terms and grad norm.

    ``target`` is the stream's (B, 1, y, x) at the stored base level, block-summed by ``factor``
    to the model's level; ``domain`` (B,) the samples' domain indices; ``mask`` (B, y, x) the
    target's valid cells (1) where the data has missing ones (the loss is over valid cells).
    """
    tgt = block_sum(target[:, 0], factor)
    prev = inputs[model.base][:, -1]
    rho = _scaled(model, domain)

    def loss_fn(m: NVP) -> tuple[jax.Array, dict[str, jax.Array]]:
        p = m(inputs, domain, deterministic=False, key=key, calibrated=False)
        return nvp_loss(p.mean / rho, p.log_var - 2 * jnp.log(rho), tgt / rho, prev / rho,
                        loss_cfg, mask)

    (_, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return {**terms, "grad_norm": optax.tree.norm(grads)}


@nnx.jit(static_argnames=("loss_cfg", "factor"))
def eval_step(model: NVP, inputs: Mapping[int, jax.Array], target: jax.Array,
              domain: jax.Array, loss_cfg: LossConfig, factor: int = 1,
              mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Per-sample validation metrics of the deterministic, uncalibrated prediction, (B,) each,
    and the standardised errors ``abs_z`` (B, y, x) for the calibration; with ``mask`` (B, y, x)
    over the target's valid cells only (``abs_z`` NaN at missing ones)."""
    tgt = block_sum(target[:, 0], factor)
    prev = inputs[model.base][:, -1]
    p = model(inputs, domain, deterministic=True, calibrated=False)
    rho = _scaled(model, domain)
    pm, lv, t, e0 = p.mean / rho, p.log_var - 2 * jnp.log(rho), tgt / rho, prev / rho
    out = {
        "mse": mse(pm, t, mask),
        "conservation": conservation_penalty(pm, t, mask),
        "entropy": entropy_hinge(pm, e0, loss_cfg.entropy_threshold, mask),
        "nll": beta_nll(pm, lv, t, 0.0, mask),
        "vrmse": vrmse(p.mean, tgt, mask=mask),
        "prior_vrmse": vrmse(model.prior(inputs[model.base], domain), tgt, mask=mask),
        "persistence_vrmse": vrmse(prev, tgt, mask=mask),
        "abs_z": jnp.abs(tgt - p.mean) * jnp.exp(-0.5 * p.log_var),
    }
    if mask is not None:
        out["abs_z"] = jnp.where(mask > 0, out["abs_z"], jnp.nan)
    out["loss"] = (loss_cfg.lambda_mse * out["mse"] + loss_cfg.lambda_conservation
                   * out["conservation"] + loss_cfg.lambda_entropy * out["entropy"]
                   + loss_cfg.lambda_nll * beta_nll(pm, lv, t, loss_cfg.beta, mask))
    out["energy_fidelity"] = out["vrmse"] + out["conservation"]
    return out


def target_mask(batch: Mapping[str, Any], factor: int = 1) -> Any:
    """The valid cells (float32 1/0, (B, y, x)) of a batch's first target step, from the
    stream's ``mask``; None when the data has no missing cells."""
    if "mask" not in batch:
        return None
    if factor != 1:
        raise TrainError("missing cells need the target at the model's level (factor 1)")
    n_in = batch["inputs"][max(batch["inputs"])].shape[1]
    m = batch["mask"][:, n_in]
    return m.astype(jnp.float32) if isinstance(m, jax.Array) else np.asarray(m, np.float32)


def validate_model(model: NVP, source: Any, loss_cfg: LossConfig, factor: int,
                   batch_size: int, max_windows: int | None = None
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """Mean validation metrics over the windows of a :class:`~atlasstore.training.stream.WindowSource`
    (overall and per domain, with the 90 % coverage before and after calibration), and the
    per-domain variance factors c_d^2 that calibrate the model on these windows.

    The last chunk is padded to ``batch_size`` (and the padding dropped) so that one compiled
    evaluation step serves every chunk.
    """
    acc: dict[str, list[np.ndarray]] = {}
    abs_z: dict[int, list[np.ndarray]] = {}
    doms: list[np.ndarray] = []
    chunks = val_batches(len(source), batch_size, max_windows)
    for chunk in chunks:
        n = len(chunk)
        b = source.read_batch(list(chunk) + [chunk[-1]] * (batch_size - n))
        inputs = {lv: jnp.asarray(b["inputs"][lv]) for lv in model.levels}
        dom = model.domain_index(b["ids"])
        mask = target_mask(b, factor)
        out = jax.device_get(eval_step(model, inputs, jnp.asarray(b["target"]),
                                       jnp.asarray(dom), loss_cfg, factor,
                                       None if mask is None else jnp.asarray(mask)))
        for i in range(n):
            abs_z.setdefault(int(dom[i]), []).append(np.asarray(out["abs_z"][i]))
        doms.append(dom[:n])
        for k, v in out.items():
            if k != "abs_z":
                acc.setdefault(k, []).append(np.asarray(v)[:n])
    cat = {k: np.concatenate(v) for k, v in acc.items()}
    dom_all = np.concatenate(doms)
    c = domain_factors({d: np.stack(v) for d, v in abs_z.items()}, len(model.domains))
    res: dict[str, Any] = {k: float(v.mean()) for k, v in cat.items()}
    res["windows"] = float(len(dom_all))
    per: dict[str, Any] = {}
    for d, zs in sorted(abs_z.items()):
        z = np.stack(zs)
        m = dom_all == d
        per[model.domains[d]] = {
            **{k: float(cat[k][m].mean()) for k in ("mse", "vrmse", "prior_vrmse",
                                                    "persistence_vrmse")},
            "coverage_90_raw": interval_coverage(0.0, 1.0, z, 0.9),
            "coverage_90": interval_coverage(0.0, float(c[d]), z, 0.9),
            "calibration": float(c[d]), "windows": int(m.sum())}
    res["per_domain"] = per
    return res, np.square(c)
