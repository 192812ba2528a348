"""Property-based tests of atlasstore.physics.fields: the "Physical invariants" of DESIGN.md.

Maps are built from a drawn numpy seed (drawing 65k pixels element by element through
hypothesis would be far too slow), a drawn kind (smooth, heavy-tailed, sparse, a single hot
pixel, constant, all-zero where allowed) and a drawn overall scale, over every valid shape:
short side 64/128/256 (mostly 64 and 128 for speed), square or 2:3 in both orientations.

Conservation is asserted twice: the design's tolerance (5 %) and a tight 1e-5, because the
code aims for float rounding (float64 sums, renormalisation, float32 output).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from atlasstore.errors import EnergyMapError, ThermodynamicViolation
from atlasstore.physics import fields as physics

TIGHT = 1e-5  # what the code achieves in practice (float32 rounding), far below the 5 % design limit

# --------------------------------------------------------------------------- strategies

_SHORTS = st.sampled_from([64, 64, 64, 128, 128, 256])  # mostly small for speed, some 256
_ORIENT = st.sampled_from(["square", "tall", "wide"])


def _shape(short: int, orient: str) -> tuple[int, int]:
    long_ = short * 3 // 2
    return {"square": (short, short), "tall": (long_, short), "wide": (short, long_)}[orient]


def shapes(shorts=_SHORTS) -> st.SearchStrategy[tuple[int, int]]:
    return st.builds(_shape, shorts, _ORIENT)


KINDS = ("exponential", "lognormal", "sparse", "hot", "smooth", "constant")


def make_map(kind: str, shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "exponential":
        e = rng.exponential(1.0, shape)
    elif kind == "lognormal":
        e = rng.lognormal(0.0, 2.0, shape)
    elif kind == "sparse":
        e = rng.exponential(1.0, shape) * (rng.random(shape) < rng.uniform(0.001, 0.3))
        e.flat[rng.integers(e.size)] = 1.0  # never all zero
    elif kind == "hot":
        e = np.zeros(shape)
        e.flat[rng.integers(e.size)] = 1.0
    elif kind == "smooth":
        ny, nx = shape[-2:]
        y = np.arange(ny)[:, None] / ny
        x = np.arange(nx)[None, :] / nx
        ky, kx = rng.integers(1, 5, size=2)
        e = (1.05 + np.sin(2 * np.pi * (kx * x + rng.random()))) * (1.05 + np.cos(2 * np.pi * ky * y))
        e = np.broadcast_to(e, shape)
    elif kind == "constant":
        e = np.ones(shape)
    elif kind == "zero":
        e = np.zeros(shape)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return (e * scale).astype(np.float32)


@st.composite
def energy_maps(draw, shape_strategy=None, kinds=KINDS):
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = 10.0 ** draw(st.floats(-3, 6))
    return make_map(kind, shape, seed, scale)


def _assert_valid_energy(arr: np.ndarray) -> None:
    assert np.isfinite(arr).all(), "non-finite energy"
    assert (arr >= 0).all(), f"negative energy (min {arr.min()})"


def _fsum(a: np.ndarray) -> float:
    return math.fsum(np.asarray(a, dtype=np.float64).ravel())


# --------------------------------------------------------------------------- validate_energy

@given(energy_maps())
def test_valid_maps_pass_validation_unchanged(e):
    out = physics.validate_energy(e)
    assert out.dtype == e.dtype and out.shape == e.shape
    assert np.array_equal(out, e)


@pytest.mark.parametrize("bad, match", [
    (np.nan, r"non-finite values \(1 NaN, 0 inf\)"),
    (np.inf, r"non-finite values \(0 NaN, 1 inf\)"),
    (-np.inf, r"non-finite values \(0 NaN, 1 inf\)"),
    (-1e-3, r"1 negative values .*non-negative"),
])
@given(data=st.data())
@settings(max_examples=10)
def test_bad_values_refused_wherever_they_are(bad, match, data):
    e = data.draw(energy_maps(shapes(st.just(64))))
    iy = data.draw(st.integers(0, e.shape[0] - 1))
    ix = data.draw(st.integers(0, e.shape[1] - 1))
    e = e.copy()
    e[iy, ix] = bad
    with pytest.raises(EnergyMapError, match=match):
        physics.validate_energy(e)


@pytest.mark.parametrize("arr, match", [
    (np.ones((64, 64), dtype=np.int64), r"dtype int64 is not a floating-point type"),
    (np.ones((64, 64), dtype=np.int32), r"dtype int32 is not a floating-point type"),
    (np.ones((64, 64), dtype=bool), r"dtype bool is not a floating-point type"),
    (np.ones((64, 64), dtype=np.complex64), r"dtype complex64 is not a floating-point type"),
    (np.array(["a", "b"]), r"is not a floating-point type"),
    (np.zeros((0, 64), dtype=np.float32), r"empty array of shape \(0, 64\)"),
    (np.zeros((64, 0), dtype=np.float32), r"empty array"),
    (np.ones(64, dtype=np.float32), r"expected at least 2 dimensions .* shape \(64,\)"),
    (np.float32(1.0), r"expected at least 2 dimensions .* shape \(\)"),
])
def test_bad_arrays_refused_with_named_problem(arr, match):
    with pytest.raises(EnergyMapError, match=match):
        physics.validate_energy(arr)


def test_validation_error_names_the_map():
    with pytest.raises(EnergyMapError, match=r"^base map: .*negative"):
        physics.validate_energy(-np.ones((64, 64)), "base map")


def test_energy_map_error_is_a_value_error():
    assert issubclass(EnergyMapError, ValueError)
    assert issubclass(ThermodynamicViolation, ValueError)


# --------------------------------------------------------------------------- validate_shape

@given(shapes())
def test_valid_shapes_accepted(shape):
    assert physics.validate_shape(shape) == shape
    assert physics.validate_shape(np.zeros(shape, np.float32)) == shape
    assert physics.scale_of(shape) == min(shape)


@given(shapes(), st.lists(st.integers(1, 4), min_size=1, max_size=2))
@settings(max_examples=20)
def test_validate_shape_checks_last_two_axes_of_a_batch(shape, lead):
    # documented semantics: a stack (..., y, x) is accepted, its last two axes are the map
    assert physics.validate_shape((*lead, *shape)) == shape


def _is_valid(ny: int, nx: int) -> bool:
    short, long_ = min(ny, nx), max(ny, nx)
    return short in (64, 128, 256) and (long_ == short or 2 * long_ == 3 * short)


@given(st.integers(0, 600), st.integers(0, 600))
def test_random_bad_shapes_refused(ny, nx):
    assume(not _is_valid(ny, nx))
    with pytest.raises(EnergyMapError, match=r"is not one of \[64, 128, 256\]|neither square nor 2:3"):
        physics.validate_shape((ny, nx))


@given(st.sampled_from([64, 128, 256]), st.integers(1, 800))
def test_bad_aspect_with_valid_short_side_refused(short, long_):
    assume(long_ > short and 2 * long_ != 3 * short)
    for shape in ((short, long_), (long_, short)):
        with pytest.raises(EnergyMapError, match=r"neither square nor 2:3"):
            physics.validate_shape(shape)


@pytest.mark.parametrize("shape, match", [
    ((100, 100), r"short side 100 \(shape 100x100\) is not one of \[64, 128, 256\]"),
    ((64, 65), r"aspect 64x65 is neither square nor 2:3"),
    ((64, 128), r"aspect 64x128 is neither square nor 2:3"),
    ((128, 64), r"aspect 128x64 is neither square nor 2:3"),
    ((256, 512), r"neither square nor 2:3"),
    ((512, 512), r"short side 512"),
    ((32, 32), r"short side 32"),
    ((96, 96), r"short side 96"),
    ((0, 0), r"short side 0"),
    ((64,), r"expected at least 2 dimensions"),
    ((), r"expected at least 2 dimensions"),
    ((3, 100, 100), r"short side 100"),
])
def test_named_bad_shapes_refused(shape, match):
    with pytest.raises(EnergyMapError, match=match):
        physics.validate_shape(shape)


# --------------------------------------------------------------------------- entropy

@given(shapes())
@settings(max_examples=15)
def test_entropy_of_all_zero_map_is_zero(shape):
    h = physics.entropy(np.zeros(shape, np.float32))
    assert h == 0.0 and not math.isnan(h)


@given(shapes(), st.floats(1e-6, 1e6))
@settings(max_examples=25)
def test_entropy_of_uniform_map_is_log_n(shape, c):
    h = physics.entropy(np.full(shape, c, np.float32))
    assert h == pytest.approx(math.log(shape[0] * shape[1]), rel=1e-12)


@given(shapes(), st.integers(1, 64), st.integers(0, 2**32 - 1), st.floats(1e-6, 1e6))
@settings(max_examples=30)
def test_entropy_of_k_equal_hot_pixels_is_log_k(shape, k, seed, c):
    e = np.zeros(shape, np.float32)
    idx = np.random.default_rng(seed).choice(e.size, size=k, replace=False)
    e.flat[idx] = c
    h = physics.entropy(e)
    if k == 1:
        assert h == 0.0  # a single hot pixel: no uncertainty
    assert h == pytest.approx(math.log(k), rel=1e-12, abs=1e-12)


@given(energy_maps())
def test_entropy_matches_independent_reference_and_bounds(e):
    h = physics.entropy(e)
    assert isinstance(h, float)
    ref = scipy.stats.entropy(e.astype(np.float64).ravel())
    assert h == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert 0.0 <= h <= math.log(e.size) + 1e-9


@given(energy_maps(kinds=("sparse", "hot", "exponential")))
def test_entropy_is_zero_safe(e):
    # zero pixels contribute nothing: H equals the entropy of the non-zero values alone
    nz = e[e > 0].reshape(1, -1)
    assert physics.entropy(e) == pytest.approx(physics.entropy(nz), rel=1e-12, abs=1e-15)
    assert math.isfinite(physics.entropy(e))


@given(energy_maps(), st.floats(1e-6, 1e6), st.integers(-20, 20))
def test_entropy_is_scale_invariant(e, c, k):
    e64 = e.astype(np.float64)
    assert physics.entropy(e64 * c) == pytest.approx(physics.entropy(e64), abs=1e-9)
    assert physics.entropy(e64 * 2.0**k) == physics.entropy(e64)  # powers of two scale exactly


@given(st.data(), shapes(st.just(64)), st.integers(1, 3), st.integers(1, 3))
@settings(max_examples=15)
def test_entropy_over_leading_axes_matches_per_map(data, shape, a, b):
    maps = [data.draw(energy_maps(st.just(shape), kinds=(*KINDS, "zero"))) for _ in range(a * b)]
    stack = np.stack(maps).reshape(a, b, *shape)
    h = physics.entropy(stack)
    assert isinstance(h, np.ndarray) and h.shape == (a, b)
    expected = np.array([physics.entropy(m) for m in maps]).reshape(a, b)
    np.testing.assert_allclose(h, expected, rtol=1e-12, atol=1e-15)


@given(energy_maps())
def test_map_stats_and_total_energy_consistent(e):
    s = physics.map_stats(e)
    e64 = e.astype(np.float64)
    assert s["sum"] == pytest.approx(_fsum(e), rel=1e-12)
    assert physics.total_energy(e) == pytest.approx(s["sum"], rel=1e-12)
    assert s["mean"] == pytest.approx(s["sum"] / e.size, rel=1e-12)
    assert s["variance"] == pytest.approx(float(np.mean((e64 - e64.mean()) ** 2)), rel=1e-9, abs=1e-300)
    assert s["min"] == float(e.min()) and s["max"] == float(e.max())
    assert s["entropy"] == physics.entropy(e)


# --------------------------------------------------------------------------- gradients

@given(shapes(), st.integers(-8, 8), st.integers(-8, 8), st.sampled_from([np.float32, np.float64]))
def test_linear_ramp_has_exact_constant_gradient_everywhere(shape, a, b, dtype):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    e = (a * xx + b * yy + 8 * (nx + ny)).astype(dtype)  # integer valued, non-negative, exact
    gx, gy = physics.gradients(e)
    assert gx.shape == gy.shape == shape
    assert gx.dtype == gy.dtype == dtype
    assert (gx == a).all(), "d/dx of a*x + b*y must be a in the interior and at the edges"
    assert (gy == b).all(), "d/dy of a*x + b*y must be b in the interior and at the edges"


@given(shapes(), st.floats(0.01, 100))
@settings(max_examples=20)
def test_gradient_spacing_divides(shape, h):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    e = (3 * xx + 2 * yy).astype(np.float64)
    gx, gy = physics.gradients(e, spacing=h)
    np.testing.assert_allclose(gx, 3 / h, rtol=1e-12)
    np.testing.assert_allclose(gy, 2 / h, rtol=1e-12)


@pytest.mark.parametrize("shape", [(64, 64), (64, 96), (96, 64)])
def test_gradient_stencil_central_inside_one_sided_at_edges(shape):
    """Documents the stencil: (E[i+1]-E[i-1])/2 inside, E[1]-E[0] and E[n-1]-E[n-2] at edges."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    gx, _ = physics.gradients(xx**2)
    assert (gx[:, 1:-1] == 2 * xx[:, 1:-1]).all()  # central difference is exact for x^2
    assert (gx[:, 0] == 1.0).all()  # forward difference: 1^2 - 0^2
    assert (gx[:, -1] == 2 * nx - 3).all()  # backward: (n-1)^2 - (n-2)^2
    _, gy = physics.gradients(yy**2)
    assert (gy[1:-1] == 2 * yy[1:-1]).all()
    assert (gy[0] == 1.0).all() and (gy[-1] == 2 * ny - 3).all()
    # no periodic wrap-around: a single hot pixel at the left edge does not reach the right edge
    e = np.zeros(shape)
    e[:, 0] = 1.0
    gx, _ = physics.gradients(e)
    assert (gx[:, -1] == 0).all() and (gx[:, 0] == -1).all() and (gx[:, 1] == -0.5).all()


@given(energy_maps(), st.integers(1, 3))
@settings(max_examples=25)
def test_gradients_finite_dtype_preserving_and_batched(e, t):
    gx, gy = physics.gradients(e)
    assert gx.dtype == gy.dtype == np.float32 and gx.shape == e.shape
    assert np.isfinite(gx).all() and np.isfinite(gy).all()
    stack = np.stack([e * np.float32(i + 1) for i in range(t)])
    sx, sy = physics.gradients(stack)
    assert sx.shape == stack.shape
    np.testing.assert_allclose(sx[0], gx, rtol=1e-6, atol=0)
    np.testing.assert_allclose(sy[0], gy, rtol=1e-6, atol=0)
    mag = physics.gradient_magnitude(gx, gy)
    np.testing.assert_allclose(mag, np.sqrt(gx.astype(np.float64) ** 2 + gy.astype(np.float64) ** 2),
                               rtol=1e-6)
    assert (mag >= 0).all()


def test_gradient_magnitude_known_values():
    assert physics.gradient_magnitude(np.array([3.0]), np.array([4.0]))[0] == 5.0


# --------------------------------------------------------------------------- pyramids

@pytest.mark.parametrize("shape, levels", [
    ((256, 256), (256, 128, 64)), ((256, 384), (256, 128, 64)), ((384, 256), (256, 128, 64)),
    ((128, 128), (128, 64)), ((128, 192), (128, 64)), ((192, 128), (128, 64)),
    ((64, 64), (64,)), ((64, 96), (64,)), ((96, 64), (64,)),
])
def test_levels_for(shape, levels):
    assert physics.levels_for(shape) == levels


@pytest.mark.parametrize("shape, expected", [
    ((256, 256), {256: (256, 256), 128: (128, 128), 64: (64, 64)}),
    ((256, 384), {256: (256, 384), 128: (128, 192), 64: (64, 96)}),
    ((384, 256), {256: (384, 256), 128: (192, 128), 64: (96, 64)}),
    ((128, 192), {128: (128, 192), 64: (64, 96)}),
])
def test_pyramid_level_shapes(shape, expected):
    e = make_map("exponential", shape, 0)
    pyr = physics.pyramid(e)
    assert {lvl: a.shape for lvl, a in pyr.items()} == expected
    assert list(pyr) == list(expected)  # finest first
    for lvl, a in pyr.items():
        assert physics.level_shape(shape, lvl) == expected[lvl]
        assert a.dtype == np.float32


@given(energy_maps(shapes(st.sampled_from([128, 128, 256]))))
def test_every_pyramid_level_conserves_energy(e):
    base = _fsum(e)
    pyr = physics.pyramid(e)
    assert list(pyr) == list(physics.levels_for(e.shape))
    for lvl, a in pyr.items():
        _assert_valid_energy(a)
        rel = abs(_fsum(a) - base) / base
        assert rel < physics.CONSERVATION_TOLERANCE
        assert rel < TIGHT, f"level {lvl}: relative error {rel:.2e} (aims for float rounding)"


@given(shapes(st.sampled_from([128, 256])), st.integers(0, 2**32 - 1), st.data())
@settings(max_examples=30)
def test_downsample_is_a_block_sum(shape, seed, data):
    # integer-valued pixels: block sums are exact, so renormalisation must change nothing
    e = np.random.default_rng(seed).integers(0, 16, size=shape).astype(np.float32)
    level = data.draw(st.sampled_from([lv for lv in physics.levels_for(shape) if lv < min(shape)]))
    f = min(shape) // level
    expected = sum(e[i::f, j::f].astype(np.float64) for i in range(f) for j in range(f))
    out = physics.downsample(e, level)
    assert out.shape == expected.shape
    assert np.array_equal(out, expected.astype(np.float32))
    # a 2x2 block's sum, spelled out once
    if f == 2:
        assert out[0, 0] == e[0, 0] + e[0, 1] + e[1, 0] + e[1, 1]


@given(energy_maps(shapes(st.just(128))), st.integers(1, 3))
@settings(max_examples=20)
def test_pyramid_of_a_stack_conserves_each_frame(e, t):
    stack = np.stack([e * np.float32(i + 1) for i in range(t)])
    pyr = physics.pyramid(stack)
    for a in pyr.values():
        assert a.shape[0] == t
        for i in range(t):
            rel = abs(_fsum(a[i]) - _fsum(stack[i])) / _fsum(stack[i])
            assert rel < TIGHT


def test_downsample_of_zero_map_is_zero_and_full_level_is_a_copy():
    z = np.zeros((256, 384), np.float32)
    assert (physics.downsample(z, 64) == 0).all()
    e = make_map("exponential", (128, 128), 1)
    same = physics.downsample(e, 128)
    assert np.array_equal(same, e) and same is not e


@pytest.mark.parametrize("shape, level", [
    ((256, 256), 32), ((256, 256), 512), ((256, 256), 100), ((256, 256), 0), ((256, 256), -128),
    ((128, 128), 256), ((64, 96), 128), ((128, 192), 256),
])
def test_unreachable_level_refused(shape, level):
    e = make_map("exponential", shape, 0)
    with pytest.raises(EnergyMapError, match=rf"level {level} is not reachable"):
        physics.downsample(e, level)
    with pytest.raises(EnergyMapError, match=r"is not reachable"):
        physics.pyramid(e, (level,))
    with pytest.raises(EnergyMapError, match=r"is not reachable"):
        physics.level_shape(shape, level)


def test_float_level_refused_clearly():
    with pytest.raises(EnergyMapError, match="level"):
        physics.downsample(np.ones((256, 256), np.float32), 128.0)


def test_pyramid_refuses_bad_maps():
    with pytest.raises(EnergyMapError, match="short side 100"):
        physics.pyramid(np.ones((100, 100), np.float32))
    with pytest.raises(EnergyMapError, match="NaN"):
        physics.pyramid(np.full((64, 64), np.nan, np.float32))


@given(energy_maps(shapes(st.sampled_from([64, 128, 256]))))
@settings(max_examples=25)
def test_derive_levels_energy_and_gradients(e):
    out = physics.derive_levels(e)
    assert list(out) == list(physics.levels_for(e.shape))
    for lvl, f in out.items():
        assert f.energy.shape == f.grad_x.shape == f.grad_y.shape == physics.level_shape(e.shape, lvl)
        assert f.energy.dtype == f.grad_x.dtype == f.grad_y.dtype == np.float32
        _assert_valid_energy(f.energy)
        assert np.isfinite(f.grad_x).all() and np.isfinite(f.grad_y).all()
        gx, gy = physics.gradients(f.energy)
        assert np.array_equal(gx, f.grad_x) and np.array_equal(gy, f.grad_y)
        assert set(f.as_dict()) == {"energy", "grad_x", "grad_y"}


# --------------------------------------------------------------------------- conservation checks

def test_thermodynamic_violation_carries_numbers():
    exc = ThermodynamicViolation("energy_conservation", 0.125, 0.05, 4096.0, 4608.0, "step 3")
    assert (exc.kind, exc.measured, exc.limit, exc.before, exc.after, exc.context) == (
        "energy_conservation", 0.125, 0.05, 4096.0, 4608.0, "step 3")
    msg = str(exc)
    for part in ("step 3", "4096", "4608", "1.250e-01", "5.000e-02"):
        assert part in msg
    exc = ThermodynamicViolation("entropy_decrease", -0.25, 0.01, 8.0, 7.75)
    msg = str(exc)
    assert exc.kind == "entropy_decrease"
    for part in ("entropy decreased", "8.000000", "7.750000", "-2.500e-01", "1.000e-02"):
        assert part in msg


@given(energy_maps(), st.floats(1e-4, 0.5), st.floats(0.0, 5.0), st.floats(0.01, 100), st.booleans())
def test_check_energy_conservation(e, tol, k, factor, negative):
    assume(not 0.9 < k < 1.1)  # keep clear of the boundary, where float32 rounding decides
    d = -k * tol if negative else k * tol
    assume(1 + d > 0)
    after = (e.astype(np.float64) * factor * (1 + d)).astype(np.float32)
    before_sum = _fsum(e) * factor
    if k < 1:
        err = physics.check_energy_conservation(e, after, tol, factor)
        assert err == pytest.approx(abs(d), abs=1e-6)
    else:
        with pytest.raises(ThermodynamicViolation) as info:
            physics.check_energy_conservation(e, after, tol, factor, context="unit")
        exc = info.value
        assert exc.kind == "energy_conservation"
        assert exc.measured == pytest.approx(abs(d), abs=1e-6) and exc.measured >= tol
        assert exc.limit == tol
        assert exc.before == pytest.approx(before_sum, rel=1e-12)
        assert exc.after == pytest.approx(_fsum(after), rel=1e-12)
        assert f"{exc.measured:.3e}" in str(exc) and f"{tol:.3e}" in str(exc) and "(unit)" in str(exc)


@given(energy_maps(), st.floats(0.0, 0.2))
def test_predecessor_validate_energy_conservation(e, d):
    assume(abs(d - 0.05) > 0.005)
    after = (e.astype(np.float64) * (1 + d)).astype(np.float32)
    assert physics.validate_energy_conservation(e, after) is (d < 0.05)
    assert physics.validate_energy_conservation(e, e) is True
    assert physics.validate_energy_conservation(e, after, tolerance=1.0) is True


def test_relative_energy_error_edge_cases():
    z = np.zeros((64, 64), np.float32)
    one = np.ones((64, 64), np.float32)
    assert physics.relative_energy_error(z, z) == 0.0
    assert physics.relative_energy_error(z, one) == math.inf
    assert physics.relative_energy_error(one, 2 * one, factor=2.0) == 0.0
    assert physics.relative_energy_error(one, 3 * one) == 2.0


def _box_blur(e: np.ndarray) -> np.ndarray:
    """A doubly stochastic periodic 3x3 mean: cannot decrease entropy (independent of synth)."""
    e64 = e.astype(np.float64)
    return sum(np.roll(e64, (i, j), axis=(0, 1)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9.0


@given(energy_maps(kinds=("exponential", "lognormal", "sparse", "hot")))
def test_check_entropy_increase_and_predecessor_api(e):
    smooth = _box_blur(e)
    h0, h1 = physics.entropy(e), physics.entropy(smooth)
    assert h1 > h0  # these kinds are never already flat
    assert physics.check_entropy_increase(e, smooth) == pytest.approx(h1 - h0, abs=1e-12)
    assert physics.validate_entropy_increase(e, smooth) is True
    assert physics.validate_entropy_increase(smooth, e) is False
    assert physics.validate_entropy_increase(smooth, e, tolerance=(h1 - h0) * 1.01 + 1e-12) is True
    with pytest.raises(ThermodynamicViolation) as info:
        physics.check_entropy_increase(smooth, e, context="reverse")
    exc = info.value
    assert exc.kind == "entropy_decrease"
    assert exc.measured == pytest.approx(h0 - h1, abs=1e-12) and exc.measured < 0
    assert exc.before == pytest.approx(h1) and exc.after == pytest.approx(h0)
    assert "(reverse)" in str(exc) and f"{exc.measured:+.3e}" in str(exc)
