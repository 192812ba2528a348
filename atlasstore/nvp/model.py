"""The NVP next-step model: a per-domain physics prior plus a learned, domain-conditioned residual.

::

    E_pred = max(P_d(E_t) + rho_d * (r - mean(r)), 0)
    var    = rho_d^2 * exp(v) * c_d^2

* ``P_d`` (:mod:`.prior`): the domain's least-squares operator (noise floor, rotation bank,
  heat kernel), fitted on the training split before training and stored with the model; with
  ``model.prior = "linear_ar"`` the evaluation's linear AR stencil on the input steps instead.
* ``rho_d``: the prior's RMS error on those training pairs. The network predicts the *correction*
  ``r`` and the log-variance ``v`` in units of it, so every domain's targets have the same scale
  (the loss is per-domain normalised, see :mod:`.train_steps`). ``r`` is made zero-mean per map,
  so the model conserves sum E exactly wherever the clamp at 0 is inactive; the clamp keeps
  predictions non-negative.
* ``r`` and ``v`` come from a U-Net on the normalised inputs and the prior's prediction, each
  residual block modulated (FiLM) by an embedding of the domain. Its heads start at zero: an
  untrained model **is** the prior, with variance ``rho_d^2``.
* ``c_d`` (:class:`Calibration`): per-domain variance calibration, set on the validation split
  (:mod:`.calibration`) and used at prediction time, not in training.

Stored pyramid levels below the predicted one enter the encoder at the depth where their size
matches (for a 128 base, 64 after the first downsample). Inputs and outputs are physical
energies; the model carries its normalisation as non-trainable state. MC dropout (when
``dropout > 0``) adds an epistemic spread: total variance = mean of variances + variance of means.
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

from atlasstore.errors import ModelError
from atlasstore.nvp.prior import DomainPrior, apply_linear_ar, apply_prior
from atlasstore.physics.fields import block_sum

__all__ = [
    "NVP",
    "PRIOR_KINDS",
    "Calibration",
    "LevelStat",
    "MCPrediction",
    "ModelConfig",
    "ModelError",
    "Prediction",
    "PriorState",
    "combine_mc",
    "domain_of",
    "mc_predict",
    "predict",
    "pyramid_inputs",
]


#: the model's prior options (``model.prior``)
PRIOR_KINDS = ("physics", "linear_ar")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`NVP`."""

    width: int = 16            # channels at the base level
    max_width: int = 64        # channels double per downsample up to this
    depth: int = 3             # number of stride-2 downsamples
    blocks: int = 1            # residual blocks per stage
    dropout: float = 0.0       # MC dropout rate inside residual blocks
    groups: int = 8            # GroupNorm groups (reduced to divide the channels)
    embed: int = 8             # size of the domain embedding that modulates every block
    log_var_init: float = 0.0  # initial log variance, units of rho_d^2
    log_var_min: float = -10.0
    log_var_max: float = 6.0
    # the physics prior: rotation bank (degrees, with 0) and training windows per domain it is
    # fitted on
    prior_angles: tuple[float, ...] = ()
    prior_fit_windows: int = 64
    # which prior: "physics" (the fitted operator above) or "linear_ar" (the evaluation's linear
    # AR stencil, eval.ar_radius / eval.ar_steps, fitted on the same windows; .prior)
    prior: str = "physics"

    def __post_init__(self) -> None:
        if self.prior not in PRIOR_KINDS:
            raise ModelError(f"model prior must be one of {list(PRIOR_KINDS)}, got "
                             f"{self.prior!r}")
        object.__setattr__(self, "prior_angles", tuple(float(a) for a in self.prior_angles or ()))
        if self.prior_angles and 0.0 not in self.prior_angles:
            raise ModelError(f"model prior_angles must include 0, got {list(self.prior_angles)}")
        if any(not (math.isfinite(a) and -180 <= a <= 180) for a in self.prior_angles):
            raise ModelError(f"model prior_angles must be in [-180, 180] degrees, got "
                             f"{list(self.prior_angles)}")
        for name in ("width", "max_width", "depth", "blocks", "groups", "embed",
                     "prior_fit_windows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"model {name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"model dropout must be in [0, 1), got {self.dropout}")
        if not self.log_var_min < self.log_var_init < self.log_var_max:
            raise ModelError("model needs log_var_min < log_var_init < log_var_max, got "
                             f"{self.log_var_min}, {self.log_var_init}, {self.log_var_max}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ModelConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ModelError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prior_angles"] = list(self.prior_angles)
        if self.prior == "physics":  # the default; configs, run records and hashes as before
            del d["prior"]
        return d

    def widths(self) -> list[int]:
        cap = max(self.max_width, self.width)
        return [min(self.width * 2 ** d, cap) for d in range(self.depth + 1)]


class LevelStat(nnx.Variable):
    """Non-trainable normalisation statistics (saved with the model, never optimised)."""


class PriorState(nnx.Variable):
    """The fitted physics prior, one row per domain (saved with the model, never optimised)."""


class Calibration(nnx.Variable):
    """Per-domain variance factors c_d^2 set on the validation split (never optimised)."""


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


def _groups(c: int, want: int) -> int:
    return math.gcd(c, want) or 1


def domain_of(window_id: str) -> str:
    """The domain of a window id ``domain/sequence@t0``."""
    return window_id.split("/", 1)[0]


class _NumpyInit:
    """LeCun-normal kernels drawn with NumPy from one seeded generator: JAX's initialisers compile
    one small XLA program per distinct shape (seconds each on a loaded CPU); this costs nothing
    to compile and is just as deterministic."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4E5650]))

    def __call__(self, gain: float = 1.0) -> Any:
        def init(key: Any, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
            fan_in = int(np.prod(shape[:-1]))
            w = self.rng.standard_normal(tuple(shape)) * math.sqrt(gain / max(fan_in, 1))
            return jnp.asarray(w, dtype=dtype)
        return init


_ZEROS = nnx.initializers.zeros_init()


class ResBlock(nnx.Module):
    """Pre-activation residual block, GN-FiLM-SiLU-conv-dropout-GN-SiLU-conv, plus skip. The FiLM
    scale and shift come from the domain embedding and start at zero (identity)."""

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig, index: int, init: _NumpyInit, *,
                 rngs: nnx.Rngs):
        self.index = index
        self.norm1 = nnx.GroupNorm(c_in, num_groups=_groups(c_in, cfg.groups), rngs=rngs)
        self.film = nnx.Linear(cfg.embed, 2 * c_in, kernel_init=_ZEROS, bias_init=_ZEROS,
                               rngs=rngs)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), kernel_init=init(), rngs=rngs)
        self.norm2 = nnx.GroupNorm(c_out, num_groups=_groups(c_out, cfg.groups), rngs=rngs)
        self.drop = nnx.Dropout(cfg.dropout)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), kernel_init=init(0.1), rngs=rngs)
        self.skip = (nnx.Conv(c_in, c_out, (1, 1), kernel_init=init(), rngs=rngs)
                     if c_in != c_out else None)

    def __call__(self, x: jax.Array, cond: jax.Array, deterministic: bool,
                 key: jax.Array | None) -> jax.Array:
        scale, shift = jnp.split(self.film(cond)[:, None, None, :], 2, axis=-1)
        h = self.conv1(nnx.silu(self.norm1(x) * (1 + scale) + shift))
        h = nnx.silu(self.norm2(h))
        if not deterministic and self.drop.rate > 0:
            if key is None:
                raise ModelError("MC dropout (deterministic=False) needs a key")
            h = self.drop(h, deterministic=False, rngs=jax.random.fold_in(key, self.index))
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class NVP(nnx.Module):
    """Next-step energy predictor: physics prior + conditioned residual + calibrated variance.

    ``levels``: the input pyramid levels, finest (the predicted level) first; ``n_in``: input
    steps per level; ``stats``: ``{level: (mean, std)}`` of the energy (physical units) to
    normalise the network's inputs; ``priors``: the fitted :class:`~.prior.DomainPrior` of every
    domain the model predicts, by name (their order is the domain index); ``shape``: the base
    level's (y, x); ``seed``: of the weight initialisation; ``non_negative``: the field is
    extensive (energy), so its prediction is clipped at zero (an intensive field - a
    temperature anomaly - is not).
    """

    def __init__(self, cfg: ModelConfig, levels: Sequence[int], n_in: int,
                 stats: Mapping[int, tuple[float, float]], priors: Mapping[str, DomainPrior], *,
                 shape: tuple[int, int] | None = None, seed: int = 0,
                 non_negative: bool = True):
        levels = tuple(sorted({int(lv) for lv in levels}, reverse=True))
        if not levels:
            raise ModelError("no input levels")
        if not priors:
            raise ModelError("no domains: the model needs the fitted prior of each domain")
        self.cfg, self.levels, self.base, self.n_in = cfg, levels, levels[0], int(n_in)
        self.non_negative = bool(non_negative)
        if self.n_in < 1:
            raise ModelError(f"n_in must be >= 1, got {n_in}")
        entry: dict[int, int] = {}
        for lv in levels[1:]:
            f = self.base // lv
            d = round(math.log2(f)) if f > 0 else -1
            if self.base % lv or 2 ** d != f:
                raise ModelError(f"level {lv} is not base {self.base} / 2**d; levels must halve")
            if d > cfg.depth:
                raise ModelError(f"level {lv} enters at depth {d} but the model has depth "
                                 f"{cfg.depth}; raise model.depth or drop the level")
            entry[d] = lv
        self.entry = tuple(sorted(entry.items()))  # ((depth, level), ...): static, hashable
        if shape is not None and min(int(s) for s in shape) < 1:
            raise ModelError(f"base maps must have a positive size, got {tuple(shape)}")
        missing = [lv for lv in levels if lv not in stats]
        if missing:
            raise ModelError(f"no normalisation statistics for level(s) {missing}")
        self.level_mean = LevelStat(jnp.asarray([float(stats[lv][0]) for lv in levels]))
        self.level_std = LevelStat(jnp.asarray([max(float(stats[lv][1]), 1e-12)
                                                for lv in levels]))
        self.domains = tuple(priors)
        j = len(cfg.prior_angles)
        for name, p in priors.items():
            if len(p.weights) != j:
                raise ModelError(f"the prior of {name} has {len(p.weights)} rotation weights, the "
                                 f"model's bank {j} angles")
        ps = [priors[d] for d in self.domains]
        self.prior_sigma = PriorState(jnp.asarray([p.sigma for p in ps], jnp.float32))
        self.prior_tau = PriorState(jnp.asarray([p.tau for p in ps], jnp.float32))
        self.prior_weights = PriorState(jnp.asarray([list(p.weights) or [1.0] for p in ps],
                                                    jnp.float32))
        self.rho = PriorState(jnp.asarray([max(p.rmse, 1e-12) for p in ps], jnp.float32))
        if cfg.prior == "linear_ar":  # (a physics model's state has no such entries)
            ks = [None if p.ar_kernels is None else np.asarray(p.ar_kernels, np.float32)
                  for p in ps]
            shapes = {None if k is None else k.shape[1:] for k in ks}
            if None in shapes or len(shapes) != 1 or any(k.ndim != 3 for k in ks if k is not None):
                raise ModelError("model prior 'linear_ar' needs every domain's fitted stencil, "
                                 f"all of one size; got {sorted(map(str, shapes))}")
            steps = max(k.shape[0] for k in ks if k is not None)
            if steps > self.n_in:
                raise ModelError(f"a {steps}-step linear AR stencil needs n_in >= {steps}, got "
                                 f"{self.n_in}")
            self.ar_kernels = PriorState(jnp.asarray(np.stack([  # fewer steps: zero-padded
                np.pad(k, ((0, steps - k.shape[0]), (0, 0), (0, 0))) for k in ks if k is not None
            ])))
            self.ar_bias = PriorState(jnp.asarray([p.ar_bias for p in ps], jnp.float32))
        self.var_scale = Calibration(jnp.ones(len(ps), jnp.float32))
        self._build(seed)

    def _build(self, seed: int) -> None:
        cfg, w = self.cfg, self.cfg.widths()
        idx = iter(range(10_000))
        init = _NumpyInit(seed)
        rngs = nnx.Rngs(seed)  # unused by our initialisers; nnx layers require one
        self.embedding = nnx.Embed(len(self.domains), cfg.embed, rngs=rngs,
                                   embedding_init=lambda k, s, d=jnp.float32: jnp.asarray(
                                       init.rng.standard_normal(tuple(s)), d))
        self.stem = nnx.Conv(self.n_in + 1, w[0], (3, 3), kernel_init=init(), rngs=rngs)
        self.enc0 = nnx.List([ResBlock(w[0], w[0], cfg, next(idx), init, rngs=rngs)
                              for _ in range(cfg.blocks)])
        self.down: nnx.List[nnx.Conv] = nnx.List()
        self.merge: nnx.List[nnx.Conv | None] = nnx.List()
        self.enc: nnx.List[nnx.List[ResBlock]] = nnx.List()
        entry = dict(self.entry)
        for d in range(1, cfg.depth + 1):
            self.down.append(nnx.Conv(w[d - 1], w[d], (3, 3), strides=2, kernel_init=init(),
                                      rngs=rngs))
            self.merge.append(nnx.Conv(w[d] + self.n_in, w[d], (1, 1), kernel_init=init(),
                                       rngs=rngs) if d in entry else None)
            self.enc.append(nnx.List([ResBlock(w[d], w[d], cfg, next(idx), init, rngs=rngs)
                                      for _ in range(cfg.blocks)]))
        self.mid = ResBlock(w[-1], w[-1], cfg, next(idx), init, rngs=rngs)
        self.fuse: nnx.List[nnx.Conv] = nnx.List()
        self.dec: nnx.List[nnx.List[ResBlock]] = nnx.List()
        for d in range(cfg.depth - 1, -1, -1):
            self.fuse.append(nnx.Conv(w[d + 1] + w[d], w[d], (1, 1), kernel_init=init(),
                                      rngs=rngs))
            self.dec.append(nnx.List([ResBlock(w[d], w[d], cfg, next(idx), init, rngs=rngs)
                                      for _ in range(cfg.blocks)]))
        self.head_norm = nnx.GroupNorm(w[0], num_groups=_groups(w[0], cfg.groups), rngs=rngs)
        self.head_mean = nnx.Conv(w[0], 1, (3, 3), kernel_init=_ZEROS, bias_init=_ZEROS,
                                  rngs=rngs)
        self.head_logvar = nnx.Conv(w[0], 1, (3, 3), kernel_init=_ZEROS,
                                    bias_init=nnx.initializers.constant(cfg.log_var_init),
                                    rngs=rngs)

    # ------------------------------------------------------------------ helpers

    def domain_index(self, ids: Sequence[str]) -> np.ndarray:
        """Domain indices (int32) of window ids ``domain/sequence@t0``."""
        known = {d: i for i, d in enumerate(self.domains)}
        out = []
        for w in ids:
            d = domain_of(w)
            if d not in known:
                raise ModelError(f"the model was trained on domains {list(self.domains)}; it has "
                                 f"no prior for {d!r} (window {w})")
            out.append(known[d])
        return np.asarray(out, np.int32)

    def prior(self, x: jax.Array, domain: jax.Array) -> jax.Array:
        """P_d for maps of domains ``domain`` (B,): ``x`` is the history (B, n, y, x), oldest
        first, or E_t alone (B, y, x). The physics prior reads E_t only; the linear AR one its
        last ``p`` steps."""
        if self.cfg.prior == "linear_ar":
            h = x if x.ndim == 4 else x[:, None]
            return apply_linear_ar(h, self.ar_kernels[...][domain], self.ar_bias[...][domain])
        e_t = x[:, -1] if x.ndim == 4 else x
        angles = self.cfg.prior_angles
        return apply_prior(e_t, self.prior_sigma[...][domain], self.prior_tau[...][domain],
                           self.prior_weights[...][domain] if angles else None, angles)

    def _norm(self, x: jax.Array, i: int) -> jax.Array:
        return (x - self.level_mean[...][i]) / self.level_std[...][i]

    def _network(self, inputs: Mapping[int, jax.Array], prior: jax.Array, cond: jax.Array,
                 deterministic: bool, key: jax.Array | None) -> jax.Array:
        x = jnp.concatenate([self._norm(inputs[self.base], 0),
                             self._norm(prior[:, None], 0)], axis=1)
        ny, nx = x.shape[-2:]
        m = 2 ** self.cfg.depth  # grids that do not divide: edge-padded, the output cropped
        h = self.stem(_pad_to(jnp.transpose(x, (0, 2, 3, 1)), -(-ny // m) * m, -(-nx // m) * m))
        for blk in self.enc0:
            h = blk(h, cond, deterministic, key)
        skips = [h]
        entry = dict(self.entry)
        for d in range(1, self.cfg.depth + 1):
            h = self.down[d - 1](nnx.silu(h))
            lv = entry.get(d)
            merge = self.merge[d - 1]
            if lv is not None and merge is not None:
                xl = jnp.transpose(self._norm(inputs[lv], self.levels.index(lv)), (0, 2, 3, 1))
                if all(a <= b for a, b in zip(xl.shape[1:3], h.shape[1:3], strict=True)):
                    xl = _pad_to(xl, h.shape[1], h.shape[2])
                if xl.shape[1:3] != h.shape[1:3]:
                    raise ModelError(f"level {lv} maps are {xl.shape[1:3]}, expected "
                                     f"{h.shape[1:3]} at encoder depth {d}")
                h = merge(jnp.concatenate([h, xl], axis=-1))
            for blk in self.enc[d - 1]:
                h = blk(h, cond, deterministic, key)
            skips.append(h)
        h = self.mid(h, cond, deterministic, key)
        for j, d in enumerate(range(self.cfg.depth - 1, -1, -1)):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = self.fuse[j](jnp.concatenate([h, skips[d]], axis=-1))
            for blk in self.dec[j]:
                h = blk(h, cond, deterministic, key)
        return nnx.silu(self.head_norm(h[:, :ny, :nx]))

    # ------------------------------------------------------------------ forward

    def __call__(self, inputs: Mapping[int, jax.Array], domain: jax.Array, *,
                 deterministic: bool = True, key: jax.Array | None = None,
                 calibrated: bool = True) -> Prediction:
        """Predict E_{t+1} from ``inputs[level]`` (B, n_in, y, x) of domains ``domain`` (B,)
        (indices into :attr:`domains`, see :meth:`domain_index`); physical units.

        ``deterministic=False`` turns dropout on (``key`` required); ``calibrated=False`` leaves
        out the per-domain variance calibration (training).
        """
        if not deterministic and self.cfg.dropout > 0 and key is None:
            raise ModelError("deterministic=False needs a PRNG key for dropout")
        missing = [lv for lv in self.levels if lv not in inputs]
        if missing:
            raise ModelError(f"inputs lack level(s) {missing}; the model takes {list(self.levels)}")
        xb = inputs[self.base]
        if xb.ndim != 4 or xb.shape[1] != self.n_in:
            raise ModelError(f"inputs[{self.base}] must be (B, {self.n_in}, y, x), got {xb.shape}")
        domain = jnp.asarray(domain, jnp.int32)
        if domain.shape != (xb.shape[0],):
            raise ModelError(f"domain must be ({xb.shape[0]},) indices, got {domain.shape}")
        prior = self.prior(xb, domain)
        h = self._network(inputs, prior, self.embedding(domain), deterministic, key)
        r = self.head_mean(h)[..., 0]
        r = r - jnp.mean(r, axis=(-2, -1), keepdims=True)
        rho = self.rho[...][domain][:, None, None]
        mean = prior + rho * r
        if self.non_negative:  # an extensive field (energy) cannot go below zero
            mean = jnp.maximum(mean, 0.0)
        log_var = (jnp.clip(self.head_logvar(h)[..., 0], self.cfg.log_var_min,
                            self.cfg.log_var_max) + 2 * jnp.log(rho))
        if calibrated:
            log_var = log_var + jnp.log(self.var_scale[...][domain])[:, None, None]
        return Prediction(mean, log_var)


def _pad_to(x: jax.Array, ny: int, nx: int) -> jax.Array:
    """(B, y, x, C) maps edge-padded at their far end to ``ny`` x ``nx`` (the U-Net halves
    ``depth`` times, so real grids - 37x49, 18x432 - are padded up to a multiple of 2**depth;
    the prediction is cropped back, and the loss only sees the real cells)."""
    py, px = ny - x.shape[1], nx - x.shape[2]
    if py == 0 and px == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, py), (0, px), (0, 0)), mode="edge")


# ---------------------------------------------------------------------- prediction helpers


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
def predict(model: NVP, inputs: Mapping[int, jax.Array], domain: jax.Array) -> Prediction:
    """Deterministic, calibrated prediction (dropout off)."""
    return model(inputs, domain, deterministic=True)


@nnx.jit(static_argnames=("n_samples",))
def mc_predict(model: NVP, inputs: Mapping[int, jax.Array], domain: jax.Array, key: jax.Array,
               n_samples: int = 16) -> MCPrediction:
    """MC-dropout predictive moments from ``n_samples`` stochastic forward passes.

    With ``n_samples == 0`` (or a model without dropout) the deterministic prediction is used
    and the epistemic variance is zero.
    """
    if n_samples <= 0 or model.cfg.dropout == 0:
        p = model(inputs, domain, deterministic=True)
        v = jnp.exp(p.log_var)
        return MCPrediction(p.mean, v, jnp.zeros_like(v), v)

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        p = model(inputs, domain, deterministic=False, key=k)
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
