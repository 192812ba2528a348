"""Per-domain variance calibration: scale each domain's predicted standard deviation so that its
central 90 % interval covers 90 % of the calibration pixels (the validation split's).

The interval of a Gaussian predictive is ``mu +- z_q * std`` with ``z_q = Phi^-1(0.5 + q/2)``.
With standardised errors ``|z| = |y - mu| / std`` the factor ``c = quantile_q(|z|) / z_q`` makes
the interval ``mu +- z_q * c * std`` cover exactly a share ``q`` of those pixels; the model then
multiplies its variance by ``c^2`` (:class:`~.model.Calibration`). A quantile, not a variance
ratio: the errors of the rotating domain are far from Gaussian, and coverage is what is asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["CALIBRATION_LEVEL", "coverage_factor", "domain_factors"]

#: the interval calibrated on
CALIBRATION_LEVEL = 0.9


def coverage_factor(abs_z: Any, level: float = CALIBRATION_LEVEL) -> float:
    """The factor c on the standard deviation that makes the central ``level`` interval cover a
    share ``level`` of the standardised errors ``abs_z`` (any shape)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = np.asarray(abs_z, np.float64).ravel()
    z = z[np.isfinite(z)]
    if not z.size:
        raise ValueError("no finite standardised errors to calibrate on")
    c = float(np.quantile(z, level)) / float(special.ndtri(0.5 + level / 2))
    return c if c > 0 else 1.0


def domain_factors(abs_z: Mapping[int, Any], n_domains: int,
                   level: float = CALIBRATION_LEVEL) -> NDArray[np.float64]:
    """Per-domain factors (n_domains,): from each domain's errors; a domain without calibration
    data gets the factor of all the others pooled (1 when there are none)."""
    have = {int(d): np.asarray(v, np.float64).ravel() for d, v in abs_z.items()
            if np.asarray(v).size}
    pooled = coverage_factor(np.concatenate(list(have.values())), level) if have else 1.0
    return np.asarray([coverage_factor(have[d], level) if d in have else pooled
                       for d in range(n_domains)])
