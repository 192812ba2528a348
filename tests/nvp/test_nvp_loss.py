"""NVP loss: every term on hand-computable cases, the sign of its gradient, the weighting."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atlasstore.nvp.loss import (
    LOSS_TERMS,
    LossConfig,
    beta_nll,
    conservation_penalty,
    entropy,
    entropy_hinge,
    gaussian_nll_log_var,
    mse,
    nvp_loss,
)
from atlasstore.physics import fields as physics

N = 4 * 4


def uniform(v: float = 1.0, n: int = 4) -> jnp.ndarray:
    return jnp.full((1, n, n), v, jnp.float32)


def peaked(peak: float = 10.0, rest: float = 1.0, n: int = 4) -> jnp.ndarray:
    return jnp.full((1, n, n), rest, jnp.float32).at[0, 0, 0].set(peak)


# ------------------------------------------------------------------------------------ entropy


def test_entropy_matches_physics_and_is_zero_safe() -> None:
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 1.0, size=(3, 8, 8)).astype(np.float32)
    e[0, :4] = 0.0  # zeros must contribute nothing
    np.testing.assert_allclose(np.asarray(entropy(jnp.asarray(e))), physics.entropy(e), rtol=1e-5)
    assert float(entropy(uniform())[0]) == pytest.approx(math.log(N), rel=1e-6)
    assert float(entropy(jnp.zeros((1, 4, 4)))[0]) == 0.0
    assert float(entropy(jnp.zeros((1, 4, 4)).at[0, 1, 2].set(5.0))[0]) == 0.0


def test_entropy_gradient_is_finite_at_zero_pixels() -> None:
    e = jnp.zeros((1, 4, 4)).at[0, 0, :].set(1.0)
    g = jax.grad(lambda x: entropy(x).sum())(e)
    # finite (the log term of a zero pixel is masked; only its share of the total remains)
    assert bool(jnp.all(jnp.isfinite(g)))
    g2 = jax.grad(lambda x: entropy_hinge(x, uniform()).sum())(e)
    assert bool(jnp.all(jnp.isfinite(g2)))


# ------------------------------------------------------------------------------------ terms


def test_mse_hand_case() -> None:
    t = uniform(2.0)
    assert float(mse(t + 1.0, t)[0]) == pytest.approx(1.0)
    p = t.at[0, 0, 0].add(4.0)  # one pixel off by 4: 16 / 16 pixels
    assert float(mse(p, t)[0]) == pytest.approx(1.0)


def test_conservation_hand_case() -> None:
    t = uniform(1.0)
    assert float(conservation_penalty(1.1 * t, t)[0]) == pytest.approx(0.1, rel=1e-5)
    assert float(conservation_penalty(0.75 * t, t)[0]) == pytest.approx(0.25, rel=1e-6)
    # redistributing energy without changing the total costs nothing
    assert float(conservation_penalty(peaked(16.0, 0.0), t)[0]) == pytest.approx(0.0, abs=1e-7)
    # an all-zero target: the absolute sum
    assert float(conservation_penalty(t, jnp.zeros_like(t))[0]) == pytest.approx(16.0)


def test_entropy_hinge_hand_case() -> None:
    delta = jnp.zeros((1, 4, 4)).at[0, 0, 0].set(1.0)  # S = 0
    u = uniform()  # S = log 16
    assert float(entropy_hinge(delta, u)[0]) == pytest.approx(math.log(N), rel=1e-6)
    assert float(entropy_hinge(delta, u, threshold=1.0)[0]) == pytest.approx(math.log(N) - 1.0,
                                                                             rel=1e-6)
    assert float(entropy_hinge(delta, u, threshold=10.0)[0]) == 0.0
    assert float(entropy_hinge(u, delta)[0]) == 0.0  # entropy increases: no penalty


def test_gaussian_and_beta_nll_hand_case() -> None:
    m, y = jnp.zeros((1, 2, 2)), jnp.ones((1, 2, 2))
    lv = jnp.zeros((1, 2, 2))
    want = 0.5 * (math.log(2 * math.pi) + 1.0)
    assert float(gaussian_nll_log_var(m, lv, y)[0, 0, 0]) == pytest.approx(want, rel=1e-6)
    assert float(beta_nll(m, lv, y, 0.0)[0]) == pytest.approx(want, rel=1e-6)
    lv4 = jnp.full((1, 2, 2), math.log(4.0))  # var 4: NLL 0.5 (log 2pi + log 4 + 1/4)
    nll4 = 0.5 * (math.log(2 * math.pi) + math.log(4.0) + 0.25)
    assert float(beta_nll(m, lv4, y, 0.0)[0]) == pytest.approx(nll4, rel=1e-6)
    # beta weights the value by var**beta (stop-gradient): 4**0.5 = 2
    assert float(beta_nll(m, lv4, y, 0.5)[0]) == pytest.approx(2 * nll4, rel=1e-6)


def test_beta_only_rescales_gradients() -> None:
    m, y = jnp.zeros((1, 2, 2)), jnp.full((1, 2, 2), 3.0)
    lv = jnp.full((1, 2, 2), math.log(4.0))
    g0 = jax.grad(lambda a, b: beta_nll(a, b, y, 0.0).sum(), argnums=(0, 1))(m, lv)
    g1 = jax.grad(lambda a, b: beta_nll(a, b, y, 0.5).sum(), argnums=(0, 1))(m, lv)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(np.asarray(b), 2.0 * np.asarray(a), rtol=1e-5)


# ------------------------------------------------------------------------------------ gradients


def grad_of(fn, x):
    return np.asarray(jax.grad(lambda z: jnp.sum(fn(z)))(x))


def test_mse_gradient_signs() -> None:
    t = uniform(1.0)
    p = t.at[0, 0, 0].add(1.0).at[0, 1, 1].add(-1.0)
    g = grad_of(lambda z: mse(z, t), p)
    assert g[0, 0, 0] > 0 and g[0, 1, 1] < 0 and g[0, 2, 2] == 0


def test_conservation_gradient_signs() -> None:
    t = uniform(1.0)
    g_hi = grad_of(lambda z: conservation_penalty(z, t), 1.2 * t)  # too much energy: push down
    g_lo = grad_of(lambda z: conservation_penalty(z, t), 0.8 * t)  # too little: push up
    assert (g_hi > 0).all() and (g_lo < 0).all()
    np.testing.assert_allclose(g_hi, 1.0 / N, rtol=1e-6)  # d|sum P - sum T|/sum T = 1/sum T


def test_entropy_hinge_gradient_signs() -> None:
    prev = uniform(1.0)
    pred = peaked(10.0, 1.0)  # lower entropy than prev: hinge active
    assert float(entropy_hinge(pred, prev)[0]) > 0
    g = grad_of(lambda z: entropy_hinge(z, prev), pred)
    assert g[0, 0, 0] > 0  # raising the peak lowers entropy further: loss up
    assert (g[0].ravel()[1:] < 0).all()  # raising the rest spreads energy: loss down
    # inactive hinge: zero gradient
    g0 = grad_of(lambda z: entropy_hinge(z, pred), prev)
    assert np.abs(g0).max() == 0.0


def test_nll_log_variance_gradient_signs() -> None:
    m, y = jnp.zeros((1, 2, 2)), jnp.full((1, 2, 2), 2.0)  # squared error 4
    small, large = jnp.zeros((1, 2, 2)), jnp.full((1, 2, 2), math.log(16.0))
    g_small = grad_of(lambda z: beta_nll(m, z, y, 0.5), small)  # var 1 < 4: raise it
    g_large = grad_of(lambda z: beta_nll(m, z, y, 0.5), large)  # var 16 > 4: lower it
    assert (g_small < 0).all() and (g_large > 0).all()
    g_mean = grad_of(lambda z: beta_nll(z, small, y, 0.5), m)  # mean below y: raise it
    assert (g_mean < 0).all()


# ------------------------------------------------------------------------------------ total


def test_total_is_the_weighted_sum_and_terms_are_logged() -> None:
    rng = np.random.default_rng(1)
    t = jnp.asarray(rng.gamma(2.0, 1.0, (2, 8, 8)), jnp.float32)
    prev = jnp.asarray(rng.gamma(2.0, 1.0, (2, 8, 8)), jnp.float32)
    p = jnp.asarray(rng.gamma(1.0, 1.0, (2, 8, 8)), jnp.float32)  # peakier: entropy hinge active
    lv = jnp.asarray(rng.normal(0, 0.5, (2, 8, 8)), jnp.float32)
    cfg = LossConfig(lambda_mse=1.5, lambda_conservation=0.1, lambda_entropy=0.05,
                     entropy_threshold=0.0, lambda_nll=0.7, beta=0.5)
    total, terms = nvp_loss(p, lv, t, prev, cfg)
    assert set(terms) == set(LOSS_TERMS)
    assert float(terms["entropy"]) > 0
    want = (1.5 * terms["mse"] + 0.1 * terms["conservation"] + 0.05 * terms["entropy"]
            + 0.7 * terms["nll"])
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    assert float(terms["loss"]) == float(total)
    # each term alone
    only = LossConfig(lambda_mse=0, lambda_conservation=1, lambda_entropy=0, lambda_nll=0)
    assert float(nvp_loss(p, lv, t, prev, only)[0]) == pytest.approx(
        float(conservation_penalty(p, t).mean()), rel=1e-6)


def test_default_weights_are_the_predecessors() -> None:
    c = LossConfig()
    assert (c.lambda_mse, c.lambda_conservation, c.lambda_entropy) == (1.0, 0.1, 0.05)
    assert LossConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("bad", [{"lambda_mse": -1.0}, {"beta": 1.5}, {"lambda_nll": float("nan")},
                                 {"lambda_entropy": True}])
def test_loss_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        LossConfig(**bad)
