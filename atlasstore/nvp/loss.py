"""The NVP training loss: MSE + conservation + entropy hinge + (beta-)Gaussian NLL.

::

    L = w_mse * MSE(E_pred, E_true)
      + w_cons * |sum E_pred - sum E_true| / sum E_true                  (0.1 by default)
      + w_ent  * max(0, S(E_t) - S(E_pred) - threshold)                  (0.05 by default)
      + w_nll  * beta-NLL(E_true | E_pred, exp(log_var))

with S the Shannon entropy H = -sum p log p, p = E / sum E, over the map (nats; zero-safe as in
:func:`atlasstore.physics.fields.entropy`). The first three terms are the predecessor's formula; the
fourth trains the per-pixel variance head. Every term is a per-sample quantity averaged over the
batch; :func:`nvp_loss` returns the total and each term separately (for logging).

Beta-NLL (Seitzer et al., "On the Pitfalls of Heteroscedastic Uncertainty Estimation with
Probabilistic Neural Networks", ICLR 2022): the Gaussian NLL of each pixel,
``0.5 * (log(2 pi) + log_var + (y - mu)^2 / var)``, weighted by ``stop_gradient(var ** beta)``.
``beta = 0`` is the plain Gaussian NLL; ``beta = 1`` gives the mean the same gradient as MSE;
``beta = 0.5`` (default) is the paper's recommended compromise. The weight changes gradients
only, never the optimum of the variance, which stays the squared error.

Units. Conservation and entropy are scale invariant, so the caller may pass maps in any unit that
keeps zero at zero; the trainer passes ``E / s`` with ``s`` the training-set standard deviation of
the target level, which makes MSE and NLL the usual normalised-unit quantities while energy stays
non-negative. Arrays are ``(B, y, x)`` (or ``(B, ..., y, x)``; reductions run over the last two
axes for the map quantities).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "LOSS_TERMS",
    "LossConfig",
    "beta_nll",
    "conservation_penalty",
    "entropy",
    "entropy_hinge",
    "gaussian_nll_log_var",
    "mse",
    "nvp_loss",
]

#: names of the logged loss terms (unweighted values) plus the weighted total
LOSS_TERMS = ("loss", "mse", "conservation", "entropy", "nll")

_LOG_2PI = math.log(2.0 * math.pi)
_TINY = 1e-30


@dataclass(frozen=True)
class LossConfig:
    """Weights and parameters of :func:`nvp_loss` (hashable: a static jit argument)."""

    lambda_mse: float = 1.0
    lambda_conservation: float = 0.1
    lambda_entropy: float = 0.05
    entropy_threshold: float = 0.0
    lambda_nll: float = 1.0
    beta: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"loss {f.name} must be a finite number, got {v!r}")
            if f.name != "entropy_threshold" and v < 0:
                raise ValueError(f"loss {f.name} must be >= 0, got {v}")
            object.__setattr__(self, f.name, float(v))
        if self.beta > 1:
            raise ValueError(f"loss beta must be in [0, 1], got {self.beta}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LossConfig:
        return cls(**(d or {}))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def entropy(energy: jax.Array) -> jax.Array:
    """Shannon entropy (nats) over the last two axes with p = E / sum E; zero-safe.

    Pixels with E = 0 contribute 0 (and a zero gradient, not NaN); an all-zero map has S = 0.
    Same definition as :func:`atlasstore.physics.fields.entropy`, in JAX and differentiable.
    """
    e = jnp.asarray(energy)
    total = jnp.sum(e, axis=(-2, -1), keepdims=True)
    safe_total = jnp.where(total > 0, total, 1.0)
    p = e / safe_total
    pos = p > 0
    terms = jnp.where(pos, p * jnp.log(jnp.where(pos, p, 1.0)), 0.0)
    return -jnp.sum(terms, axis=(-2, -1))


def _per_sample_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over everything but the batch axis; with ``mask`` (1 valid, 0 missing; shaped like
    ``x``), over the valid cells only."""
    if mask is None:
        return jnp.mean(x.reshape(x.shape[0], -1), axis=1)
    m = mask.reshape(x.shape[0], -1)
    return jnp.sum(x.reshape(x.shape[0], -1) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-sample mean squared error, (B,) (over the valid cells of ``mask``, when given)."""
    return _per_sample_mean(jnp.square(pred - target), mask)


def conservation_penalty(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None
                         ) -> jax.Array:
    """Per-sample loss term |sum pred - sum target| / sum target over the last two axes, (B,).

    A zero-energy target divides by 1 instead (the error is then the absolute sum). Extra axes
    between the batch and the map are averaged. (The evaluation metric of the same quantity, on
    NumPy or JAX and without the averaging, is :func:`atlasstore.nvp.scores.conservation_error`.)
    With ``mask``, the sums run over the valid cells only.
    """
    if mask is not None:
        pred, target = pred * mask, target * mask
    sp = jnp.sum(pred, axis=(-2, -1))
    st = jnp.sum(target, axis=(-2, -1))
    err = jnp.abs(sp - st) / jnp.where(st > 0, st, 1.0)
    return err.reshape(err.shape[0], -1).mean(axis=1)


def entropy_hinge(pred: jax.Array, prev: jax.Array, threshold: float = 0.0,
                  mask: jax.Array | None = None) -> jax.Array:
    """Per-sample max(0, S(prev) - S(pred) - threshold): penalises entropy decreasing by more than
    ``threshold`` nats from the input map E_t to the prediction (second law); with ``mask``,
    the entropies of the valid cells."""
    if mask is not None:
        pred, prev = pred * mask, prev * mask
    h = jax.nn.relu(entropy(prev) - entropy(pred) - threshold)
    return h.reshape(h.shape[0], -1).mean(axis=1)


def gaussian_nll_log_var(mean: jax.Array, log_var: jax.Array, target: jax.Array) -> jax.Array:
    """Per-pixel Gaussian negative log-likelihood 0.5 (log 2 pi + log var + (y - mu)^2 / var) of
    a predictive given by its **log-variance** (the model's head; the evaluation's
    :func:`atlasstore.nvp.scores.gaussian_nll_std` takes the standard deviation)."""
    return 0.5 * (_LOG_2PI + log_var + jnp.square(target - mean) * jnp.exp(-log_var))


def beta_nll(mean: jax.Array, log_var: jax.Array, target: jax.Array, beta: float = 0.5,
             mask: jax.Array | None = None) -> jax.Array:
    """Per-sample beta-NLL: mean over pixels (the valid ones of ``mask``) of
    ``stop_gradient(var**beta) * NLL`` (Seitzer et al.)."""
    nll = gaussian_nll_log_var(mean, log_var, target)
    if beta > 0:
        nll = nll * jax.lax.stop_gradient(jnp.exp(beta * log_var))
    return _per_sample_mean(nll, mask)


def nvp_loss(pred: jax.Array, log_var: jax.Array, target: jax.Array, prev: jax.Array,
             config: LossConfig = LossConfig(), mask: jax.Array | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and its terms (batch means, unweighted) for one batch.

    ``pred``/``target``/``prev`` are E_pred, E_{t+1} and E_t, ``log_var`` the predicted log
    variance of E_{t+1}; all (B, y, x) in the same (zero-preserving) units. ``mask`` (B, y, x),
    1 at valid cells and 0 at missing ones: every term is over the valid cells only (None: all).
    Returns ``(loss, {"loss", "mse", "conservation", "entropy", "nll"})``.
    """
    c = config
    terms = {
        "mse": jnp.mean(mse(pred, target, mask)),
        "conservation": jnp.mean(conservation_penalty(pred, target, mask)),
        "entropy": jnp.mean(entropy_hinge(pred, prev, c.entropy_threshold, mask)),
        "nll": jnp.mean(beta_nll(pred, log_var, target, c.beta, mask)),
    }
    total = (c.lambda_mse * terms["mse"] + c.lambda_conservation * terms["conservation"]
             + c.lambda_entropy * terms["entropy"] + c.lambda_nll * terms["nll"])
    return total, {"loss": total, **terms}
