"""The NVP on data with missing cells (a land mask stored as NaN): the loss and the metrics are
over valid cells only (what a missing cell holds changes nothing), and a run trains and evaluates
end to end with finite losses, metrics and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from atlasstore.nvp.config import TrainConfig
from atlasstore.nvp.loss import nvp_loss
from atlasstore.nvp.metrics import read_metrics
from atlasstore.nvp.scores import metric_block, vrmse
from atlasstore.nvp.train import train
from atlasstore.store import AtlasStore

LAND = np.zeros((64, 64), bool)
LAND[:16, :16] = True
LAND[40:44, :] = True

TINY: dict[str, Any] = {
    "name": "tiny-missing",
    "data": {"batch_size": 2, "val_fraction": 0.3, "prefetch": 1, "workers": 1},
    "model": {"width": 4, "max_width": 8, "depth": 1, "blocks": 1, "groups": 2,
              "prior_fit_windows": 8},
    "train": {"max_steps": 3, "log_every": 1, "eval_every": 3, "patience": None},
    "eval": {"mc_samples": 2, "rollout_steps": 2, "n_plots": 1, "batch_size": 2,
             "fit_windows": 4},
}


def _diffusing(steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.gamma(2.0, 1.0, (64, 64))
    out = []
    for _ in range(steps):
        e = 0.5 * e + 0.125 * sum(np.roll(e, s, a) for s in (1, -1) for a in (0, 1))
        out.append(e + 0.05 * rng.gamma(2.0, 1.0, e.shape))
    return np.stack(out).astype(np.float32)


def _store(path: Path, seeds: list[int]) -> AtlasStore:
    st = AtlasStore.create(path)
    st.create_domain("sea")
    for i in seeds:
        e = _diffusing(5, i)
        e[:, LAND] = np.nan
        st.write_sequence("sea", f"s{i}", e, nan_is_missing=True)
    return st


def test_loss_and_vrmse_ignore_what_missing_cells_hold() -> None:
    rng = np.random.default_rng(0)
    pred, tgt, prev = (rng.gamma(2.0, 1.0, (2, 64, 64)).astype(np.float32) for _ in range(3))
    log_var = np.zeros_like(pred)
    mask = np.broadcast_to(~LAND, pred.shape).astype(np.float32)
    other = tgt.copy()
    other[:, LAND] = 1e6  # garbage where the data is missing
    a = nvp_loss(jnp.asarray(pred), jnp.asarray(log_var), jnp.asarray(tgt), jnp.asarray(prev),
                 mask=jnp.asarray(mask))[1]
    b = nvp_loss(jnp.asarray(pred), jnp.asarray(log_var), jnp.asarray(other), jnp.asarray(prev),
                 mask=jnp.asarray(mask))[1]
    for k in a:
        assert np.isclose(float(a[k]), float(b[k]), rtol=1e-5), k
    # VRMSE over the valid cells: the same number as over the valid cells alone
    v = np.asarray(vrmse(pred.astype(np.float64), tgt.astype(np.float64), mask=mask > 0))
    for i in range(2):
        p, t = pred[i][~LAND].astype(np.float64), tgt[i][~LAND].astype(np.float64)
        want = np.sqrt(np.mean(np.square(p - t)) / (np.var(t) + 1e-7))
        assert np.isclose(v[i], want, rtol=1e-6)
    # the evaluation's metrics take NaN in the target as missing
    nan_t = np.where(LAND, np.nan, tgt)
    m = metric_block(pred, np.ones_like(pred), nan_t, prev)
    assert np.isclose(m["vrmse"], v.mean(), rtol=1e-6)
    assert np.isfinite([m["mse"], m["nll"], m["crps"], m["coverage_90"]]).all()


@pytest.mark.slow
def test_train_and_evaluate_on_data_with_missing_cells(tmp_path: Path) -> None:
    from atlasstore.nvp.evaluate import evaluate_checkpoint

    st = _store(tmp_path / "train.zarr", [0, 1, 2, 3])
    _store(tmp_path / "heldout.zarr", [10, 11])
    result = train(TrainConfig.from_dict(TINY), store=st.location, out_dir=tmp_path / "run",
                   catalog=False)
    assert result.step == 3
    logged = [r for r in read_metrics(tmp_path / "run")]
    assert logged and all(np.isfinite(r["loss"]) for r in logged if "loss" in r), logged
    rep = evaluate_checkpoint(tmp_path / "run", store=str(tmp_path / "heldout.zarr"),
                              out_dir=tmp_path / "ev", plots=True)
    model = rep["one_step"]["overall"]["model"]
    assert all(model[k] is not None and np.isfinite(model[k])
               for k in ("vrmse", "mse", "nll", "crps", "coverage_90")), model
    assert all(np.isfinite(x) for x in rep["rollout"]["overall"]["model"])
    assert rep["data"]["held_out"] is True
    assert (tmp_path / "ev" / "sample_0.png").is_file()
