"""Property-based tests of atlasstore.physics.synth: patterns, perturbations, sequences, presets.

Every "Physical invariant" of DESIGN.md is held over random valid shapes (short side 64/128/256,
mostly 64 and 128 for speed; square or 2:3 both ways), seeds and parameters. Conservation is
asserted against the design's 5 % and against a tight 1e-5: the code renormalises in float64, so
in practice it reaches float32 rounding, and a regression to "merely within 5 %" should show.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as MetaSchemaError

from atlasstore.errors import EnergyMapError, SchemaError, ThermodynamicViolation
from atlasstore.io.schemas import schema_dir, validate
from atlasstore.physics import fields as physics
from atlasstore.physics import synth

TIGHT = 1e-5
ENTROPY_TOL = 1e-9  # nats: float rounding allowance for "blur does not decrease entropy"

# --------------------------------------------------------------------------- strategies

_SHORTS = st.sampled_from([64, 64, 64, 128, 128, 256])


def _shape(short: int, orient: str) -> tuple[int, int]:
    long_ = short * 3 // 2
    return {"square": (short, short), "tall": (long_, short), "wide": (short, long_)}[orient]


def shapes(shorts=_SHORTS):
    return st.builds(_shape, shorts, st.sampled_from(["square", "tall", "wide"]))


small_shapes = shapes(st.sampled_from([64, 64, 128]))
seeds = st.integers(0, 2**63 - 1)


ALL_KINDS = (*synth.PATTERNS, "sparse", "hot", "lognormal")
#: Without a single hot pixel: rotation loses such a map entirely when the pixel sits in a corner
#: (see test_rotation_keeps_energy_of_a_hot_pixel_in_a_corner); everything else is held for all kinds.
DENSE_KINDS = (*synth.PATTERNS, "sparse", "lognormal")


@st.composite
def energy_maps(draw, shape_strategy=None, kinds=ALL_KINDS):
    """Synthetic patterns (what the store holds) plus harsher maps: sparse, single hot pixel,
    heavy-tailed; times a random overall scale."""
    shape = draw(shape_strategy if shape_strategy is not None else shapes())
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = np.float32(10.0 ** draw(st.floats(-3, 5)))
    if kind in synth.PATTERNS:
        e = synth.make_pattern(kind, shape, seed)
    else:
        rng = np.random.default_rng(seed)
        if kind == "sparse":
            e = rng.exponential(1.0, shape) * (rng.random(shape) < 0.05)
            e.flat[rng.integers(e.size)] = 1.0
        elif kind == "hot":
            e = np.zeros(shape)
            e.flat[rng.integers(e.size)] = 1.0
        else:
            e = rng.lognormal(0.0, 2.0, shape)
        e = e.astype(np.float32)
    return e * scale


@st.composite
def config_dicts(draw, allow_scaling=True, allow_rotation=True):
    d = {}
    if allow_rotation and draw(st.booleans()):
        d["rotation"] = {"max_angle": draw(st.floats(0.5, 180))}
    if draw(st.booleans()):
        d["translation"] = {"max_shift": draw(st.integers(1, 40))}
    if draw(st.booleans()):
        d["gaussian_noise"] = {"sigma": draw(st.floats(0.01, 2.0))}
    if draw(st.booleans()):
        d["thermal_blur"] = {"sigma": draw(st.floats(0.1, 8.0))}
    if allow_scaling and draw(st.booleans()):
        lo = draw(st.floats(0.25, 4.0))
        d["energy_scaling"] = {"min": lo, "max": lo * draw(st.floats(1.0, 2.0))}
    return d


def _assert_valid_energy(arr: np.ndarray) -> None:
    assert np.isfinite(arr).all(), "non-finite energy"
    assert (arr >= 0).all(), f"negative energy (min {arr.min()})"


def _fsum(a: np.ndarray) -> float:
    return math.fsum(np.asarray(a, dtype=np.float64).ravel())


def _rel(before: np.ndarray, after: np.ndarray, factor: float = 1.0) -> float:
    b = _fsum(before) * factor
    return abs(_fsum(after) - b) / b


# --------------------------------------------------------------------------- base patterns

@given(st.sampled_from(list(synth.PATTERNS)), shapes(), seeds)
@settings(max_examples=40)
def test_patterns_are_valid_energy_maps_with_mean_one(name, shape, seed):
    e = synth.make_pattern(name, shape, seed)
    assert e.shape == shape and e.dtype == np.float32
    _assert_valid_energy(e)
    assert e.max() > 0
    assert _fsum(e) / e.size == pytest.approx(1.0, rel=TIGHT)


@given(st.sampled_from(list(synth.PATTERNS)), small_shapes, seeds, seeds)
@settings(max_examples=30)
def test_patterns_deterministic_per_seed(name, shape, s1, s2):
    a = synth.make_pattern(name, shape, s1)
    assert np.array_equal(a, synth.make_pattern(name, shape, s1))
    assert np.array_equal(a, synth.PATTERNS[name](shape, s1))
    if s1 != s2:
        assert not np.array_equal(a, synth.make_pattern(name, shape, s2))


@pytest.mark.parametrize("name", list(synth.PATTERNS))
def test_pattern_seedsequence_reused_gives_same_map_and_is_not_mutated(name):
    ss = np.random.SeedSequence(1234, spawn_key=(7,))
    state = ss.generate_state(4).copy()
    a = synth.make_pattern(name, (64, 96), ss)
    b = synth.make_pattern(name, (64, 96), ss)
    assert np.array_equal(a, b)
    assert ss.n_children_spawned == 0 and np.array_equal(ss.generate_state(4), state)


@pytest.mark.parametrize("name", [None, "chaos", "Turbulent", "", ["vortex"]])
def test_unknown_pattern_refused(name):
    with pytest.raises(ValueError, match=r"unknown pattern .*; known: turbulent, laminar, vortex, random"):
        synth.make_pattern(name, (64, 64))


@given(st.sampled_from(list(synth.PATTERNS)), st.integers(1, 600), st.integers(1, 600))
@settings(max_examples=40)
def test_patterns_refuse_bad_shapes(name, ny, nx):
    short, long_ = min(ny, nx), max(ny, nx)
    assume(not (short in (64, 128, 256) and (long_ == short or 2 * long_ == 3 * short)))
    with pytest.raises(EnergyMapError, match=r"short side|neither square nor 2:3"):
        synth.make_pattern(name, (ny, nx))


@pytest.mark.parametrize("shape", [(100, 100), (64, 65), (64, 128), (64,)])
def test_patterns_refuse_named_bad_shapes(shape):
    with pytest.raises(EnergyMapError, match=r"short side|neither square nor 2:3|at least 2 dimensions"):
        synth.make_pattern("turbulent", shape)


def test_pattern_with_batch_shape_is_refused_or_honoured():
    try:
        e = synth.make_pattern("random", (3, 64, 64), 0)
    except (ValueError, TypeError):
        return
    assert e.shape == (3, 64, 64)


# --------------------------------------------------------------------------- conserving perturbations

@given(energy_maps(kinds=DENSE_KINDS), st.floats(-720, 720))
def test_rotation_conserves_energy(e, angle):
    out = synth.apply_rotation(e, angle)
    assert out.shape == e.shape and out.dtype == e.dtype
    _assert_valid_energy(out)
    rel = _rel(e, out)
    assert rel < physics.CONSERVATION_TOLERANCE and rel < TIGHT


@given(energy_maps(), st.integers(-8, 8))
@settings(max_examples=30)
def test_rotation_by_right_angles_is_an_exact_permutation(e, k):
    out = synth.apply_rotation(e, 90.0 * k)
    _assert_valid_energy(out)
    if e.shape[0] == e.shape[1] or k % 2 == 0:
        # counter-clockwise in the displayed (row 0 at the top) sense: np.rot90 with k
        assert np.array_equal(out, np.rot90(e, k))
        assert _fsum(out) == _fsum(e)


@pytest.mark.parametrize("shape, pixel, angle", [
    ((64, 64), (0, 0), 15.0), ((64, 64), (0, 0), 45.0), ((64, 64), (63, 63), 30.0),
    ((256, 256), (2, 250), 45.0), ((64, 96), (0, 95), 20.0),
])
def test_rotation_keeps_energy_of_a_hot_pixel_in_a_corner(shape, pixel, angle):
    e = np.zeros(shape, np.float32)
    e[pixel] = 1.0
    out = synth.apply_rotation(e, angle)
    assert _rel(e, out) < physics.CONSERVATION_TOLERANCE


def test_rotation_sequence_of_a_corner_hot_pixel():
    e = np.zeros((64, 64), np.float32)
    e[0, 0] = 1.0
    seq, _ = synth.generate_sequence(e, 3, {"rotation": {"max_angle": 45.0}}, 0)
    assert all(_rel(e, seq[t]) < TIGHT for t in range(3))


@given(energy_maps(), st.floats(1e-3, 2.0), seeds)
def test_gaussian_noise_conserves_energy(e, sigma, seed):
    out = synth.apply_gaussian_noise(e, sigma, seed)
    assert out.shape == e.shape and out.dtype == e.dtype
    _assert_valid_energy(out)
    rel = _rel(e, out)
    assert rel < physics.CONSERVATION_TOLERANCE and rel < TIGHT
    assert np.array_equal(out, synth.apply_gaussian_noise(e, sigma, seed))  # deterministic per seed


@given(energy_maps(shapes(st.just(64))), st.floats(0.05, 1.0), seeds, seeds)
@settings(max_examples=20)
def test_gaussian_noise_differs_between_seeds(e, sigma, s1, s2):
    assume(s1 != s2)
    assert not np.array_equal(synth.apply_gaussian_noise(e, sigma, s1),
                              synth.apply_gaussian_noise(e, sigma, s2))


@given(energy_maps(), st.floats(1e-3, 32.0))
def test_thermal_blur_conserves_energy_and_does_not_decrease_entropy(e, sigma):
    out = synth.apply_thermal_blur(e, sigma)
    assert out.shape == e.shape and out.dtype == e.dtype
    _assert_valid_energy(out)
    rel = _rel(e, out)
    assert rel < physics.CONSERVATION_TOLERANCE and rel < TIGHT
    dh = physics.entropy(out) - physics.entropy(e)
    assert dh >= -ENTROPY_TOL, f"blur sigma={sigma} decreased entropy by {-dh:.3e} nats"
    assert physics.validate_entropy_increase(e, out, tolerance=ENTROPY_TOL)


def test_thermal_blur_spreads_a_hot_pixel():
    e = np.zeros((64, 64), np.float32)
    e[10, 10] = 1.0
    out = synth.apply_thermal_blur(e, 2.0)
    assert physics.entropy(out) > 2.0 and out[10, 10] < 0.1 and out.argmax() == 10 * 64 + 10


@given(energy_maps(), st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_translation_is_an_exact_permutation(e, sx, sy):
    out = synth.apply_translation(e, sx, sy)
    assert out.shape == e.shape and out.dtype == e.dtype
    assert np.array_equal(out, np.roll(e, (sy, sx), axis=(0, 1)))
    assert np.array_equal(np.sort(out, axis=None), np.sort(e, axis=None))  # same values, moved
    assert _fsum(out) == _fsum(e)  # exactly rounded sums: bit-identical
    assert physics.relative_energy_error(e, out) < 1e-12


@given(energy_maps(), st.floats(1e-3, 1e3))
def test_energy_scaling_multiplies_total(e, s):
    out = synth.apply_energy_scaling(e, s)
    assert out.shape == e.shape and out.dtype == e.dtype
    _assert_valid_energy(out)
    assert _fsum(out) / _fsum(e) == pytest.approx(s, rel=1e-6)
    assert physics.check_energy_conservation(e, out, tolerance=1e-6, factor=s) < 1e-6


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_energy_scaling_overflow_refused_for_float32():
    e = synth.make_pattern("turbulent", (64, 64), 0)
    with pytest.raises(ValueError, match="overflows"):
        out = synth.apply_energy_scaling(e, 1e39)
        _assert_valid_energy(out)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_gaussian_noise_output_finite_near_float32_max():
    e = np.full((64, 64), 3e38, np.float32)
    try:
        out = synth.apply_gaussian_noise(e, 0.5, 0)
    except ValueError:
        return
    _assert_valid_energy(out)


@given(energy_maps(shapes(st.just(64))), st.sampled_from(["rotation", "translation", "gaussian_noise",
                                                          "thermal_blur", "energy_scaling"]),
       st.integers(0, 2**32 - 1))
@settings(max_examples=30)
def test_apply_perturbation_dispatches_like_direct_call(e, kind, seed):
    rng = np.random.default_rng(seed)
    op, direct = {
        "rotation": ({"kind": "rotation", "angle": 33.0}, lambda: synth.apply_rotation(e, 33.0)),
        "translation": ({"kind": "translation", "shift_x": 3, "shift_y": -5},
                        lambda: synth.apply_translation(e, 3, -5)),
        "gaussian_noise": ({"kind": "gaussian_noise", "sigma": 0.2, "seed": seed},
                           lambda: synth.apply_gaussian_noise(e, 0.2, seed)),
        "thermal_blur": ({"kind": "thermal_blur", "sigma": 1.5}, lambda: synth.apply_thermal_blur(e, 1.5)),
        "energy_scaling": ({"kind": "energy_scaling", "scale": float(rng.uniform(0.5, 2))}, None),
    }[kind]
    if direct is None:
        direct = lambda: synth.apply_energy_scaling(e, op["scale"])  # noqa: E731
    assert np.array_equal(synth.apply_perturbation(e, op), direct())


# --------------------------------------------------------------------------- bad perturbation input

_E = synth.make_pattern("vortex", (64, 64), 0)


@pytest.mark.parametrize("fn", [
    lambda e: synth.apply_rotation(e, 10.0),
    lambda e: synth.apply_translation(e, 1, 1),
    lambda e: synth.apply_gaussian_noise(e, 0.1),
    lambda e: synth.apply_thermal_blur(e, 1.0),
    lambda e: synth.apply_energy_scaling(e, 2.0),
], ids=["rotation", "translation", "noise", "blur", "scaling"])
@pytest.mark.parametrize("bad, match", [
    ("nan", r"non-finite values \(1 NaN"),
    ("inf", r"non-finite values \(0 NaN, 1 inf"),
    ("-inf", r"non-finite values \(0 NaN, 1 inf"),
    ("negative", r"negative values"),
    ("int", r"dtype int64 is not a floating-point type"),
    ("empty", r"empty array"),
    ("1d", r"expected at least 2 dimensions"),
])
def test_perturbations_refuse_bad_maps(fn, bad, match):
    e = _E.copy()
    if bad in ("nan", "inf", "-inf"):
        e[5, 7] = float(bad)
    elif bad == "negative":
        e[5, 7] = -1.0
    elif bad == "int":
        e = np.ones((64, 64), np.int64)
    elif bad == "empty":
        e = np.zeros((0, 64), np.float32)
    else:
        e = np.ones(64, np.float32)
    with pytest.raises(EnergyMapError, match=match):
        fn(e)


@pytest.mark.parametrize("call, match", [
    (lambda: synth.apply_rotation(_E, float("nan")), r"angle must be finite, got nan"),
    (lambda: synth.apply_rotation(_E, float("inf")), r"angle must be finite"),
    (lambda: synth.apply_rotation(_E, "ten"), r"angle must be a number, got 'ten'"),
    (lambda: synth.apply_gaussian_noise(_E, 0.0), r"sigma must be > 0, got 0"),
    (lambda: synth.apply_gaussian_noise(_E, -0.1), r"sigma must be > 0"),
    (lambda: synth.apply_gaussian_noise(_E, "0.1x"), r"sigma must be a number"),
    (lambda: synth.apply_gaussian_noise(_E, 0.1, seed=-1), r"seed must be non-negative"),
    (lambda: synth.apply_thermal_blur(_E, 0.0), r"sigma must be > 0"),
    (lambda: synth.apply_thermal_blur(_E, float("nan")), r"sigma must be finite"),
    (lambda: synth.apply_energy_scaling(_E, 0.0), r"scale must be > 0"),
    (lambda: synth.apply_energy_scaling(_E, -2.0), r"scale must be > 0"),
    (lambda: synth.apply_energy_scaling(_E, float("inf")), r"scale must be finite"),
    (lambda: synth.apply_translation(_E, 1.5, 0), r"shift_x must be an integer number of pixels, got 1.5"),
    (lambda: synth.apply_translation(_E, 0, 2.0), r"shift_y must be an integer number of pixels, got 2.0"),
    (lambda: synth.apply_translation(_E, True, 0), r"shift_x must be an integer number of pixels, got True"),
    (lambda: synth.apply_translation(_E, "1", 0), r"shift_x must be an integer"),
    (lambda: synth.apply_translation(_E, np.float64(3.0), 0), r"shift_x must be an integer"),
    (lambda: synth.apply_perturbation(_E, {"kind": "warp"}),
     r"unknown perturbation 'warp'; known: rotation, translation, gaussian_noise, thermal_blur, "
     r"energy_scaling"),
    (lambda: synth.apply_perturbation(_E, {"angle": 3.0}), r"unknown perturbation None"),
    (lambda: synth.apply_perturbation(_E, {"kind": "rotation", "degrees": 3.0}),
     r"bad parameters for perturbation 'rotation'"),
    (lambda: synth.apply_perturbation(_E, {"kind": "translation", "shift_x": 0.5, "shift_y": 0}),
     r"shift_x must be an integer"),
])
def test_bad_perturbation_parameters_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("seed", [1.5, "a", True, None, [1, 2]])
def test_bad_seed_types_refused(seed):
    with pytest.raises(TypeError, match=r"seed must be an int or numpy SeedSequence"):
        synth.apply_gaussian_noise(_E, 0.1, seed)
    with pytest.raises(TypeError, match=r"seed must be an int or numpy SeedSequence"):
        synth.make_pattern("turbulent", (64, 64), seed)
    with pytest.raises(TypeError, match=r"seed must be an int or numpy SeedSequence"):
        synth.generate_sequence(_E, 2, None, seed)


# --------------------------------------------------------------------------- sequences

def _check_sequence(base, seq, meta, cfg: dict, n_steps: int) -> None:
    tol = cfg.get("tolerance", physics.CONSERVATION_TOLERANCE)
    kinds = [k for k in synth.PERTURBATION_ORDER if k in cfg]
    assert seq.shape == (n_steps, *base.shape) and seq.dtype == np.float32
    assert np.array_equal(seq[0], base)
    _assert_valid_energy(seq)
    assert len(meta) == n_steps
    for t, m in enumerate(meta):
        e64 = seq[t].astype(np.float64)
        assert m["t"] == t
        assert m["sum"] == pytest.approx(_fsum(seq[t]), rel=1e-12)
        assert m["mean"] == pytest.approx(_fsum(seq[t]) / seq[t].size, rel=1e-12)
        assert m["variance"] == pytest.approx(float(((e64 - e64.mean()) ** 2).mean()), rel=1e-9)
        assert m["entropy"] == pytest.approx(scipy.stats.entropy(e64.ravel()), rel=1e-9)
        if t == 0:
            assert m["perturbations"] == [] and m["conservation_error"] == 0.0
            assert m["entropy_change"] == 0.0
            continue
        ops = m["perturbations"]
        assert [op["kind"] for op in ops] == kinds
        factor = 1.0
        for op in ops:
            if op["kind"] == "rotation":
                assert abs(op["angle"]) <= cfg["rotation"]["max_angle"]
            elif op["kind"] == "translation":
                assert isinstance(op["shift_x"], int) and isinstance(op["shift_y"], int)
                assert max(abs(op["shift_x"]), abs(op["shift_y"])) <= cfg["translation"]["max_shift"]
            elif op["kind"] == "gaussian_noise":
                assert op["sigma"] == cfg["gaussian_noise"]["sigma"] and 0 <= op["seed"] < 2**63
            elif op["kind"] == "thermal_blur":
                assert op["sigma"] == cfg["thermal_blur"]["sigma"]
            else:
                lo, hi = cfg["energy_scaling"]["min"], cfg["energy_scaling"]["max"]
                assert lo <= op["scale"] <= hi
                factor *= op["scale"]
        assert m["entropy_change"] == pytest.approx(m["entropy"] - meta[t - 1]["entropy"], abs=1e-12)
        err = _rel(seq[t - 1], seq[t], factor)
        assert m["conservation_error"] == pytest.approx(err, rel=1e-6, abs=1e-15)
        assert m["conservation_error"] < tol and m["conservation_error"] < TIGHT
        # the metadata is complete: replaying the recorded perturbations reproduces the step
        replay = seq[t - 1]
        for op in ops:
            replay = synth.apply_perturbation(replay, op)
        assert np.array_equal(replay, seq[t])


@given(energy_maps(shapes(st.sampled_from([64, 64, 128])), kinds=DENSE_KINDS), config_dicts(),
       st.integers(1, 5), seeds)
@settings(max_examples=30)
def test_generate_sequence_invariants_and_metadata(base, cfg, n_steps, seed):
    seq, meta = synth.generate_sequence(base, n_steps, cfg, seed)
    _check_sequence(base, seq, meta, cfg, n_steps)


@given(energy_maps(shapes(st.just(64)), kinds=("hot", "sparse")), config_dicts(allow_rotation=False),
       st.integers(1, 4), seeds)
@settings(max_examples=20)
def test_generate_sequence_of_localised_energy_without_rotation(base, cfg, n_steps, seed):
    seq, meta = synth.generate_sequence(base, n_steps, cfg, seed)
    _check_sequence(base, seq, meta, cfg, n_steps)


@given(st.sampled_from(synth.DEFAULT_DOMAINS), shapes(), st.integers(1, 4), seeds)
@settings(max_examples=20)
def test_synthesize_presets_with_pyramids_and_gradients(domain, shape, n_steps, seed):
    preset = synth.load_preset(domain)
    seq, meta = synth.synthesize(preset, seed, n_steps=n_steps, shape=shape)
    _check_sequence(seq[0], seq, meta, preset.perturbations.to_dict(), n_steps)
    levels = physics.derive_levels(seq)
    assert list(levels) == list(physics.levels_for(shape))
    for lvl, f in levels.items():
        assert f.energy.shape == (n_steps, *physics.level_shape(shape, lvl))
        _assert_valid_energy(f.energy)
        assert np.isfinite(f.grad_x).all() and np.isfinite(f.grad_y).all()
        for t in range(n_steps):
            assert _rel(seq[t], f.energy[t]) < TIGHT


@pytest.mark.parametrize("domain", synth.DEFAULT_DOMAINS)
def test_default_domain_full_size_sequence(domain):
    seq, meta = synth.synthesize(domain, 7)
    assert seq.shape == (10, 256, 256)
    _check_sequence(seq[0], seq, meta, synth.load_preset(domain).perturbations.to_dict(), 10)


@given(energy_maps(small_shapes), st.integers(1, 6), seeds)
@settings(max_examples=20)
def test_empty_config_gives_constant_sequence(base, n_steps, seed):
    for cfg in (None, {}, synth.PerturbationConfig()):
        seq, meta = synth.generate_sequence(base, n_steps, cfg, seed)
        assert all(np.array_equal(seq[t], base) for t in range(n_steps))
        assert all(m["perturbations"] == [] and m["conservation_error"] == 0.0 for m in meta)


@given(energy_maps(small_shapes), st.floats(0.1, 5.0), st.floats(1.0, 3.0), st.integers(2, 6), seeds)
@settings(max_examples=25)
def test_energy_scaling_sequence_sums_follow_recorded_factors(base, lo, spread, n_steps, seed):
    cfg = {"energy_scaling": {"min": lo, "max": lo * spread}}
    seq, meta = synth.generate_sequence(base, n_steps, cfg, seed)
    total = 1.0
    for t in range(1, n_steps):
        (op,) = meta[t]["perturbations"]
        total *= op["scale"]
        assert _fsum(seq[t]) / _fsum(seq[t - 1]) == pytest.approx(op["scale"], rel=1e-6)
        assert _fsum(seq[t]) / _fsum(seq[0]) == pytest.approx(total, rel=1e-5)


@given(energy_maps(small_shapes, kinds=DENSE_KINDS), config_dicts(), st.integers(2, 4), seeds, seeds)
@settings(max_examples=20)
def test_generate_sequence_deterministic_per_seed(base, cfg, n_steps, s1, s2):
    a, ma = synth.generate_sequence(base, n_steps, cfg, s1)
    b, mb = synth.generate_sequence(base, n_steps, cfg, s1)
    assert np.array_equal(a, b) and ma == mb
    if s1 != s2:
        cfg = {**cfg, "gaussian_noise": {"sigma": 0.1}}  # make sure there is something random
        a, _ = synth.generate_sequence(base, n_steps, cfg, s1)
        c, _ = synth.generate_sequence(base, n_steps, cfg, s2)
        assert not np.array_equal(a, c)


@given(st.sampled_from(synth.DEFAULT_DOMAINS), small_shapes, st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1))
@settings(max_examples=15)
def test_synthesize_deterministic_per_seed(domain, shape, s1, s2):
    a, ma = synth.synthesize(domain, s1, n_steps=3, shape=shape)
    b, mb = synth.synthesize(domain, s1, n_steps=3, shape=shape)
    assert np.array_equal(a, b) and ma == mb
    c, _ = synth.synthesize(domain, np.random.SeedSequence(s1), n_steps=3, shape=shape)
    assert np.array_equal(a, c)  # an int seed is its SeedSequence
    if s1 != s2:
        d, _ = synth.synthesize(domain, s2, n_steps=3, shape=shape)
        assert not np.array_equal(a[0], d[0]) and not np.array_equal(a[1:], d[1:])


def test_seedsequence_passed_twice_gives_same_result_and_is_not_mutated():
    ss = np.random.SeedSequence(2024)
    state = ss.generate_state(4).copy()
    a, ma = synth.synthesize("fluid_dynamics", ss, n_steps=3, shape=(64, 96))
    b, mb = synth.synthesize("fluid_dynamics", ss, n_steps=3, shape=(64, 96))
    assert np.array_equal(a, b) and ma == mb
    assert ss.n_children_spawned == 0 and np.array_equal(ss.generate_state(4), state)
    base = a[0]
    x, _ = synth.generate_sequence(base, 3, {"gaussian_noise": {"sigma": 0.3}}, ss)
    y, _ = synth.generate_sequence(base, 3, {"gaussian_noise": {"sigma": 0.3}}, ss)
    assert np.array_equal(x, y) and ss.n_children_spawned == 0


@given(energy_maps(small_shapes), st.floats(0.01, 1.0), seeds)
@settings(max_examples=20)
def test_tiny_tolerance_makes_noise_violate_conservation(base, sigma, seed):
    # Renormalisation happens in float64 but the step is stored as float32, so a 1e-12 tolerance
    # is below what float32 can represent: the check must fire rather than pass silently.
    # (A single step can land within 1e-12 by luck, so allow a few steps for the check to fire.)
    cfg = {"gaussian_noise": {"sigma": sigma}, "tolerance": 1e-12}
    with pytest.raises(ThermodynamicViolation, match=r"energy not conserved \(step [1-7]\)") as info:
        synth.generate_sequence(base, 8, cfg, seed)
    exc = info.value
    assert exc.kind == "energy_conservation" and exc.limit == 1e-12
    assert 1e-12 <= exc.measured < TIGHT
    assert f"{exc.measured:.3e}" in str(exc) and "exceeds tolerance 1.000e-12" in str(exc)


@given(energy_maps(small_shapes), st.integers(1, 20), st.integers(2, 5), seeds)
@settings(max_examples=15)
def test_tiny_tolerance_translation_is_exact_so_it_passes(base, shift, n_steps, seed):
    seq, meta = synth.generate_sequence(base, n_steps, {"translation": {"max_shift": shift},
                                                       "tolerance": 1e-12}, seed)
    # the values are a permutation, so the only possible error is float64 summation order (an ulp)
    assert all(m["conservation_error"] <= 1e-15 for m in meta)
    assert all(math.fsum(seq[t].ravel().astype(np.float64)) == math.fsum(base.ravel().astype(np.float64))
               for t in range(n_steps))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_scaling_overflow_in_a_sequence_is_a_violation():
    with pytest.raises(ValueError, match=r"energy scaling by 1e\+39 overflows float32"):
        synth.generate_sequence(_E, 2, {"energy_scaling": {"min": 1e39, "max": 1e39}}, 0)


@pytest.mark.parametrize("base, match", [
    (np.full((64, 64), np.nan, np.float32), r"base map: contains non-finite values \(4096 NaN"),
    (np.full((64, 64), np.inf, np.float32), r"base map: contains non-finite values \(0 NaN, 4096 inf"),
    (-np.ones((64, 64), np.float32), r"base map: contains 4096 negative values"),
    (np.ones((64, 64), np.int32), r"base map: dtype int32 is not a floating-point type"),
    (np.zeros((0, 0), np.float32), r"base map: empty array"),
    (np.ones(64, np.float32), r"base map: expected at least 2 dimensions"),
    (np.ones((2, 64, 64), np.float32), r"base map: expected a 2D \(y, x\) map, got shape \(2, 64, 64\)"),
    (np.ones((100, 100), np.float32), r"base map: short side 100"),
    (np.ones((64, 128), np.float32), r"base map: aspect 64x128 is neither square nor 2:3"),
    (np.ones((512, 512), np.float32), r"base map: short side 512"),
])
def test_generate_sequence_refuses_bad_base(base, match):
    with pytest.raises(EnergyMapError, match=match):
        synth.generate_sequence(base, 3)


@pytest.mark.parametrize("n_steps", [0, -1, 1.5, True, False, "3", None, np.float64(2.0)])
def test_generate_sequence_refuses_bad_n_steps(n_steps):
    with pytest.raises(ValueError, match=r"n_steps must be a positive integer, got"):
        synth.generate_sequence(_E, n_steps)


@pytest.mark.parametrize("n_steps", [-1, 1.5, True, "3"])
def test_synthesize_refuses_bad_n_steps(n_steps):
    with pytest.raises(ValueError, match=r"n_steps must be a positive integer"):
        synth.synthesize("fluid_dynamics", 0, n_steps=n_steps, shape=(64, 64))


@pytest.mark.parametrize("n_steps", [0, False])
def test_synthesize_refuses_zero_n_steps(n_steps):
    with pytest.raises(ValueError, match=r"n_steps"):
        synth.synthesize("fluid_dynamics", 0, n_steps=n_steps, shape=(64, 64))


@pytest.mark.parametrize("seed", [-1, 1.5, "a", [1.5]])
def test_synthesize_refuses_bad_seeds(seed):
    with pytest.raises((TypeError, ValueError)):
        synth.synthesize("fluid_dynamics", seed, n_steps=2, shape=(64, 64))


@pytest.mark.parametrize("seed", [True, None])
def test_synthesize_refuses_bool_and_none_seeds(seed):
    with pytest.raises(TypeError, match=r"seed"):
        synth.synthesize("fluid_dynamics", seed, n_steps=2, shape=(64, 64))


@pytest.mark.parametrize("seed, match", [(-1, r"seed must be non-negative, got -1")])
def test_generate_sequence_refuses_negative_seed(seed, match):
    with pytest.raises(ValueError, match=match):
        synth.generate_sequence(_E, 2, None, seed)


# --------------------------------------------------------------------------- configs

@given(config_dicts(), st.floats(1e-6, 1.0))
@settings(max_examples=40)
def test_config_round_trips(cfg, tol):
    doc = {**cfg, "tolerance": tol}
    c = synth.PerturbationConfig.from_dict(doc)
    assert synth.PerturbationConfig.from_dict(c.to_dict()) == c
    expected = doc if tol != physics.CONSERVATION_TOLERANCE else cfg
    assert c.to_dict() == expected


@pytest.mark.parametrize("doc, match", [
    ({"rotaton": {"max_angle": 10}},
     r"<root>: Additional properties are not allowed \('rotaton' was unexpected\)"),
    ({"gaussian_noise": {"sigma": 0.1, "mu": 0}}, r"gaussian_noise: .*'mu' was unexpected"),
    ({"gaussian_noise": {"sigma": -0.1}},
     r"gaussian_noise/sigma: -0.1 is less than or equal to the minimum of 0"),
    ({"gaussian_noise": {"sigma": 0}}, r"gaussian_noise/sigma: 0 is less than or equal to the minimum of 0"),
    ({"gaussian_noise": {"sigma": "0.1"}}, r"gaussian_noise/sigma: '0.1' is not of type 'number'"),
    ({"gaussian_noise": {"sigma": 3.0}}, r"gaussian_noise/sigma: 3.0 is greater than the maximum of 2"),
    ({"gaussian_noise": {}}, r"gaussian_noise: 'sigma' is a required property"),
    ({"thermal_blur": {"sigma": -1}}, r"thermal_blur/sigma"),
    ({"thermal_blur": 2.0}, r"thermal_blur: 2.0 is not of type 'object'"),
    ({"rotation": {"max_angle": 270}}, r"rotation/max_angle: 270 is greater than the maximum of 180"),
    ({"translation": {"max_shift": 1.5}}, r"translation/max_shift: 1.5 is not of type 'integer'"),
    ({"translation": {"max_shift": 0}}, r"translation/max_shift: 0 is less than the minimum of 1"),
    ({"energy_scaling": {"min": 2.0, "max": 1.0}}, r"energy_scaling: min 2.0 > max 1.0"),
    ({"energy_scaling": {"min": -1.0, "max": 1.0}}, r"energy_scaling/min"),
    ({"energy_scaling": {"min": 1.0}}, r"energy_scaling: 'max' is a required property"),
    ({"tolerance": 0}, r"tolerance: 0 is less than or equal to the minimum of 0"),
    ({"tolerance": 2}, r"tolerance: 2 is greater than the maximum of 1"),
    ([], r"<root>: \[\] is not of type 'object'"),
])
def test_malformed_config_refused(doc, match):
    with pytest.raises(SchemaError, match=rf"perturbation config is invalid at {match}"):
        synth.PerturbationConfig.from_dict(doc)
    with pytest.raises(SchemaError, match=match):
        synth.generate_sequence(_E, 2, doc)


@pytest.mark.parametrize("kwargs, match", [
    ({"gaussian_noise": -0.1}, r"gaussian_noise/sigma"),
    ({"gaussian_noise": "0.1"}, r"'0.1' is not of type 'number'"),
    ({"thermal_blur": 0.0}, r"thermal_blur/sigma"),
    ({"rotation": -5.0}, r"rotation/max_angle"),
    ({"energy_scaling": (3.0, 1.0)}, r"energy_scaling: min 3.0 > max 1.0"),
    ({"tolerance": -0.5}, r"tolerance"),
])
def test_malformed_config_constructor_refused(kwargs, match):
    with pytest.raises(SchemaError, match=match):
        synth.PerturbationConfig(**kwargs)


@pytest.mark.parametrize("doc", [
    {"thermal_blur": {"sigma": float("nan")}},
    {"gaussian_noise": {"sigma": float("nan")}},
    {"rotation": {"max_angle": float("nan")}},
    {"tolerance": float("nan")},
    {"energy_scaling": {"min": float("nan"), "max": 2.0}},
    {"energy_scaling": {"min": 1.0, "max": float("inf")}},
], ids=["blur-nan", "noise-nan", "rotation-nan", "tolerance-nan", "scaling-min-nan", "scaling-max-inf"])
def test_non_finite_config_values_refused(doc):
    with pytest.raises(SchemaError):
        synth.PerturbationConfig.from_dict(doc)


# --------------------------------------------------------------------------- presets and schemas

EXPECTED_PRESETS = {
    "plasma_physics": ("turbulent", {"gaussian_noise": {"sigma": 0.15}, "thermal_blur": {"sigma": 3.0}}),
    "fluid_dynamics": ("vortex", {"gaussian_noise": {"sigma": 0.1}, "thermal_blur": {"sigma": 2.0}}),
    "astrophysics": ("turbulent", {"gaussian_noise": {"sigma": 0.2}, "thermal_blur": {"sigma": 4.0}}),
    "turbulent_radiative_layer": ("turbulent", {"rotation": {"max_angle": 90.0},
                                                "thermal_blur": {"sigma": 2.5}}),
    "active_matter": ("vortex", {"gaussian_noise": {"sigma": 0.08}, "thermal_blur": {"sigma": 1.5}}),
}


def test_default_presets_are_shipped():
    assert set(synth.DEFAULT_DOMAINS) == set(EXPECTED_PRESETS)
    assert set(synth.DEFAULT_DOMAINS) <= set(synth.list_presets())


@pytest.mark.parametrize("name", list(EXPECTED_PRESETS))
def test_default_preset_parameters(name):
    pattern, perturbations = EXPECTED_PRESETS[name]
    p = synth.load_preset(name)
    assert (p.name, p.pattern, p.shape, p.n_steps) == (name, pattern, (256, 256), 10)
    assert p.perturbations.to_dict() == perturbations
    assert p.perturbations.tolerance == physics.CONSERVATION_TOLERANCE
    assert synth.load_preset(synth.preset_dir() / f"{name}.json") == p  # by path
    assert synth.load_preset(p.to_dict()) == p  # by dict, round trip


def _schema_files() -> list[Path]:
    return sorted(schema_dir().glob("*.schema.json"))


def test_there_are_schemas():
    names = {p.name for p in _schema_files()}
    assert {"preset.schema.json", "perturbation-config.schema.json"} <= names


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_every_shipped_schema_is_valid_draft_2020_12(path):
    doc = json.loads(path.read_text())
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"].endswith(path.name)
    Draft202012Validator.check_schema(doc)


def test_meta_schema_check_can_fail():
    with pytest.raises(MetaSchemaError):
        Draft202012Validator.check_schema({"type": 5})


@pytest.mark.parametrize("path", sorted((schema_dir() / "presets").glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_preset_validates(path):
    doc = json.loads(path.read_text())
    validate(doc, "preset")
    assert doc["name"] == path.stem
    synth.load_preset(path)


def _preset_doc() -> dict:
    return json.loads((synth.preset_dir() / "fluid_dynamics.json").read_text())


def _write(tmp_path: Path, doc_or_text) -> Path:
    p = tmp_path / "custom.json"
    p.write_text(doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text))
    return p


def test_custom_preset_file_loads(tmp_path):
    doc = _preset_doc()
    doc.update(name="my_domain", shape=[128, 192], n_steps=3)
    p = synth.load_preset(_write(tmp_path, doc))
    assert p.name == "my_domain" and p.shape == (128, 192)
    seq, _ = synth.synthesize(p, 0)
    assert seq.shape == (3, 128, 192)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("pattern"), r"'pattern' is a required property"),
    (lambda d: d.pop("shape"), r"'shape' is a required property"),
    (lambda d: d.update(shape=[100, 100]), r"at shape/0: 100 is not one of"),
    (lambda d: d.update(shape=[256]), r"at shape: \[256\] is too short"),
    (lambda d: d.update(shape=[256, 256, 256]), r"at shape"),
    (lambda d: d.update(pattern="chaos"), r"at pattern: 'chaos' is not one of"),
    (lambda d: d.update(n_steps=0), r"at n_steps: 0 is less than the minimum of 1"),
    (lambda d: d.update(n_steps=2.5), r"at n_steps: 2.5 is not of type 'integer'"),
    (lambda d: d.update(name="Bad Name"), r"at name: 'Bad Name' does not match"),
    (lambda d: d.update(colour="red"), r"'colour' was unexpected"),
    (lambda d: d["perturbations"].update(gaussian_noise={"sigma": -1}),
     r"at perturbations/gaussian_noise/sigma: -1 is less than or equal to the minimum of 0"),
    (lambda d: d["perturbations"].update(warp={"x": 1}), r"at perturbations: .*'warp' was unexpected"),
])
def test_malformed_preset_file_refused(tmp_path, edit, match):
    doc = _preset_doc()
    edit(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(SchemaError, match=rf"preset file .*custom\.json is invalid .*{match}"):
        synth.load_preset(path)
    with pytest.raises(SchemaError, match=match):
        synth.load_preset(doc)


@pytest.mark.parametrize("text", ["{not json", "", '{"name": "x",}', "[1, 2"])
def test_invalid_json_preset_file_refused(tmp_path, text):
    with pytest.raises(SchemaError, match=r"preset file .*custom\.json is not valid JSON"):
        synth.load_preset(_write(tmp_path, text))


@given(st.sampled_from([64, 96, 128, 192, 256, 384]), st.sampled_from([64, 96, 128, 192, 256, 384]))
def test_preset_shapes_allowed_by_schema_but_not_physics_refused(ny, nx):
    doc = _preset_doc()
    doc["shape"] = [ny, nx]
    short, long_ = min(ny, nx), max(ny, nx)
    if short in (64, 128, 256) and (long_ == short or 2 * long_ == 3 * short):
        assert synth.load_preset(doc).shape == (ny, nx)
    else:
        with pytest.raises(EnergyMapError,
                           match=r"preset 'fluid_dynamics' shape: .*(short side|neither square)"):
            synth.load_preset(doc)


@pytest.mark.parametrize("name", ["nope", "Plasma_Physics", "", "plasma_physics.json"])
def test_unknown_preset_refused(name):
    with pytest.raises(ValueError, match=r"unknown domain preset .*; known: active_matter, astrophysics"):
        synth.load_preset(name)
    with pytest.raises(ValueError, match=r"unknown domain preset"):
        synth.synthesize(name, 0)


def test_preset_docs_are_not_shared_state():
    a = synth.load_preset("plasma_physics")
    a.source["perturbations"]["gaussian_noise"]["sigma"] = 0.5  # a caller scribbles on its copy
    b = synth.load_preset("plasma_physics")
    assert b.perturbations.gaussian_noise == 0.15
    assert b.source["perturbations"]["gaussian_noise"]["sigma"] == 0.15


@given(energy_maps(), st.floats(-720, 720, allow_nan=False))
@settings(max_examples=40)
def test_rotation_is_doubly_stochastic_conserves_and_never_lowers_entropy(e, angle):
    """Three periodic shears: sum E exact, non-negative, entropy non-decreasing (any angle)."""
    out = synth.apply_rotation(e, angle)
    _assert_valid_energy(out)
    assert out.shape == e.shape
    assert abs(_fsum(out) - _fsum(e)) <= 1e-5 * _fsum(e)
    assert float(physics.entropy(out)) >= float(physics.entropy(e)) - 1e-6
