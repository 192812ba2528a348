"""The fused per-step moments the store records (atlasstore.physics.moments) against NumPy's
own statistics, with and without missing cells, and where naive sums would cancel."""

from __future__ import annotations

import numpy as np
import pytest

from atlasstore.physics.moments import step_moments


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (300.0, 1e-3), (-1e6, 10.0)])
def test_per_step_moments_equal_numpy(offset: float, scale: float) -> None:
    rng = np.random.default_rng(0)
    v = (offset + scale * rng.standard_normal((5, 33, 47))).astype(np.float32)
    sm = step_moments(v)
    v64 = v.astype(np.float64)
    np.testing.assert_allclose(sm.mean, v64.mean(axis=(1, 2)), rtol=1e-12, atol=1e-12 * scale)
    # a temperature of 300 K +- 1 mK: the shift keeps the variance to float64's precision
    np.testing.assert_allclose(sm.variance, v64.var(axis=(1, 2)), rtol=1e-9)
    np.testing.assert_array_equal(sm.lo, v.min(axis=(1, 2)))
    np.testing.assert_array_equal(sm.hi, v.max(axis=(1, 2)))
    n, mean, m2, lo, hi = sm.combined()
    assert n == v.size and mean == pytest.approx(v64.mean(), rel=1e-12, abs=1e-12 * scale)
    assert m2 / n == pytest.approx(v64.var(), rel=1e-9)
    assert (lo, hi) == (float(v.min()), float(v.max()))


def test_missing_cells_are_left_out_and_an_empty_step_says_so() -> None:
    rng = np.random.default_rng(1)
    v = rng.gamma(2.0, 1.0, (3, 16, 16)).astype(np.float32)
    v[0, :4] = np.nan
    v[0, 5, 5] = np.nan
    v[2] = np.nan
    sm = step_moments(v)
    assert list(sm.n) == [256 - 65, 256, 0]
    assert sm.mean[0] == pytest.approx(np.nanmean(v[0].astype(np.float64)), rel=1e-12)
    assert sm.variance[0] == pytest.approx(np.nanvar(v[0].astype(np.float64)), rel=1e-9)
    assert sm.lo[0] == np.nanmin(v[0]) and sm.hi[1] == v[1].max()
    assert np.isnan(sm.mean[2]) and sm.variance[2] == 0.0 and sm.total[2] == 0.0
    n, mean, _, _, _ = sm.combined()
    assert n == 256 - 65 + 256
    assert mean == pytest.approx(np.nanmean(v.astype(np.float64)), rel=1e-12)


def test_a_long_block_in_chunks_equals_one_pass() -> None:
    """Steps are summed a few at a time (cache); the result equals the one-pass moments."""
    from atlasstore.physics import moments

    rng = np.random.default_rng(2)
    v = rng.gamma(2.0, 1.0, (10, 256, 256)).astype(np.float32)
    v[3, :5] = np.nan
    chunked = step_moments(v)
    assert 10 > moments.CHUNK_BYTES // (256 * 256 * 8)  # (the block really is cut)
    whole = moments._moments(v.reshape(10, -1))
    for f in ("n", "mean", "m2", "lo", "hi"):
        np.testing.assert_array_equal(getattr(chunked, f), getattr(whole, f))
