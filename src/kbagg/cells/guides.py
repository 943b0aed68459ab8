"""Per-cell CRISPR guide calls from guide-capture UMI counts (the ``crispr`` modality).

Cell Ranger's protospacer calling (the anchor) fits, for each guide, a two-component
Gaussian mixture to the log UMI counts of the cells and calls the guide in a cell whose
count lies in the upper component and reaches a minimum of UMIs (3 by default). kbagg
fits the same per-guide two-component model, but on the counts themselves, as a mixture of
two negative binomials (background: ambient guide molecules; signal: the guide the cell
carries), by EM:

1. start: the cells are split in two at the optimal 1-D two-means cut of ``log1p(count)``;
2. EM fits both negative binomials (weighted method of moments for the size) and the signal
   fraction; a cell's posterior probability of the signal component gives the guide's
   threshold: the smallest count from which on the posterior stays above 0.5, and at least
   `min_umis`;
3. a cell carries every guide whose threshold it reaches: ``guide_call`` joins their names
   with ``|`` (var order), ``n_guides`` counts them, ``guide_umis`` sums their UMIs.

Counts of 0 enter the fit (they are most of the background), which the log-scale Gaussian
of Cell Ranger cannot do; a background with a mean of several UMIs (much ambient guide RNA)
gets a threshold above it instead of a fixed 3. tests/benchmarks/bench_guides.py measures
both against truth on the simulator and against crispat's methods (Braunger et al. 2024).

When the data cannot support a call, the result says so and a warning names the sample:

- a guide whose signal component is not `MIN_SIGNAL_FOLD` times its background, or that
  has too few cells above `min_umis` to fit two components, is called in no cell
  (``status`` ``not_separated``) and named in a warning;
- a sample in which no cell reaches `min_umis` for any guide gets a warning that there are
  too few UMIs to call guides: its empty calls mean "not measured", not "no guide".
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import expit

from kbagg.cells.nb import nb_log_pmf
from kbagg.errors import KbaggError
from kbagg.obs_columns import GUIDE_COLUMNS

GUIDE_SEPARATOR = "|"
DEFAULT_MIN_UMIS = 3  # Cell Ranger's default min_crispr_umi
MIN_SIGNAL_FOLD = 4.0  # signal mean / background mean below this: the guide does not separate
MIN_FIT_CELLS = 5  # fewer cells than this at >= min_umis: too few to fit a signal component
EM_MAX_ITERATIONS = 200
EM_TOLERANCE = 1e-7
CALLED, NOT_SEPARATED, TOO_FEW = "called", "not_separated", "too_few_cells"


class GuideCallWarning(UserWarning):
    """A guide, or a whole sample, whose counts cannot support a guide call."""


def call_guides(
    guides: ad.AnnData, sample: str, min_umis: int = DEFAULT_MIN_UMIS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Call the guides each cell carries (see the module docstring).

    Parameters
    ----------
    guides
        Cells x guides raw UMI counts (the ``crispr`` modality); var_names are the guide
        names.
    sample
        The sample's name, for warnings and errors.
    min_umis
        The fewest UMIs of a guide in a cell for it to be called (Cell Ranger's
        ``min_crispr_umi``).

    Returns
    -------
    calls
        One row per cell (index: obs_names): ``guide_call`` (names joined with ``|``, empty
        for none), ``n_guides`` and ``guide_umis`` (UMIs of the called guides).
    fits
        One row per guide (index: guide names): ``status`` (``called``,
        ``not_separated``, ``too_few_cells``), ``threshold_umis`` (the fewest UMIs called;
        -1 when the guide is called nowhere), ``background_mean_umis``,
        ``signal_mean_umis``, ``background_size``, ``signal_size``, ``signal_fraction``
        and ``n_cells`` (cells called).
    """
    counts = _counts(guides, sample)
    if isinstance(min_umis, bool) or not isinstance(min_umis, int | np.integer) or min_umis < 1:
        raise KbaggError(f"sample '{sample}': guide calls: min_umis must be an integer >= 1")
    names = [str(v) for v in guides.var_names]
    n_cells, n_guides = counts.shape
    positive = np.zeros((n_cells, n_guides), dtype=bool)
    rows = []
    for g in range(n_guides):
        fit = fit_guide(counts[:, g], min_umis)
        if fit["status"] == CALLED:
            positive[:, g] = counts[:, g] >= fit["threshold_umis"]
        fit["n_cells"] = int(positive[:, g].sum())
        rows.append(fit)
    fits = pd.DataFrame(rows, index=pd.Index(names, name="guide"))
    _warn(sample, counts, fits, min_umis)
    name_array = np.array(names, dtype=object)
    calls = pd.DataFrame(
        {
            "guide_call": [GUIDE_SEPARATOR.join(name_array[row]) for row in positive],
            "n_guides": positive.sum(axis=1).astype(np.int64),
            "guide_umis": (counts * positive).sum(axis=1).astype(np.int64),
        },
        index=guides.obs_names.copy(),
    )
    return calls, fits


def add_guide_calls(guides: ad.AnnData, sample: str, min_umis: int = DEFAULT_MIN_UMIS) -> None:
    """`call_guides`, written into `guides`: obs columns `GUIDE_COLUMNS` and
    ``uns['guide_calls']`` (``sample``, ``min_umis`` and the per-guide ``fits`` table).

    Parameters
    ----------
    guides
        Cells x guides raw UMI counts; changed in place.
    sample
        The sample's name, for warnings and errors.
    min_umis
        As in `call_guides`.
    """
    calls, fits = call_guides(guides, sample, min_umis)
    for column in GUIDE_COLUMNS:
        guides.obs[column] = calls[column].to_numpy()
    guides.uns["guide_calls"] = {
        "sample": sample,
        "min_umis": int(min_umis),
        "method": "per-guide two-component negative-binomial mixture (EM)",
        "fits": fits,
    }


def _counts(guides: ad.AnnData, sample: str) -> np.ndarray:
    if guides.n_vars < 1:
        raise KbaggError(f"sample '{sample}': guide calls need at least 1 guide, got none")
    if guides.n_obs < 2:
        raise KbaggError(
            f"sample '{sample}': guide calls need at least 2 cells, got {guides.n_obs}"
        )
    if guides.var_names.has_duplicates:
        dup = guides.var_names[guides.var_names.duplicated()][0]
        raise KbaggError(f"sample '{sample}': guide '{dup}' appears twice in the guide counts")
    x = guides.X.toarray() if sp.issparse(guides.X) else np.asarray(guides.X)
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all() or (x < 0).any() or (x != np.round(x)).any():
        raise KbaggError(f"sample '{sample}': guide counts must be non-negative integer UMI counts")
    return x


def fit_guide(counts: np.ndarray, min_umis: int = DEFAULT_MIN_UMIS) -> dict:
    """The two-component negative-binomial mixture of one guide's counts across cells.

    Parameters
    ----------
    counts
        One guide's UMI counts, one per cell.
    min_umis
        The fewest UMIs called.

    Returns
    -------
    ``status``, ``threshold_umis``, ``background_mean_umis``, ``signal_mean_umis``,
    ``background_size``, ``signal_size`` and ``signal_fraction`` (NaN where not fitted).
    """
    counts = np.asarray(counts, dtype=float)
    result = {
        "status": TOO_FEW,
        "threshold_umis": -1,
        "background_mean_umis": float(counts.mean()),
        "signal_mean_umis": np.nan,
        "background_size": np.nan,
        "signal_size": np.nan,
        "signal_fraction": 0.0,
    }
    if int((counts >= min_umis).sum()) < MIN_FIT_CELLS:
        return result
    logs = np.log1p(counts)
    start = logs > _two_means_cut(logs)
    if start.sum() < 2 or (~start).sum() < 2:
        result["status"] = NOT_SEPARATED
        return result
    responsibility = start.astype(float)
    previous = -np.inf
    for _ in range(EM_MAX_ITERATIONS):
        fraction = float(np.clip(responsibility.mean(), 1e-6, 1 - 1e-6))
        mu_b, size_b = _weighted_nb(counts, 1.0 - responsibility)
        mu_s, size_s = _weighted_nb(counts, responsibility)
        log_b = nb_log_pmf(counts, mu_b, size_b) + np.log1p(-fraction)
        log_s = nb_log_pmf(counts, mu_s, size_s) + np.log(fraction)
        responsibility = expit(log_s - log_b)
        loglik = float(np.logaddexp(log_b, log_s).sum())
        if loglik - previous < EM_TOLERANCE * abs(loglik):
            break
        previous = loglik
    if mu_s < mu_b:
        mu_b, mu_s, size_b, size_s = mu_s, mu_b, size_s, size_b
        fraction = 1.0 - fraction
    result.update(
        background_mean_umis=mu_b,
        signal_mean_umis=mu_s,
        background_size=size_b,
        signal_size=size_s,
        signal_fraction=fraction,
    )
    if mu_s < MIN_SIGNAL_FOLD * max(mu_b, 1.0 / MIN_SIGNAL_FOLD):
        result["status"] = NOT_SEPARATED
        return result
    # the threshold: the smallest count from which on the signal posterior stays > 0.5
    grid = np.arange(int(counts.max()) + 1, dtype=float)
    posterior = expit(
        nb_log_pmf(grid, mu_s, size_s)
        + np.log(fraction)
        - nb_log_pmf(grid, mu_b, size_b)
        - np.log1p(-fraction)
    )
    below = np.flatnonzero(posterior <= 0.5)
    threshold = int(below[-1] + 1) if len(below) else 0
    result["threshold_umis"] = max(threshold, int(min_umis))
    result["status"] = CALLED
    return result


def _warn(sample: str, counts: np.ndarray, fits: pd.DataFrame, min_umis: int) -> None:
    if not (counts >= min_umis).any():
        warnings.warn(
            f"sample '{sample}': too few guide UMIs to call guides: no cell has {min_umis} "
            f"or more UMIs of any guide (at most {int(counts.max(initial=0))}); "
            "its empty guide calls mean 'not measured'",
            GuideCallWarning,
            stacklevel=3,
        )
        return
    weak = fits.index[fits["status"] != CALLED].tolist()
    if weak:
        shown = ", ".join(f"'{g}'" for g in weak[:10]) + (" ..." if len(weak) > 10 else "")
        warnings.warn(
            f"sample '{sample}': {len(weak)} of {len(fits)} guides do not separate from "
            f"background (signal not {MIN_SIGNAL_FOLD:g}x the background, or fewer than "
            f"{MIN_FIT_CELLS} cells with {min_umis}+ UMIs), called in no cell: {shown}",
            GuideCallWarning,
            stacklevel=3,
        )
    if not fits["n_cells"].any():
        warnings.warn(
            f"sample '{sample}': no guide called in any cell",
            GuideCallWarning,
            stacklevel=3,
        )


def _two_means_cut(values: np.ndarray) -> float:
    """The cut of 1-D two-means (Otsu) on sorted values: between-group variance maximal."""
    v = np.sort(values)
    n = len(v)
    csum = np.cumsum(v)
    k = np.arange(1, n)
    left_mean = csum[:-1] / k
    right_mean = (csum[-1] - csum[:-1]) / (n - k)
    between = k * (n - k) * (left_mean - right_mean) ** 2
    distinct = v[1:] > v[:-1]
    if not distinct.any():
        return float(v[-1])
    best = int(np.argmax(np.where(distinct, between, -1.0)))
    return float((v[best] + v[best + 1]) / 2)


def _weighted_nb(counts: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Negative-binomial mean and size by weighted method of moments."""
    total = max(float(weight.sum()), 1e-9)
    mean = max(float((weight * counts).sum() / total), 1e-3)
    var = float((weight * (counts - mean) ** 2).sum() / total)
    size = mean**2 / (var - mean) if var > mean * (1 + 1e-6) else 1e4
    return mean, float(np.clip(size, 0.05, 1e4))
