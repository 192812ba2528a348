"""Figures: one panel per training quantity with a sign-aware axis, percentile colour ranges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore.nvp.plots import (
    CURVE_PANELS,
    axis_scale,
    bars_figure,
    curves_figure,
    percentile_limits,
    plot_bars,
    plot_curves,
    plot_rollout,
    plot_sample,
    rollout_figure,
    sample_figure,
    symmetric_limit,
)

TITLES = dict(CURVE_PANELS)


def records() -> list[dict[str, Any]]:
    """A run whose NLL changes sign, whose entropy hinge is mostly 0 and whose other terms are
    positive, with a validation record every 5 steps."""
    out: list[dict[str, Any]] = []
    for s in range(1, 21):
        out.append({"split": "train", "step": s, "loss": 2.0 / s, "mse": 1.0 / s,
                    "conservation": 1e-3 / s, "entropy": 0.0 if s % 4 else 1e-4,
                    "nll": 1.5 - 0.2 * s, "lr": 1e-3, "grad_norm": 3.0 / s,
                    "steps_per_s": 2.0, "wait_fraction": 0.1})
        if s % 5 == 0:
            out.append({"split": "val", "step": s, "loss": 2.5 / s, "mse": 1.2 / s,
                        "conservation": 2e-3 / s, "entropy": 0.0, "nll": 1.0 - 0.1 * s,
                        "vrmse": 0.5, "persistence_vrmse": 0.6, "energy_fidelity": 0.5,
                        "monitor": "energy_fidelity"})
    return out


def test_axis_scale_follows_the_sign() -> None:
    assert axis_scale([1e-6, 1.0, 3e2]) == "log"
    assert axis_scale([1.0, 2.0]) == "linear"  # positive, but less than a decade
    assert axis_scale([0.0, 1.0]) == "linear"  # a zero has no logarithm
    assert axis_scale([-1.0, 2.0]) == "linear"  # a sign change
    assert axis_scale([-3.0, -1.0]) == "linear"
    assert axis_scale([float("nan"), 2.0, 40.0]) == "log"  # non-finite values are ignored
    assert axis_scale([]) == "linear"


def test_training_curves_one_panel_per_term_with_its_own_scale(tmp_path: Path) -> None:
    fig = curves_figure(records())
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    for key in ("loss", "mse", "conservation", "entropy", "nll", "lr", "grad_norm", "vrmse",
                "energy_fidelity"):
        assert TITLES[key] in axes, f"no panel for {key}"
    assert "throughput" in axes
    scales = {k: axes[TITLES[k]].get_yscale() for k in TITLES}
    assert scales["mse"] == scales["loss"] == scales["conservation"] == scales["grad_norm"] == "log"
    assert scales["lr"] == scales["vrmse"] == "linear"  # constant / within a decade
    assert scales["nll"] == "linear"  # changes sign: never a symlog that flips it
    assert scales["entropy"] == "linear"  # zeros
    assert all(ax.get_yscale() in ("log", "linear") for ax in fig.axes)
    labels = {ln.get_label() for ln in axes[TITLES["mse"]].get_lines()}
    assert labels == {"train mse", "val mse"}  # training and validation on one panel
    out = tmp_path / "curves.png"
    assert plot_curves(out, records())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    assert not plot_curves(tmp_path / "none.png", []) and not (tmp_path / "none.png").exists()


def test_sample_colour_ranges_are_percentiles_not_min_max(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 1.0, size=(64, 64))
    pred = truth + rng.normal(0.0, 0.1, size=truth.shape)
    prev = truth.copy()
    std = rng.uniform(0.05, 0.2, size=truth.shape)
    pred[0, :3] = 1e4  # a few extreme edge pixels
    std[-1, :2] = 50.0
    fig = sample_figure("t", prev, truth, pred, std)
    clim = {ax.get_title(): ax.images[0].get_clim() for ax in fig.axes if ax.images}

    both = np.concatenate([truth.ravel(), pred.ravel()])
    lo, hi = np.percentile(both, [1, 99])
    for name in ("input E_t", "truth E_t+1", "prediction (mean)"):
        assert clim[name] == pytest.approx((lo, hi))
        assert clim[name][1] < both.max() / 100  # not washed out by the 1e4 pixels
    err_lim = np.percentile(np.abs(pred - truth), 99)
    assert clim["error (pred - truth)"] == pytest.approx((-err_lim, err_lim))
    assert err_lim < 1.0 < np.abs(pred - truth).max()
    assert clim["uncertainty (total std)"] == pytest.approx(tuple(np.percentile(std, [1, 99])))
    assert clim["|error| / std"] == (0.0, 3.0)
    assert percentile_limits(truth, pred) == pytest.approx((lo, hi))
    assert symmetric_limit(np.zeros((4, 4))) == 1.0  # a perfect prediction still draws
    # a flat map draws in the middle of its range, not at its edge (where it reads as blank)
    assert percentile_limits(np.full((4, 4), 2.0)) == pytest.approx((1.9, 2.1))

    out = tmp_path / "sample.png"
    plot_sample(out, "t", prev, truth, pred, std)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_a_uniform_uncertainty_says_so_and_draws_mid_range() -> None:
    """An untrained variance head predicts one std everywhere: the panel names the value and
    draws it mid-colour (at the edge of its range it read as an empty panel)."""
    rng = np.random.default_rng(1)
    truth = rng.gamma(2.0, 1.0, size=(32, 32))
    fig = sample_figure("t", truth, truth, truth + 0.1, np.full(truth.shape, 1.95))
    clim = {ax.get_title(): ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert clim["uncertainty (total std): uniform 1.95"] == pytest.approx((1.8525, 2.0475))


def per_domain() -> dict[str, Any]:
    def b(v: float) -> dict[str, float]:
        return {"vrmse": v}
    return {"calm": {"model": b(0.010), "persistence": b(0.030), "diffusion": b(0.011),
                     "linear_ar": b(0.012)},
            "spin": {"model": b(0.91), "persistence": b(1.3), "diffusion": b(0.98),
                     "linear_ar": b(0.99)}}


def test_domain_bars_one_panel_per_domain_with_every_predictor(tmp_path: Path) -> None:
    fig = bars_figure(per_domain())
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    calm = next(ax for ax in axes if ax.get_title().startswith("calm"))
    heights = [p.get_height() for p in calm.patches]
    assert heights == pytest.approx([0.010, 0.030, 0.011, 0.012])
    assert [t.get_text() for t in calm.get_xticklabels()] == ["NVP", "persistence", "diffusion",
                                                             "linear AR"]
    assert "best baseline 0.0110" in calm.get_title()
    assert calm.get_ylim()[1] < 0.05  # its own scale, not the rotating domain's
    out = tmp_path / "bars.png"
    plot_bars(out, per_domain())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rollout_curves_per_domain(tmp_path: Path) -> None:
    ro = {"lead": [1, 2, 3], "per_domain": {
        d: {"rollouts": 2, "model": [0.1, 0.2, 0.3], "persistence": [0.5, 0.6, 0.7],
            "diffusion": [0.2, 0.3, 0.4], "linear_ar": [0.2, 0.3, 0.5]} for d in ("a", "b", "c", "e")}}
    fig = rollout_figure(ro)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [f"{d} (2 rollouts)" for d in "abce"]
    labels = {ln.get_label() for ln in axes[0].get_lines()}
    assert labels == {"NVP", "persistence", "diffusion", "linear AR"}
    out = tmp_path / "ro.png"
    plot_rollout(out, ro)
    assert out.stat().st_size > 1000
