"""``model.prior = "linear_ar"``: the evaluation's linear AR stencil as the NVP's prior. The JAX
stencil is the baseline's, a model with zero correction predicts exactly the fitted stencil
(with variance its RMS error squared), the option round-trips through configs, run records and
checkpoints, and a physics model is unchanged (no option written, no extra state)."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from atlasstore.errors import ModelError
from atlasstore.nvp.baselines import LinearAR, fit_linear_ar, linear_ar_prior
from atlasstore.nvp.model import NVP, ModelConfig, predict
from atlasstore.nvp.prior import DomainPrior, apply_linear_ar

CFG = ModelConfig(width=4, max_width=8, depth=1, blocks=1, groups=2, embed=4, prior="linear_ar")


def series(b: int = 6, n: int = 3, shape: tuple[int, int] = (16, 16), seed: int = 0
           ) -> np.ndarray:
    """(b, n + 1, y, x): smooth periodic fields advected one pixel a step, plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, size=(b, *shape))
    base = np.real(np.fft.ifft2(np.fft.fft2(base) * np.exp(-0.05 * np.add.outer(
        np.fft.fftfreq(shape[0]) ** 2, np.fft.fftfreq(shape[1]) ** 2) * shape[0] ** 2)))
    steps = [np.roll(base, t, axis=-1) + 0.01 * rng.standard_normal(base.shape)
             for t in range(n + 1)]
    return np.stack(steps, axis=1).astype(np.float32) + 3.0


def test_apply_linear_ar_is_the_baselines_stencil() -> None:
    rng = np.random.default_rng(1)
    h = rng.gamma(2.0, 1.0, size=(3, 3, 16, 12))
    ar = LinearAR(rng.normal(0, 0.1, size=(2, 5, 5)), 0.7)
    got = np.asarray(apply_linear_ar(jnp.asarray(h, jnp.float32),
                                     jnp.asarray(np.broadcast_to(ar.kernels, (3, 2, 5, 5)),
                                                 jnp.float32),
                                     jnp.full(3, ar.bias, jnp.float32)))
    np.testing.assert_allclose(got, ar.predict(h), rtol=1e-4, atol=1e-4)


def _model(cfg: ModelConfig = CFG) -> tuple[NVP, np.ndarray, dict[str, DomainPrior]]:
    s = series()
    pr = {"a": linear_ar_prior(s[:, 1:3], s[:, 3], radius=2),
          "b": linear_ar_prior(s[:, :2] * 2, s[:, 2] * 2, radius=2, steps=1)}
    return NVP(cfg, (16,), 2, {16: (3.0, 1.0)}, pr, shape=(16, 16), seed=1), s, pr


def test_zero_correction_reproduces_the_fitted_stencil() -> None:
    m, s, pr = _model()
    # per domain: the stencil the evaluation would fit (2 steps for a; 1 step for b, zero-padded
    # to 2 in the model) and its RMS error as rho
    hist = jnp.asarray(s[:, 1:3])
    out = predict(m, {16: hist}, jnp.zeros(6, jnp.int32))
    want = fit_linear_ar(s[:, 1:3], s[:, 3], 2, 2).predict(s[:, 1:3])
    np.testing.assert_allclose(np.asarray(out.mean), want, rtol=1e-4, atol=1e-4)
    rho = pr["a"].rmse
    assert rho == pytest.approx(float(np.sqrt(np.mean((want - s[:, 3]) ** 2))), rel=1e-6)
    assert rho < 0.5 * float(np.sqrt(np.mean((s[:, 2] - s[:, 3]) ** 2)))  # beats persistence
    np.testing.assert_allclose(np.exp(np.asarray(out.log_var)), rho ** 2, rtol=1e-4)
    want_b = fit_linear_ar(s[:, :2] * 2, s[:, 2] * 2, 2, 1).predict(s[:, 1:3])
    got_b = predict(m, {16: hist}, jnp.ones(6, jnp.int32)).mean
    np.testing.assert_allclose(np.asarray(got_b), np.maximum(want_b, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(m.prior(hist, jnp.ones(6, jnp.int32))), want_b,
                               rtol=1e-4, atol=1e-4)


def test_the_option_round_trips_and_physics_is_unchanged() -> None:
    d = CFG.to_dict()
    assert d["prior"] == "linear_ar" and ModelConfig.from_dict(d) == CFG
    phys = ModelConfig(width=4)
    assert "prior" not in phys.to_dict()  # configs, run records and hashes as before
    assert ModelConfig.from_dict(phys.to_dict()).prior == "physics"
    with pytest.raises(ModelError, match="prior must be one of"):
        ModelConfig(prior="persistence")
    _, _, pr = _model()
    p = pr["a"]
    assert DomainPrior.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    plain = DomainPrior(1.0, 0.0, (), 0.5, 1.0, 0.8, 4)
    assert "ar_kernels" not in plain.to_dict() and DomainPrior.from_dict(plain.to_dict()) == plain
    m = NVP(phys, (16,), 2, {16: (3.0, 1.0)}, {"a": plain}, shape=(16, 16))
    assert not hasattr(m, "ar_kernels")
    with pytest.raises(ModelError, match="needs every domain's fitted stencil"):
        NVP(CFG, (16,), 2, {16: (3.0, 1.0)}, {"a": plain}, shape=(16, 16))


def test_schema_accepts_the_option() -> None:
    from atlasstore.nvp.config import TrainConfig

    base = json.loads((Path(__file__).resolve().parents[2] / "configs"
                       / "nvp-solvers-cpu.json").read_text())
    base.pop("$schema", None)
    for kind in ("physics", "linear_ar"):
        cfg = TrainConfig.from_dict({**base, "model": {**base["model"], "prior": kind}})
        assert cfg.model.prior == kind
    with pytest.raises(Exception, match="prior"):
        TrainConfig.from_dict({**base, "model": {**base["model"], "prior": "ar"}})


def test_a_linear_ar_checkpoint_restores_its_prior(tmp_path: Path) -> None:
    from atlasstore.nvp.checkpoint import _model_from_meta

    m, s, pr = _model()
    meta = {"model": {"config": CFG.to_dict(), "levels": [16], "n_in": 2, "shape": [16, 16],
                      "stats": {"16": [3.0, 1.0]}, "domains": ["a", "b"],
                      "prior": json.loads(json.dumps({d: p.to_dict() for d, p in pr.items()}))}}
    back = _model_from_meta(meta)
    assert back.cfg.prior == "linear_ar"
    nnx.update(back, nnx.state(m))
    x = {16: jnp.asarray(s[:, 1:3])}
    dom = jnp.asarray([0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(np.asarray(predict(back, x, dom).mean),
                               np.asarray(predict(m, x, dom).mean), rtol=1e-6)
    old = json.loads(json.dumps(meta))
    old["model"]["config"].pop("prior")  # a record without the option: the physics prior
    assert _model_from_meta(old).cfg.prior == "physics"
