"""The negative binomial, as kbagg's mixture models (hashtags, guides) use it."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def nb_log_pmf(values: np.ndarray, mean: np.ndarray | float, size: float) -> np.ndarray:
    """Negative binomial log-pmf of counts.

    Parameters
    ----------
    values
        Counts (non-negative integers, any float or int dtype).
    mean
        The mean, a scalar or broadcastable to `values`; clipped below at 1e-6.
    size
        The size (inverse dispersion): variance = mean + mean**2 / size.

    Returns
    -------
    The log-probability of each count.
    """
    mean = np.maximum(mean, 1e-6)
    return (
        gammaln(values + size)
        - gammaln(size)
        - gammaln(values + 1)
        + size * np.log(size / (size + mean))
        + values * np.log(mean / (size + mean))
    )
