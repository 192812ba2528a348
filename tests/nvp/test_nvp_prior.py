"""The NVP's physics prior and how the model wraps it: the operators against the generator, the
least-squares fit recovering known operators, zero residual = the prior exactly, conservation,
non-negativity, domain conditioning and the variance calibration."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from atlasstore.errors import ModelError
from atlasstore.nvp.calibration import coverage_factor, domain_factors
from atlasstore.nvp.model import NVP, ModelConfig, predict
from atlasstore.nvp.prior import (
    DomainPrior,
    apply_prior,
    fit_prior,
    heat_blur,
    noise_floor,
    rotate,
    rotate_bank,
)
from atlasstore.physics import fields as physics
from atlasstore.physics import synth

RNG = np.random.default_rng(0)


def maps(b: int = 3, shape: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 1.0, size=(b, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------ operators


@pytest.mark.parametrize("shape", [(32, 32), (32, 48)])
@pytest.mark.parametrize("angle", [0.0, 12.0, -37.5, 60.0, 90.0, -90.0])
def test_rotate_is_the_generators_rotation(shape: tuple[int, int], angle: float) -> None:
    x = maps(2, shape)
    got = np.asarray(rotate(jnp.asarray(x), angle))
    want = np.stack([synth.apply_rotation(m, angle) for m in x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-5)
    assert got.min() >= 0


def test_heat_blur_conserves_and_is_the_heat_kernel() -> None:
    x = jnp.asarray(maps())
    for sigma in (0.0, 0.7, 3.0):
        y = np.asarray(heat_blur(x, sigma))
        np.testing.assert_allclose(y.sum(axis=(1, 2)), np.asarray(x).sum(axis=(1, 2)), rtol=1e-5)
        assert y.min() >= -1e-5
        if sigma > 0:  # never lowers entropy (doubly stochastic)
            assert (physics.entropy(y.astype(np.float64)) >= physics.entropy(
                np.asarray(x, np.float64)) - 1e-6).all()
    np.testing.assert_allclose(np.asarray(heat_blur(x, 0.0)), np.asarray(x), rtol=1e-5, atol=1e-5)
    # a delta spreads into the sampled periodic Gaussian of variance sigma^2 per axis
    d = np.zeros((1, 64, 64), np.float32)
    d[0, 0, 0] = 1.0
    k = np.asarray(heat_blur(jnp.asarray(d), 2.0))[0]
    r = np.minimum(np.arange(64), 64 - np.arange(64))
    var_y = float((k.sum(axis=1) * r ** 2).sum())
    assert var_y == pytest.approx(4.0, rel=1e-3)
    # per-map sigmas
    two = np.asarray(heat_blur(x[:2], jnp.asarray([0.0, 2.0])))
    np.testing.assert_allclose(two[0], np.asarray(x[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(two[1], np.asarray(heat_blur(x[1:2], 2.0))[0], rtol=1e-5,
                               atol=1e-6)


def test_noise_floor_is_the_clipped_noise_expectation() -> None:
    x = jnp.asarray(maps(2, seed=3))
    np.testing.assert_array_equal(np.asarray(noise_floor(x, 0.0)), np.asarray(x))
    f = np.asarray(noise_floor(x, 0.3))
    np.testing.assert_allclose(f.sum(axis=(1, 2)), np.asarray(x).sum(axis=(1, 2)), rtol=1e-5)
    # against Monte Carlo: E max(x + n, 0), n ~ N(0, (0.3 mean)^2), rescaled to the same sum
    xs = np.asarray(x[0], np.float64)
    n = np.random.default_rng(1).normal(0, 0.3 * xs.mean(), size=(4000, *xs.shape))
    mc = np.maximum(xs + n, 0).mean(0)
    mc *= xs.sum() / mc.sum()
    assert np.abs(f[0] - mc).mean() < 0.01 and np.abs(f[0] - mc).max() < 0.08
    # small values are lifted, the largest lowered
    low = xs < np.quantile(xs, 0.05)
    assert f[0][low].mean() > xs[low].mean()
    assert f[0][xs.argmax() // xs.shape[1], xs.argmax() % xs.shape[1]] < xs.max()


# ------------------------------------------------------------------------------------ fitting


def test_fit_prior_recovers_a_heat_kernel() -> None:
    x = maps(8, (48, 48), seed=4)
    y = np.asarray(heat_blur(jnp.asarray(x), 1.3))
    p = fit_prior(x, y, sigmas=(0.0, 0.5, 1.0, 1.3, 2.0, 3.0))
    assert p.sigma == pytest.approx(1.3) and p.tau == 0.0 and p.weights == ()
    assert p.rmse < 1e-3 * p.persistence_rmse
    # off the grid: the fine grid around the best grid sigma gets within its step
    q = fit_prior(x, y, sigmas=(0.0, 0.5, 1.0, 2.0), taus=(0.0,))
    assert q.sigma == pytest.approx(1.3, abs=0.02)
    assert q.rmse < 1e-3 * q.persistence_rmse and q.diffusion_rmse > 10 * q.rmse


def test_fit_prior_recovers_rotation_weights_and_noise_floor() -> None:
    x = maps(8, (48, 48), seed=5)
    xj = jnp.asarray(x)
    angles = (-30.0, 0.0, 30.0)
    y = 0.5 * (rotate(xj, -30.0) + rotate(xj, 30.0))
    y = np.asarray(heat_blur(y, 1.0))
    p = fit_prior(x, y, angles, sigmas=(0.5, 1.0, 2.0), taus=(0.0, 0.2))
    np.testing.assert_allclose(p.weights, [0.5, 0.0, 0.5], atol=0.02)
    assert p.sigma == pytest.approx(1.0, abs=0.05) and p.tau == 0.0
    assert all(w >= 0 for w in p.weights) and sum(p.weights) == pytest.approx(1.0)
    # a noise floor in the data is found
    y2 = np.asarray(heat_blur(noise_floor(xj, 0.2), 1.0))
    p2 = fit_prior(x, y2, sigmas=(0.5, 1.0, 2.0), taus=(0.0, 0.1, 0.2, 0.3))
    assert p2.tau == 0.2 and p2.sigma == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="include 0"):
        fit_prior(x, y, (-30.0, 30.0))
    with pytest.raises(ValueError, match="pairs"):
        fit_prior(x, y[:2])


def test_prior_conserves_energy_and_keeps_it_non_negative() -> None:
    x = jnp.asarray(maps(4, (32, 32), seed=6))
    angles = (-45.0, 0.0, 45.0)
    w = jnp.asarray([[0.2, 0.5, 0.3]] * 4)
    out = np.asarray(apply_prior(x, jnp.full(4, 1.5), jnp.full(4, 0.1), w, angles))
    np.testing.assert_allclose(out.sum(axis=(1, 2)), np.asarray(x).sum(axis=(1, 2)), rtol=1e-5)
    assert out.min() >= -1e-5
    assert rotate_bank(x, angles).shape == (3, 4, 32, 32)


# ------------------------------------------------------------------------------------ the model

CFG = ModelConfig(width=4, max_width=8, depth=1, blocks=1, groups=2, embed=4)


def priors(sigmas: tuple[float, ...] = (1.0, 2.5), angles: int = 0) -> dict[str, DomainPrior]:
    w = tuple([0.0] * (angles // 2) + [1.0] + [0.0] * (angles // 2)) if angles else ()
    return {f"d{i}": DomainPrior(sigma=s, tau=0.0, weights=w, rmse=0.5 + i, persistence_rmse=2.0,
                                 diffusion_rmse=1.0, pairs=4) for i, s in enumerate(sigmas)}


def model(pr: dict[str, DomainPrior] | None = None, cfg: ModelConfig = CFG) -> NVP:
    return NVP(cfg, (32,), 1, {32: (2.0, 1.5)}, pr or priors(), shape=(32, 32), seed=1)


def randomised(m: NVP, scale: float = 0.5, seed: int = 0) -> NVP:
    """The model with every parameter (conv and FiLM weights, heads) drawn at random."""
    rng = np.random.default_rng(seed)
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, scale, a.shape), a.dtype), params)
    return nnx.merge(graphdef, params, rest)


def test_a_model_with_zero_residual_is_its_prior_exactly() -> None:
    m = model()
    x = jnp.asarray(maps(4, seed=7))[:, None]
    dom = jnp.asarray([0, 1, 1, 0])
    p = predict(m, {32: x}, dom)
    want = np.asarray(heat_blur(x[:, 0], jnp.asarray([1.0, 2.5, 2.5, 1.0])))
    np.testing.assert_allclose(np.asarray(p.mean), want, rtol=1e-6, atol=1e-6)
    # variance: rho_d^2 (log_var_init 0), calibration 1
    rho = np.asarray([0.5, 1.5, 1.5, 0.5])
    np.testing.assert_allclose(np.exp(np.asarray(p.log_var)), np.broadcast_to(
        (rho ** 2)[:, None, None], p.log_var.shape), rtol=1e-5)


def test_the_model_conserves_energy_and_stays_non_negative_whatever_its_weights() -> None:
    m = randomised(model(), scale=0.3)
    x = jnp.asarray(maps(4, seed=8))[:, None]
    dom = jnp.asarray([0, 1, 0, 1])
    out = np.asarray(predict(m, {32: x}, dom).mean)
    assert np.isfinite(out).all() and out.min() >= 0
    prior = np.asarray(m.prior(x[:, 0], dom))
    assert np.abs(out - prior).max() > 1e-2  # the residual is active
    assert out.min() > 0  # no pixel clamped: the zero-mean residual conserves sum E exactly
    np.testing.assert_allclose(out.sum(axis=(1, 2)), np.asarray(x).sum(axis=(1, 2, 3)),
                               rtol=1e-5)
    big = randomised(model(), scale=5.0, seed=3)  # clamps somewhere, never negative
    assert np.asarray(predict(big, {32: x}, dom).mean).min() >= 0


def test_changing_the_domain_changes_the_output() -> None:
    same = priors((1.5, 1.5))  # identical priors: only the embedding tells the domains apart
    m = randomised(model(same), scale=0.3, seed=2)
    x = jnp.asarray(maps(2, seed=9))[:, None]
    a = np.asarray(predict(m, {32: x}, jnp.asarray([0, 0])).mean)
    b = np.asarray(predict(m, {32: x}, jnp.asarray([1, 1])).mean)
    assert np.abs(a - b).max() > 1e-4
    np.testing.assert_allclose(np.asarray(m.prior(x[:, 0], jnp.asarray([0, 0]))),
                               np.asarray(m.prior(x[:, 0], jnp.asarray([1, 1]))))
    # and with different priors the untrained model differs by its prior alone
    m2 = model()
    c = np.asarray(predict(m2, {32: x}, jnp.asarray([0, 0])).mean)
    d = np.asarray(predict(m2, {32: x}, jnp.asarray([1, 1])).mean)
    assert np.abs(c - d).max() > 1e-3


def test_domain_index_and_its_refusals() -> None:
    m = model()
    assert m.domain_index(["d1/seq-00000@3", "d0/seq-00002@0"]).tolist() == [1, 0]
    with pytest.raises(ModelError, match="no prior for 'd9'"):
        m.domain_index(["d9/seq-00000@0"])
    with pytest.raises(ModelError, match="domain"):
        jax.eval_shape(lambda x: m({32: x}, jnp.zeros(3, jnp.int32)),
                       jax.ShapeDtypeStruct((2, 1, 32, 32), jnp.float32))
    with pytest.raises(ModelError, match="rotation weights"):
        NVP(ModelConfig(width=4, depth=1, groups=2, prior_angles=(-45.0, 0.0, 45.0)), (32,), 1,
            {32: (1.0, 1.0)}, priors())
    with pytest.raises(ModelError, match="include 0"):
        ModelConfig(prior_angles=(-45.0, 45.0))
    with pytest.raises(ModelError, match="no domains"):
        NVP(CFG, (32,), 1, {32: (1.0, 1.0)}, {})


def test_rotation_bank_inside_the_model() -> None:
    cfg = ModelConfig(width=4, max_width=8, depth=1, groups=2, embed=4,
                      prior_angles=(-45.0, 0.0, 45.0))
    pr = {"d0": DomainPrior(1.0, 0.0, (0.25, 0.5, 0.25), 1.0, 2.0, 1.5, 4)}
    m = model(pr, cfg)
    x = jnp.asarray(maps(2, seed=10))[:, None]
    got = np.asarray(predict(m, {32: x}, jnp.zeros(2, jnp.int32)).mean)
    bank = rotate_bank(x[:, 0], (-45.0, 0.0, 45.0))
    want = np.asarray(heat_blur(0.25 * bank[0] + 0.5 * bank[1] + 0.25 * bank[2], 1.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ calibration


def test_coverage_factor_restores_nominal_coverage() -> None:
    rng = np.random.default_rng(11)
    err = rng.normal(0, 3.0, 200_000)          # errors three times the predicted std of 1
    c = coverage_factor(np.abs(err))
    assert c == pytest.approx(3.0, rel=0.02)
    z = 1.6448536269514722
    assert np.mean(np.abs(err) <= z * c) == pytest.approx(0.9, abs=1e-3)
    heavy = rng.standard_t(3, 200_000)         # heavy tails: the quantile still gives 90 %
    ch = coverage_factor(np.abs(heavy))
    assert np.mean(np.abs(heavy) <= z * ch) == pytest.approx(0.9, abs=1e-3)
    f = domain_factors({0: np.abs(err), 2: np.abs(err) / 3}, 3)
    assert f[0] == pytest.approx(3.0, rel=0.02) and f[2] == pytest.approx(1.0, rel=0.02)
    assert f[1] == pytest.approx(coverage_factor(np.concatenate([np.abs(err), np.abs(err) / 3])))
    assert domain_factors({}, 2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="level"):
        coverage_factor(np.ones(3), 1.0)


def test_calibration_scales_the_variance_at_prediction_only() -> None:
    m = model()
    x = jnp.asarray(maps(2, seed=12))[:, None]
    dom = jnp.asarray([0, 1])
    before = np.asarray(predict(m, {32: x}, dom).log_var)
    m.var_scale[...] = jnp.asarray([4.0, 9.0])
    after = np.asarray(predict(m, {32: x}, dom).log_var)
    np.testing.assert_allclose(after - before, np.log([4.0, 9.0])[:, None, None]
                               * np.ones_like(before), rtol=1e-5)
    raw = np.asarray(m({32: x}, dom, calibrated=False).log_var)
    np.testing.assert_allclose(raw, before, rtol=1e-6)
    assert math.isfinite(float(after.max()))
