"""The NVP next-step model: a Flax NNX encoder-decoder with residual blocks and uncertainty.

Inputs and outputs are **physical** energies, not the stream's normalised values: the model
carries the normalisation (mean and std per pyramid level, measured on the training split) as
non-trainable state, so a checkpoint is self-contained and non-negativity is a property of the
output in physical units. (The stream normalises per domain with statistics of whatever set of
sequences it streams; training and validation streams would get different statistics, and
the stored prediction would depend on a sidecar file. The trainer therefore streams raw values,
``normalise=False``, and this module normalises inside the network.)

Architecture (U-Net-like, NHWC inside; ``inputs[level]`` is ``(B, n_in, y, x)`` as the stream
delivers it)::

    base level (finest)  -> normalise -> conv stem -> res blocks ------------------- skip 0
    stride-2 conv  -> [concat normalised stored level of that size, 1x1 conv] -> res blocks  skip 1
    stride-2 conv  -> [concat ...] -> res blocks                                      skip 2 ...
    bottleneck res block
    nearest 2x upsample, concat skip, 1x1 conv, res blocks  (back to the base level)
    heads: residual dE (in units of the base level's std) and raw log-variance

A stored pyramid level enters the encoder at the depth where the feature map has its size: for a
256 base, 128 after the first downsample and 64 after the second; for a 128 base, 64 after the
first; a 64 base has no coarser level. ``depth`` must reach every given level.

Output: ``E_pred = s * softplus_k(E_t / s + dE)`` with ``s`` the base level's std and
``softplus_k(x) = softplus(k x) / k``: a smooth, strictly positive version of ``E_t + s dE``
(the residual on E_t), so predictions are >= 0 in physical units whatever the weights. The
residual is ``dE = r + sum_i a_i * (G_i * e - e)`` with ``e = E_t / s``: a free map ``r`` plus
fixed periodic heat kernels ``G_i`` (widths ``diffusion_sigmas``) applied to E_t, each weighted by
a per-pixel coefficient ``a_i`` that the network predicts. The heat-kernel terms give the
network diffusion (the dominant physics of the synthetic data) as a learned *coefficient*
instead of a convolution it must discover, which matters when it can afford only a few hundred
steps on a CPU; they conserve energy when ``a_i`` is constant. The head starts at zero, so an
untrained model predicts persistence (up to ``log(2) s / k`` where E_t = 0). The log-variance
head is soft-clamped to ``[log_var_min, log_var_max]`` (in units of ``s**2``) and returned in
physical units.

Uncertainty: aleatoric from the variance head; epistemic from MC dropout (Gal & Ghahramani):
dropout stays on at prediction time and ``S`` samples give
``total variance = mean_s(var_s) + var_s(mean_s)`` (:func:`combine_mc`, :func:`mc_predict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..physics import block_sum

__all__ = [
    "NVP",
    "LevelStat",
    "MCPrediction",
    "ModelConfig",
    "ModelError",
    "Prediction",
    "combine_mc",
    "mc_predict",
    "predict",
    "pyramid_inputs",
    "softplus_k",
]


class ModelError(ValueError):
    """A model that cannot be built for the given levels/shapes."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`NVP`."""

    width: int = 16            # channels at the base level
    max_width: int = 64        # channels double per downsample up to this
    depth: int = 3             # number of stride-2 downsamples
    blocks: int = 1            # residual blocks per stage
    dropout: float = 0.1       # MC dropout rate inside residual blocks
    groups: int = 8            # GroupNorm groups (reduced to divide the channels)
    sharpness: float = 20.0    # k of the output softplus, in units of 1/std
    log_var_init: float = -4.0  # initial log variance (units of std^2)
    log_var_min: float = -14.0
    log_var_max: float = 6.0
    # widths (pixels of the predicted level) of the fixed periodic heat kernels whose
    # per-pixel weighted sum is part of the residual; () disables them
    diffusion_sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "diffusion_sigmas",
                           tuple(float(x) for x in (self.diffusion_sigmas or ())))
        if any(not (x > 0 and math.isfinite(x)) for x in self.diffusion_sigmas):
            raise ModelError(f"model diffusion_sigmas must be positive, got "
                             f"{list(self.diffusion_sigmas)}")
        for name in ("width", "max_width", "depth", "blocks", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"model {name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"model dropout must be in [0, 1), got {self.dropout}")
        if not self.sharpness > 0:
            raise ModelError(f"model sharpness must be > 0, got {self.sharpness}")
        if not self.log_var_min < self.log_var_init < self.log_var_max:
            raise ModelError("model needs log_var_min < log_var_init < log_var_max, got "
                             f"{self.log_var_min}, {self.log_var_init}, {self.log_var_max}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ModelConfig:
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diffusion_sigmas"] = list(self.diffusion_sigmas)
        return d

    def widths(self) -> list[int]:
        cap = max(self.max_width, self.width)
        return [min(self.width * 2 ** d, cap) for d in range(self.depth + 1)]


class LevelStat(nnx.Variable):
    """Non-trainable normalisation statistics (saved with the model, never optimised)."""


class Prediction(NamedTuple):
    """Deterministic prediction: mean E_{t+1} and log variance, physical units, (B, y, x)."""

    mean: jax.Array
    log_var: jax.Array


class MCPrediction(NamedTuple):
    """MC-dropout prediction (physical units, (B, y, x)): predictive mean and the variances."""

    mean: jax.Array
    aleatoric: jax.Array   # mean over samples of the predicted variance
    epistemic: jax.Array   # variance over samples of the predicted mean
    total: jax.Array       # aleatoric + epistemic

    @property
    def std(self) -> jax.Array:
        return jnp.sqrt(self.total)


def softplus_k(x: jax.Array, k: float) -> jax.Array:
    """softplus(k x) / k: smooth max(x, 0), within log(2)/k of it, always > 0."""
    return jax.nn.softplus(k * x) / k


def _soft_clamp(x: jax.Array, lo: float, hi: float) -> jax.Array:
    x = lo + jax.nn.softplus(x - lo)
    return hi - jax.nn.softplus(hi - x)


def _groups(c: int, want: int) -> int:
    return math.gcd(c, want) or 1


class _NumpyInit:
    """LeCun-normal conv kernels drawn with NumPy from one seeded generator.

    JAX's random initialisers compile one small XLA program per distinct shape (several seconds
    each on a loaded CPU); a model has ~20 conv shapes. Drawing with NumPy costs nothing to
    compile and is just as deterministic (a function of the seed and the construction order).
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4E5650]))

    def __call__(self, gain: float = 1.0) -> Any:
        def init(key: Any, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
            fan_in = int(np.prod(shape[:-1]))
            w = self.rng.standard_normal(tuple(shape)) * math.sqrt(gain / max(fan_in, 1))
            return jnp.asarray(w, dtype=dtype)
        return init


class ResBlock(nnx.Module):
    """Pre-activation residual block: GN-SiLU-conv-dropout-GN-SiLU-conv, plus (projected) skip."""

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig, index: int, init: _NumpyInit, *,
                 rngs: nnx.Rngs):
        self.index = index
        self.norm1 = nnx.GroupNorm(c_in, num_groups=_groups(c_in, cfg.groups), rngs=rngs)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), kernel_init=init(), rngs=rngs)
        self.norm2 = nnx.GroupNorm(c_out, num_groups=_groups(c_out, cfg.groups), rngs=rngs)
        self.drop = nnx.Dropout(cfg.dropout)
        # small init of the last conv: every block starts close to the identity
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), kernel_init=init(0.1), rngs=rngs)
        self.skip = (nnx.Conv(c_in, c_out, (1, 1), kernel_init=init(), rngs=rngs)
                     if c_in != c_out else None)

    def __call__(self, x: jax.Array, deterministic: bool, key: jax.Array | None) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = nnx.silu(self.norm2(h))
        if not deterministic and self.drop.rate > 0:
            h = self.drop(h, deterministic=False, rngs=jax.random.fold_in(key, self.index))
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class NVP(nnx.Module):
    """Next-step energy predictor with aleatoric (variance head) and epistemic (MC dropout)
    uncertainty.

    ``levels``: the pyramid levels given as input, finest first (the finest is the level the
    model predicts); ``n_in``: input steps per level; ``stats``: ``{level: (mean, std)}`` of the
    energy at each level (physical units) used to normalise inputs; ``shape``: the base level's
    (y, x), checked against ``depth``; ``seed``: of the weight initialisation.
    """

    def __init__(self, cfg: ModelConfig, levels: Sequence[int], n_in: int,
                 stats: Mapping[int, tuple[float, float]], *, shape: tuple[int, int] | None = None,
                 seed: int = 0):
        levels = tuple(sorted({int(lv) for lv in levels}, reverse=True))
        if not levels:
            raise ModelError("no input levels")
        base = levels[0]
        self.cfg = cfg
        self.levels = levels
        self.base = base
        self.n_in = int(n_in)
        if self.n_in < 1:
            raise ModelError(f"n_in must be >= 1, got {n_in}")
        # where each coarser level enters: encoder depth d with base / 2**d == level
        entry: dict[int, int] = {}
        for lv in levels[1:]:
            f = base // lv
            d = round(math.log2(f)) if f > 0 else -1
            if base % lv or 2 ** d != f:
                raise ModelError(f"level {lv} is not base {base} / 2**d; levels must halve")
            if d > cfg.depth:
                raise ModelError(f"level {lv} enters at depth {d} but the model has depth "
                                 f"{cfg.depth}; raise model.depth or drop the level")
            entry[d] = lv
        self.entry = tuple(sorted(entry.items()))  # ((depth, level), ...): static, hashable
        if shape is not None:
            ny, nx = (int(s) for s in shape)
            m = 2 ** cfg.depth
            if ny % m or nx % m:
                raise ModelError(f"base maps {ny}x{nx} are not divisible by 2**depth = {m}; "
                                 "lower model.depth")
        missing = [lv for lv in levels if lv not in stats]
        if missing:
            raise ModelError(f"no normalisation statistics for level(s) {missing}")
        self.level_mean = LevelStat(jnp.asarray([float(stats[lv][0]) for lv in levels],
                                                jnp.float32))
        self.level_std = LevelStat(jnp.asarray([max(float(stats[lv][1]), 1e-12) for lv in levels],
                                               jnp.float32))

        w = cfg.widths()
        idx = iter(range(10_000))
        init = _NumpyInit(seed)
        rngs = nnx.Rngs(seed)  # unused by our initialisers; nnx layers require one
        self.stem = nnx.Conv(self.n_in, w[0], (3, 3), kernel_init=init(), rngs=rngs)
        self.enc0 = nnx.List([ResBlock(w[0], w[0], cfg, next(idx), init, rngs=rngs)
                              for _ in range(cfg.blocks)])
        self.down = nnx.List()
        self.merge = nnx.List()
        self.enc = nnx.List()
        for d in range(1, cfg.depth + 1):
            self.down.append(nnx.Conv(w[d - 1], w[d], (3, 3), strides=2, kernel_init=init(),
                                      rngs=rngs))
            self.merge.append(nnx.Conv(w[d] + self.n_in, w[d], (1, 1), kernel_init=init(),
                                       rngs=rngs) if d in entry else None)
            self.enc.append(nnx.List([ResBlock(w[d], w[d], cfg, next(idx), init, rngs=rngs)
                                      for _ in range(cfg.blocks)]))
        self.mid = ResBlock(w[-1], w[-1], cfg, next(idx), init, rngs=rngs)
        self.fuse = nnx.List()
        self.dec = nnx.List()
        for d in range(cfg.depth - 1, -1, -1):
            self.fuse.append(nnx.Conv(w[d + 1] + w[d], w[d], (1, 1), kernel_init=init(),
                                      rngs=rngs))
            self.dec.append(nnx.List([ResBlock(w[d], w[d], cfg, next(idx), init, rngs=rngs)
                                      for _ in range(cfg.blocks)]))
        self.head_norm = nnx.GroupNorm(w[0], num_groups=_groups(w[0], cfg.groups), rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        # channel 0: free residual; channel 1 + i: weight of heat kernel i (all zero at init)
        self.head_mean = nnx.Conv(w[0], 1 + len(cfg.diffusion_sigmas), (3, 3),
                                  kernel_init=zeros, bias_init=zeros, rngs=rngs)
        self.head_logvar = nnx.Conv(w[0], 1, (3, 3), kernel_init=zeros,
                                    bias_init=nnx.initializers.constant(cfg.log_var_init),
                                    rngs=rngs)

    # ------------------------------------------------------------------ helpers

    @property
    def out_scale(self) -> jax.Array:
        """Std of the predicted (base) level: the unit of the residual and of the loss."""
        return self.level_std[...][0]

    def _norm_input(self, x: jax.Array, i: int) -> jax.Array:
        x = (x - self.level_mean[...][i]) / self.level_std[...][i]
        return jnp.transpose(x, (0, 2, 3, 1))  # (B, n_in, y, x) -> NHWC

    # ------------------------------------------------------------------ forward

    def __call__(self, inputs: Mapping[int, jax.Array], *, deterministic: bool = True,
                 key: jax.Array | None = None) -> Prediction:
        """Predict E_{t+1} from ``inputs[level]`` of shape (B, n_in, y, x) (physical units).

        With ``deterministic=False`` dropout is active and ``key`` (a PRNG key) is required.
        """
        if not deterministic and self.cfg.dropout > 0 and key is None:
            raise ModelError("deterministic=False needs a PRNG key for dropout")
        missing = [lv for lv in self.levels if lv not in inputs]
        if missing:
            raise ModelError(f"inputs lack level(s) {missing}; the model takes {list(self.levels)}")
        xb = inputs[self.base]
        if xb.ndim != 4 or xb.shape[1] != self.n_in:
            raise ModelError(f"inputs[{self.base}] must be (B, {self.n_in}, y, x), got {xb.shape}")
        e_t = xb[:, -1]
        h = self.stem(self._norm_input(xb, 0))
        for blk in self.enc0:
            h = blk(h, deterministic, key)
        skips = [h]
        for d in range(1, self.cfg.depth + 1):
            h = self.down[d - 1](nnx.silu(h))
            lv = dict(self.entry).get(d)
            if lv is not None:
                x = self._norm_input(inputs[lv], self.levels.index(lv))
                if x.shape[1:3] != h.shape[1:3]:
                    raise ModelError(f"level {lv} maps are {x.shape[1:3]}, expected "
                                     f"{h.shape[1:3]} at encoder depth {d}")
                h = self.merge[d - 1](jnp.concatenate([h, x], axis=-1))
            for blk in self.enc[d - 1]:
                h = blk(h, deterministic, key)
            skips.append(h)
        h = self.mid(h, deterministic, key)
        for j, d in enumerate(range(self.cfg.depth - 1, -1, -1)):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = self.fuse[j](jnp.concatenate([h, skips[d]], axis=-1))
            for blk in self.dec[j]:
                h = blk(h, deterministic, key)
        h = nnx.silu(self.head_norm(h))
        head = self.head_mean(h)
        raw_lv = self.head_logvar(h)[..., 0]
        s = self.out_scale
        k = self.cfg.sharpness
        e = e_t / s
        d_e = head[..., 0]
        if self.cfg.diffusion_sigmas:
            blurred = heat_kernel_blur(e, self.cfg.diffusion_sigmas)  # (S, B, y, x)
            d_e = d_e + jnp.sum(jnp.moveaxis(head[..., 1:], -1, 0) * (blurred - e), axis=0)
        mean = s * softplus_k(e + d_e, k)
        log_var = _soft_clamp(raw_lv, self.cfg.log_var_min, self.cfg.log_var_max) + 2 * jnp.log(s)
        return Prediction(mean, log_var)


# ---------------------------------------------------------------------- prediction helpers


def heat_kernel_blur(x: jax.Array, sigmas: Sequence[float]) -> jax.Array:
    """Periodic Gaussian blurs of ``x`` (..., y, x), one per sigma (pixels): (S, ..., y, x).

    Exact heat kernel on the torus via the FFT, ``exp(-2 pi^2 sigma^2 |k|^2)``: conserves sum x
    and never lowers entropy (a doubly stochastic operator).
    """
    ny, nx = x.shape[-2:]
    ky = jnp.fft.fftfreq(ny)[:, None]
    kx = jnp.fft.rfftfreq(nx)[None, :]
    k2 = ky * ky + kx * kx
    xf = jnp.fft.rfft2(x)
    gains = jnp.stack([jnp.exp(-2.0 * (math.pi ** 2) * (sg ** 2) * k2) for sg in sigmas])
    gains = gains.reshape(len(sigmas), *([1] * (x.ndim - 2)), *k2.shape)
    return jnp.fft.irfft2(xf[None] * gains, s=(ny, nx)).astype(x.dtype)



def combine_mc(means: jax.Array, log_vars: jax.Array) -> MCPrediction:
    """Combine S samples (axis 0) of (mean, log variance) into the predictive moments.

    mean = mean_s mu_s; aleatoric = mean_s exp(log_var_s); epistemic = var_s mu_s (population
    variance, ddof 0); total = aleatoric + epistemic (law of total variance for the mixture).
    """
    means = jnp.asarray(means)
    mu = jnp.mean(means, axis=0)
    alea = jnp.mean(jnp.exp(jnp.asarray(log_vars)), axis=0)
    epi = jnp.mean(jnp.square(means - mu), axis=0)
    return MCPrediction(mu, alea, epi, alea + epi)


@nnx.jit
def predict(model: NVP, inputs: Mapping[int, jax.Array]) -> Prediction:
    """Deterministic prediction (dropout off)."""
    return model(inputs, deterministic=True)


@nnx.jit(static_argnames=("n_samples",))
def mc_predict(model: NVP, inputs: Mapping[int, jax.Array], key: jax.Array,
               n_samples: int = 16) -> MCPrediction:
    """MC-dropout predictive moments from ``n_samples`` stochastic forward passes.

    With ``n_samples == 0`` (or a model without dropout) the deterministic prediction is used
    and the epistemic variance is zero.
    """
    if n_samples <= 0 or model.cfg.dropout == 0:
        p = model(inputs, deterministic=True)
        v = jnp.exp(p.log_var)
        return MCPrediction(p.mean, v, jnp.zeros_like(v), v)
    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        p = model(inputs, deterministic=False, key=k)
        return p.mean, p.log_var

    # lax.map, not vmap: one compiled body run S times (vmap of the whole network compiled ~5x
    # slower on CPU and holds S copies of every activation)
    means, log_vars = jax.lax.map(one, jax.random.split(key, n_samples))
    return combine_mc(means, log_vars)


def pyramid_inputs(base: jax.Array, levels: Sequence[int]) -> dict[int, jax.Array]:
    """``{level: x}`` for every level from maps at the finest level (block sums), e.g. to feed a
    prediction back during a rollout. ``base`` is (..., y, x) at level ``max(levels)``."""
    top = max(levels)
    return {lv: block_sum(base, top // lv) for lv in levels}
