"""The normal distributions both demultiplexing models use for log library sizes."""

from __future__ import annotations

import numpy as np

MIN_SD = 0.05  # a class's fitted sd never falls below this
MIN_WEIGHT = 5.0  # cells of posterior weight below which the fallback is kept


def weighted_normal(values, weights, fallback) -> tuple[float, float]:
    """The weighted mean and sd of a normal.

    Parameters
    ----------
    values
        One value per cell (e.g. centred log RNA UMIs).
    weights
        Each cell's posterior weight of the class.
    fallback
        ``(mean, sd)`` returned while the weights sum to under `MIN_WEIGHT` cells.

    Returns
    -------
    ``(mean, sd)``, the sd at least `MIN_SD`.
    """
    total = weights.sum()
    if total < MIN_WEIGHT:
        return tuple(fallback)
    mean = float((weights * values).sum() / total)
    sd = float(np.sqrt((weights * (values - mean) ** 2).sum() / total))
    return mean, max(sd, MIN_SD)


def normal_log_pdf(values, mean, sd) -> np.ndarray:
    """The normal log density of `values` (broadcast against `mean` and `sd`)."""
    return -0.5 * ((values - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)
