"""The negative binomial, as kbagg's mixture models (hashtags, guides) use it."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def nb_log_pmf(
    values: np.ndarray,
    mean: np.ndarray | float,
    size: float,
    count_term: np.ndarray | None = None,
) -> np.ndarray:
    """Negative binomial log-pmf of counts.

    Parameters
    ----------
    values
        Counts (non-negative integers, any float or int dtype).
    mean
        The mean, a scalar or broadcastable to `values`; clipped below at 1e-6.
    size
        The size (inverse dispersion): variance = mean + mean**2 / size.
    count_term
        ``nb_count_term(values, size)``, when the caller evaluates the same counts and size
        at several means (it is most of the cost); computed here when None.

    Returns
    -------
    The log-probability of each count.
    """
    mean = np.maximum(mean, 1e-6)
    if count_term is None:
        count_term = nb_count_term(values, size)
    return count_term + size * np.log(size / (size + mean)) + values * np.log(mean / (size + mean))


def nb_count_term(values: np.ndarray, size: float) -> np.ndarray:
    """The part of `nb_log_pmf` that does not depend on the mean:
    ``log Gamma(values + size) - log Gamma(size) - log Gamma(values + 1)``."""
    return gammaln(values + size) - gammaln(size) - gammaln(values + 1)
