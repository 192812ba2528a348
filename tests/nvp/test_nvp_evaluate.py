"""NVP evaluation metrics on hand-computable cases; the baselines; the goals and headline."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from atlasstore.nvp.baselines import (
    LinearAR,
    diffusion,
    fit_baselines,
    fit_diffusion_sigma,
    fit_linear_ar,
    persistence,
)
from atlasstore.nvp.goals import evaluate_goals, headline, markdown_tables
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


# ------------------------------------------------------------------------------------ linear AR


def test_linear_ar_recovers_a_known_stencil_exactly() -> None:
    rng = np.random.default_rng(4)
    hist = rng.gamma(2.0, 1.0, size=(6, 2, 24, 20))
    k0 = rng.normal(0, 1, (3, 3))
    k1 = rng.normal(0, 1, (3, 3))
    truth = LinearAR(np.stack([k0, k1]), 0.7)
    y = truth.predict(hist)
    # the stencil is a periodic convolution: check one pixel by hand
    e0, e1 = hist[0, -1], hist[0, -2]
    want = 0.7 + sum(k0[dy + 1, dx + 1] * e0[(5 - dy) % 24, (7 - dx) % 20]
                     + k1[dy + 1, dx + 1] * e1[(5 - dy) % 24, (7 - dx) % 20]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    assert y[0, 5, 7] == pytest.approx(want, rel=1e-10)
    fit = fit_linear_ar(hist, y, radius=1, steps=2, ridge=0.0)
    np.testing.assert_allclose(fit.kernels, truth.kernels, atol=1e-8)
    assert fit.bias == pytest.approx(0.7, abs=1e-8)
    # a wider stencil finds zeros outside; one step cannot explain two
    wide = fit_linear_ar(hist, y, radius=2, steps=2, ridge=0.0)
    np.testing.assert_allclose(wide.kernels[:, 1:4, 1:4], truth.kernels, atol=1e-7)
    assert np.abs(wide.kernels[:, 0]).max() < 1e-7
    one = fit_linear_ar(hist, y, radius=1, steps=1)
    assert np.mean(np.square(one.predict(hist) - y)) > 1e-3
    with pytest.raises(ValueError, match="steps"):
        fit_linear_ar(hist, y, radius=1, steps=3)
    with pytest.raises(ValueError, match="radius"):
        fit_linear_ar(hist, y, radius=12)


def test_baselines_are_fitted_per_domain() -> None:
    rng = np.random.default_rng(5)
    a = rng.gamma(2.0, 1.0, size=(4, 1, 32, 32))
    b = rng.gamma(2.0, 1.0, size=(4, 1, 32, 32))
    pairs = {"slow": (a, diffusion(a[:, 0], 1.0)), "fast": (b, diffusion(b[:, 0], 3.0))}
    fb = fit_baselines(pairs, sigmas=(0.0, 1.0, 2.0, 3.0), ar_radius=2)
    assert fb.of("slow").sigma == 1.0 and fb.of("fast").sigma == 3.0
    assert fb.of("slow").std["diffusion"] < 1e-12 < fb.of("slow").std["persistence"]
    assert fb.of("fast").std["linear_ar"] < fb.of("fast").std["persistence"]
    ro = fb.of("slow").rollout("diffusion", a[:1], 2)
    np.testing.assert_allclose(ro[0, 1], diffusion(diffusion(a[0, 0], 1.0), 1.0))
    with pytest.raises(ValueError, match="no baselines fitted for domain 'other'"):
        fb.of("other")
    with pytest.raises(ValueError, match="unknown baseline"):
        fb.of("slow").predict("oracle", a)


# ------------------------------------------------------------------------------------ goals


def _block(v: float, cov: float = 0.9, nll: float = 0.0) -> dict:
    return {"vrmse": v, "coverage_50": 0.5, "coverage_90": cov, "nll": nll, "crps": v,
            "conservation_error": 0.0, "entropy_violations": {"rate": 0.0}}


def fake_report() -> dict:
    per = {"calm": {"windows": 4, "model": _block(0.010, 0.91, -2.0),
                    "persistence": _block(0.020, 0.9, 0.0), "diffusion": _block(0.011),
                    "linear_ar": _block(0.012)},
           "spin": {"windows": 4, "model": _block(0.95, 0.80, 1.0),
                    "persistence": _block(1.30, 0.9, 0.5), "diffusion": _block(0.90),
                    "linear_ar": _block(0.99)}}
    ro = {"lead": [1, 2], "per_domain": {
        "calm": {"rollouts": 3, "model": [0.01, 0.02], "diffusion": [0.011, 0.021],
                 "persistence": [0.1, 0.2]},
        "spin": {"rollouts": 3, "model": [0.95, 0.9], "diffusion": [0.9, 0.95],
                 "persistence": [1.3, 1.4]}}}
    return {"one_step": {"per_domain": per, "overall": per["spin"]}, "rollout": ro,
            "data": {"held_out": True, "held_out_note": "held-out evaluation: test"}}


def test_goals_per_domain_say_by_how_much() -> None:
    rep = fake_report()
    goals = {(g["goal"], g["domain"]): g for g in evaluate_goals(rep)}
    assert goals[("vs_persistence", "calm")]["met"]
    assert goals[("vs_persistence", "calm")]["margin"] == pytest.approx(0.5)
    assert goals[("vs_diffusion", "calm")]["met"]
    g = goals[("vs_diffusion", "spin")]
    assert not g["met"] and g["margin"] == pytest.approx(1 - 0.95 / 0.90)
    assert "5.6 % ABOVE diffusion" in g["text"]
    g = goals[("rollout", "spin")]
    assert not g["met"] and "lead 1" in g["text"] and "1 of 2 leads above" in g["text"]
    assert goals[("rollout", "calm")]["met"]
    g = goals[("coverage_90", "spin")]
    assert not g["met"] and g["margin"] == pytest.approx(-0.05) and "missed by 5.0 points" in g["text"]
    assert goals[("coverage_90", "calm")]["met"]
    assert not goals[("nll", "spin")]["met"] and goals[("nll", "calm")]["met"]
    g = goals[("mean_reduction", "all")]
    # mean over domains: (0.01 + 0.95) / 2 vs (0.02 + 1.30) / 2
    assert g["value"] == pytest.approx(1 - 0.48 / 0.66) and not g["met"]
    assert "missed by" in g["text"]


def test_headline_names_the_worst_domain() -> None:
    rep = fake_report()
    rep["goals"] = evaluate_goals(rep)
    h = headline(rep)
    assert h["worst_domain"] == "spin"  # 0.95 vs best baseline 0.90; calm beats its baselines
    assert h["worst_vs_best_baseline"] == pytest.approx(0.95 / 0.90 - 1)
    assert h["mean_vrmse"]["model"] == pytest.approx(0.48)
    assert h["goals_met"] == sum(g["met"] for g in rep["goals"]) < h["goals"]
    text = markdown_tables(rep)
    assert "Worst domain (NVP furthest from the best baseline): spin" in text
    assert "held-out evaluation: test" in text and "**missed**" in text
    assert text.count("| calm |") >= 3  # one-step, uncertainty, rollout tables
