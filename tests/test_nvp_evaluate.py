"""NVP evaluation metrics on hand-computable cases; the baselines."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from atlasstore.nvp.baselines import diffusion, fit_diffusion_sigma, persistence
from atlasstore.nvp.scores import (
    conservation_error,
    entropy_violations,
    gaussian_crps,
    gaussian_nll_std,
    interval_coverage,
    metric_block,
    spread_skill,
    vrmse,
)


def checker(n: int = 4) -> np.ndarray:
    """A map of 0s and 2s: mean 1, variance 1."""
    y = np.zeros((n, n))
    y[::2, ::2] = y[1::2, 1::2] = 2.0
    return y[None]


def test_vrmse_the_well_definition() -> None:
    y = checker()
    assert float(np.var(y)) == 1.0
    assert float(vrmse(y + 1.0, y)[0]) == pytest.approx(1.0 / math.sqrt(1 + 1e-7))
    assert float(vrmse(np.ones_like(y), y)[0]) == pytest.approx(1.0, rel=1e-6)  # the mean: 1
    assert float(vrmse(y, y)[0]) == 0.0
    assert float(vrmse(y + 3.0, y)[0]) == pytest.approx(3.0, rel=1e-6)
    # a constant target: the epsilon keeps it finite (sqrt(err / 1e-7))
    c = np.ones((1, 4, 4))
    assert float(vrmse(c + 1e-3, c)[0]) == pytest.approx(math.sqrt(1e-6 / 1e-7), rel=1e-6)
    # per sample, and the same in JAX
    yy = np.concatenate([y, 2 * y])
    got = np.asarray(vrmse(yy + 1.0, yy))
    np.testing.assert_allclose(got, [1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(vrmse(jnp.asarray(yy + 1.0), jnp.asarray(yy))), got,
                               rtol=1e-5)


def test_conservation_and_entropy_violations() -> None:
    y = checker()
    assert float(conservation_error(1.05 * y, y)[0]) == pytest.approx(0.05)
    uniform = np.ones((1, 4, 4))
    delta = np.zeros((1, 4, 4))
    delta[0, 0, 0] = 16.0
    v = entropy_violations(np.concatenate([delta, uniform]), np.concatenate([uniform, delta]))
    assert v["rate"] == 0.5
    assert v["max_excess"] == pytest.approx(math.log(16))
    assert entropy_violations(delta, uniform, threshold=10.0)["rate"] == 0.0


def test_gaussian_nll_hand_case() -> None:
    assert float(gaussian_nll_std(0.0, 1.0, 0.0)) == pytest.approx(0.5 * math.log(2 * math.pi))
    assert float(gaussian_nll_std(1.0, 2.0, 3.0)) == pytest.approx(
        -stats.norm(1.0, 2.0).logpdf(3.0), rel=1e-12)


def test_crps_closed_form() -> None:
    # N(0, 1) at its mean: 2 phi(0) - 1/sqrt(pi) = sqrt(2/pi) - 1/sqrt(pi)
    assert float(gaussian_crps(0.0, 1.0, 0.0)) == pytest.approx(
        math.sqrt(2 / math.pi) - 1 / math.sqrt(math.pi), rel=1e-12)
    # against the definition: integral of (F(x) - 1{x >= y})^2 dx
    for mu, sigma, y in ((0.0, 1.0, 0.3), (2.0, 0.5, -1.0), (-1.0, 3.0, 4.0)):
        F = stats.norm(mu, sigma).cdf
        lo, hi = min(mu - 12 * sigma, y), max(mu + 12 * sigma, y)
        num = (integrate.quad(lambda x, F=F: F(x) ** 2, lo, y, limit=200)[0]
               + integrate.quad(lambda x, F=F: (1 - F(x)) ** 2, y, hi, limit=200)[0])
        assert float(gaussian_crps(mu, sigma, y)) == pytest.approx(num, rel=1e-6)
    # sigma -> 0: the absolute error; scale: CRPS(a mu, a sigma, a y) = a CRPS(mu, sigma, y)
    assert float(gaussian_crps(1.0, 0.0, 3.5)) == pytest.approx(2.5)
    assert float(gaussian_crps(2.0, 4.0, 6.0)) == pytest.approx(2 * float(gaussian_crps(1, 2, 3)))


def test_interval_coverage_hand_case() -> None:
    mean = np.zeros(4)
    std = np.ones(4)
    y = np.array([0.0, 0.6, 1.0, 3.0])
    # 50%: |z| <= 0.6745 -> {0, 0.6}; 90%: |z| <= 1.6449 -> {0, 0.6, 1}
    assert interval_coverage(mean, std, y, 0.5) == 0.5
    assert interval_coverage(mean, std, y, 0.9) == 0.75
    # a calibrated Gaussian predictive covers at its nominal rate
    rng = np.random.default_rng(0)
    s = rng.uniform(0.5, 2.0, 200_000)
    yy = rng.normal(0, s)
    for q in (0.5, 0.9):
        assert interval_coverage(np.zeros_like(s), s, yy, q) == pytest.approx(q, abs=0.005)
    with pytest.raises(ValueError):
        interval_coverage(mean, std, y, 1.0)


def test_spread_skill() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(0.1, 3.0, 100_000)
    y = rng.normal(0, s)
    ss = spread_skill(np.zeros_like(s), s, y, n_bins=5)
    assert ss["ratio"] == pytest.approx(1.0, abs=0.02)
    assert len(ss["bins"]) == 5 and ss["bin_correlation"] > 0.99
    for b in ss["bins"]:
        assert b["rmse"] == pytest.approx(b["spread"], rel=0.05)
    over = spread_skill(np.zeros_like(s), 2 * s, y)
    assert over["ratio"] == pytest.approx(2.0, rel=0.02)


def test_baselines() -> None:
    rng = np.random.default_rng(2)
    e = rng.gamma(2.0, 1.0, size=(3, 32, 32))
    np.testing.assert_array_equal(persistence(e), e)
    blurred = diffusion(e, 1.5)
    np.testing.assert_allclose(blurred.sum(axis=(-2, -1)), e.sum(axis=(-2, -1)), rtol=1e-10)
    assert diffusion(e, 0.0).tolist() == e.tolist()
    sigma, table = fit_diffusion_sigma(e, blurred, (0.0, 0.5, 1.0, 1.5, 2.0))
    assert sigma == 1.5 and len(table) == 5
    assert min(r["mse"] for r in table) == pytest.approx(0.0, abs=1e-20)


def test_metric_block_of_a_perfect_and_a_persistent_prediction() -> None:
    rng = np.random.default_rng(3)
    prev = rng.gamma(2.0, 1.0, size=(4, 16, 16))
    truth = diffusion(prev, 1.0)
    perfect = metric_block(truth, np.full_like(truth, 1e-3), truth, prev)
    assert perfect["vrmse"] == 0.0 and perfect["conservation_error"] < 1e-12
    assert perfect["coverage_90"] == 1.0
    assert perfect["entropy_violations"]["rate"] == 0.0  # a blur never lowers entropy
    pers = metric_block(prev, np.full_like(prev, 1.0), truth, prev)
    assert pers["vrmse"] > 0.3 and pers["conservation_error"] < 1e-12
    assert set(pers) >= {"nll", "crps", "coverage_50", "coverage_90", "spread_skill"}
