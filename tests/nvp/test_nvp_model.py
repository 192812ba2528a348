"""NVP model: multi-scale wiring, shapes, MC-dropout variance, block sums. (The physics prior,
conservation, non-negativity and domain conditioning: ``test_nvp_prior.py``.)

Shapes are checked with ``jax.eval_shape`` (no compilation); one tiny 64x64 model is compiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from atlasstore.errors import ModelError
from atlasstore.nvp.model import (
    NVP,
    MCPrediction,
    ModelConfig,
    combine_mc,
    mc_predict,
    predict,
    pyramid_inputs,
)
from atlasstore.nvp.prior import DomainPrior
from atlasstore.physics import fields as physics

TINY = ModelConfig(width=4, max_width=8, depth=1, blocks=1, dropout=0.2, groups=2)
PRIORS = {"d": DomainPrior(sigma=1.0, tau=0.0, weights=(), rmse=0.3, persistence_rmse=1.0,
                           diffusion_rmse=0.5, pairs=4)}


def stats_for(levels, base_mean=1.0, base_std=1.0):
    top = max(levels)
    return {lv: (base_mean * (top // lv) ** 2, base_std * (top // lv) ** 2) for lv in levels}


def abstract_inputs(levels, shape, n_in=1, b=2):
    top = max(levels)
    return {lv: jax.ShapeDtypeStruct((b, n_in, shape[0] * lv // top, shape[1] * lv // top),
                                     jnp.float32) for lv in levels}


@pytest.mark.parametrize("levels,shape,depth,entry", [
    ((256, 128, 64), (256, 256), 3, ((1, 128), (2, 64))),
    ((128, 64), (128, 128), 2, ((1, 64),)),
    ((128, 64), (128, 192), 3, ((1, 64),)),   # 2:3 aspect
    ((64,), (64, 64), 2, ()),
    # real grids that do not divide by 2**depth: padded inside, predicted at their own size
    ((37,), (37, 49), 3, ()),
    ((330, 165), (330, 360), 3, ((1, 165),)),
    ((18,), (18, 432), 2, ()),
])
def test_levels_enter_at_matching_depth_and_shapes(levels, shape, depth, entry) -> None:
    cfg = ModelConfig(width=4, max_width=8, depth=depth, groups=2)
    m = NVP(cfg, levels, 2, stats_for(levels), PRIORS, shape=shape)
    assert m.entry == entry
    assert m.base == levels[0]
    out = jax.eval_shape(lambda x: m(x, jnp.zeros(2, jnp.int32)),
                         abstract_inputs(levels, shape, n_in=2))
    assert out.mean.shape == (2, *shape) and out.log_var.shape == (2, *shape)


def test_refuses_unreachable_levels_and_bad_shapes() -> None:
    with pytest.raises(ModelError, match="depth"):
        NVP(ModelConfig(depth=1), (256, 64), 1, stats_for((256, 64)), PRIORS)
    with pytest.raises(ModelError, match="positive size"):
        NVP(ModelConfig(depth=3), (64,), 1, stats_for((64,)), PRIORS, shape=(0, 100))
    with pytest.raises(ModelError, match="statistics"):
        NVP(ModelConfig(depth=1), (128, 64), 1, {128: (1.0, 1.0)}, PRIORS)
    m = NVP(ModelConfig(width=4, depth=1, groups=2), (128, 64), 1, stats_for((128, 64)), PRIORS)
    with pytest.raises(ModelError, match="lack"):
        jax.eval_shape(lambda x: m(x, jnp.zeros(2, jnp.int32)),
                       abstract_inputs((128,), (128, 128)))
    with pytest.raises(ModelError):
        ModelConfig(dropout=1.0)
    with pytest.raises(ModelError, match="unknown"):
        ModelConfig.from_dict({"widht": 3})


@pytest.fixture(scope="module")
def tiny() -> NVP:
    # physical energies ~ 5 +- 0.5: normalised zero is far from physical zero
    return NVP(TINY, (64,), 1, {64: (5.0, 0.5)}, PRIORS, shape=(64, 64), seed=1)


def energy(seed: int, b: int = 2, zeros: bool = False) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.gamma(4.0, 1.25, size=(b, 1, 64, 64)).astype(np.float32)
    if zeros:
        e[:, :, :16] = 0.0
    return jnp.asarray(e)


DOM = jnp.zeros(2, jnp.int32)


def test_predictions_are_non_negative_in_physical_units(tiny: NVP) -> None:
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)
    rng = np.random.default_rng(3)
    for trial in range(3):
        m = nnx.merge(graphdef, jax.tree.map(
            lambda a: jnp.asarray(rng.normal(0, 3.0, a.shape), a.dtype), params), rest)
        # push the residual head hard negative: E_t + rho r << 0 before the clamp
        m.head_mean.bias[...] = m.head_mean.bias[...].at[0].set(-1e3 * (trial + 1))
        for zeros in (False, True):
            p = predict(m, {64: energy(trial, zeros=zeros)}, DOM)
            mean = np.asarray(p.mean)
            assert np.isfinite(mean).all() and (mean >= 0).all()
            assert np.isfinite(np.asarray(p.log_var)).all()


def test_combine_mc_is_the_law_of_total_variance() -> None:
    means = jnp.asarray([[1.0, 0.0], [3.0, 0.0]])           # 2 samples x 2 pixels
    log_vars = jnp.log(jnp.asarray([[1.0, 2.0], [3.0, 2.0]]))
    r = combine_mc(means, log_vars)
    np.testing.assert_allclose(np.asarray(r.mean), [2.0, 0.0])
    np.testing.assert_allclose(np.asarray(r.aleatoric), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r.epistemic), [1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r.total), [3.0, 2.0], rtol=1e-6)
    # against a Monte Carlo of the mixture
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 2, 8)
    var = rng.uniform(0.5, 2, 8)
    draws = rng.normal(np.repeat(mu, 50_000), np.sqrt(np.repeat(var, 50_000)))
    r = combine_mc(jnp.asarray(mu), jnp.log(jnp.asarray(var)))
    assert float(r.total) == pytest.approx(draws.var(), rel=0.02)


def test_mc_dropout_gives_epistemic_variance(tiny: NVP) -> None:
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)
    rng = np.random.default_rng(5)
    m = nnx.merge(graphdef, jax.tree.map(
        lambda a: jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype), params), rest)
    x = {64: energy(1)}
    r = mc_predict(m, x, DOM, jax.random.key(0), n_samples=6)
    assert isinstance(r, MCPrediction)
    epi, alea, tot = (np.asarray(a) for a in (r.epistemic, r.aleatoric, r.total))
    assert epi.mean() > 0 and (epi >= 0).all() and (alea > 0).all()
    np.testing.assert_allclose(tot, alea + epi, rtol=1e-6)
    assert (np.asarray(r.mean) >= 0).all()
    # same key, same answer; no samples: deterministic, no epistemic part
    r2 = mc_predict(m, x, DOM, jax.random.key(0), n_samples=6)
    np.testing.assert_array_equal(np.asarray(r.mean), np.asarray(r2.mean))
    r0 = mc_predict(m, x, DOM, jax.random.key(0), n_samples=0)
    assert float(np.abs(np.asarray(r0.epistemic)).max()) == 0.0
    np.testing.assert_allclose(np.asarray(r0.mean), np.asarray(predict(m, x, DOM).mean),
                               rtol=1e-6)


def test_block_sum_on_jax_matches_the_store_pyramid() -> None:
    """One block-sum serves the store (NumPy) and the model (JAX, also under jit)."""
    e = np.random.default_rng(2).gamma(2.0, 1.0, size=(2, 128, 128)).astype(np.float32)
    jitted = jax.jit(physics.block_sum, static_argnums=1)
    for lv in (128, 64):
        f = 128 // lv
        for got in (physics.block_sum(jnp.asarray(e), f), jitted(jnp.asarray(e), f)):
            assert isinstance(got, jax.Array) and got.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(got), physics.downsample(e, lv), rtol=1e-5)
    pyr = pyramid_inputs(jnp.asarray(e), (128, 64))
    assert pyr[64].shape == (2, 64, 64)
    np.testing.assert_allclose(np.asarray(pyr[64]).sum(), e.sum(), rtol=1e-5)


def test_block_sum_numpy_and_its_refusals() -> None:
    x = np.arange(2 * 4 * 6, dtype=np.float64).reshape(2, 4, 6)
    got = physics.block_sum(x, 2)
    assert isinstance(got, np.ndarray) and got.shape == (2, 2, 3)
    assert got[0, 0, 0] == x[0, 0, 0] + x[0, 0, 1] + x[0, 1, 0] + x[0, 1, 1]
    assert physics.block_sum(x, 1) is x
    with pytest.raises(physics.EnergyMapError, match="not divisible"):
        physics.block_sum(x, 4)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(physics.EnergyMapError, match="positive integer"):
            physics.block_sum(x, bad)


def test_an_intensive_field_is_not_clipped_at_zero() -> None:
    """A temperature anomaly goes below zero; energy cannot (the model of an extensive field
    clips its prediction at zero, an intensive field's model does not)."""
    x = {16: -5.0 * jnp.ones((1, 1, 16, 16), jnp.float32)}
    intensive = NVP(TINY, (16,), 1, {16: (-5.0, 1.0)}, PRIORS, shape=(16, 16),
                    non_negative=False)
    assert float(intensive(x, jnp.zeros(1, jnp.int32)).mean.max()) < 0
    energy = NVP(TINY, (16,), 1, {16: (-5.0, 1.0)}, PRIORS, shape=(16, 16))
    assert float(energy(x, jnp.zeros(1, jnp.int32)).mean.min()) >= 0
