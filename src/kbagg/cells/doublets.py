"""Per-cell doublet scores (Scrublet, through scanpy).

`score_doublets` runs `scanpy.pp.scrublet` with a fixed seed and exact nearest neighbours.
Scrublet's automatic threshold needs scikit-image (`skimage.filters.threshold_minimum`); it
is not a dependency here, so the same histogram-minimum method is computed in
`threshold_minimum`. Samples scrublet cannot score (too few cells, or scrublet raises) get
missing values and a reason, never an exception: one odd sample must not stop a workflow.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import ndimage

N_PRINCIPAL_COMPONENTS = 30  # scrublet's default embedding
# Scrublet's PCA (ARPACK) needs more cells than components, and its kNN graph uses
# round(sqrt(n) / 2) neighbours: below this many cells it cannot run.
MIN_CELLS = N_PRINCIPAL_COMPONENTS + 1


class DoubletScores(tuple):
    """`(doublet_score, predicted_doublet)` per cell, in the order of `adata.obs`, plus
    `reason` (why values are missing, else None) and the scrublet `threshold` used.

    `doublet_score` is a float array, NaN where scrublet gave none; `predicted_doublet` a
    pandas nullable boolean array, <NA> there. Unpacks as a pair:
    `score, predicted = score_doublets(adata)`.
    """

    def __new__(cls, doublet_score, predicted_doublet, reason=None, threshold=None):
        pair = super().__new__(cls, (doublet_score, predicted_doublet))
        pair.reason, pair.threshold = reason, threshold
        return pair

    @property
    def doublet_score(self) -> np.ndarray:
        return self[0]

    @property
    def predicted_doublet(self) -> pd.arrays.BooleanArray:
        return self[1]


def _missing(n: int, reason: str, scores: np.ndarray | None = None) -> DoubletScores:
    return DoubletScores(
        np.full(n, np.nan) if scores is None else scores,
        pd.array([pd.NA] * n, dtype="boolean"),
        reason,
    )


def threshold_minimum(values: np.ndarray, n_bins: int = 256, max_iter: int = 10_000):
    """The minimum between the two modes of `values`' histogram, or None when it has no two
    modes (the method of skimage.filters.threshold_minimum, which scrublet uses).

    Parameters
    ----------
    values
        Scores, e.g. scrublet's doublet scores of its simulated doublets.
    n_bins
        Histogram bins over [min, max].
    max_iter
        Smoothing passes (moving average of 3 bins) allowed to reach two maxima.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0 or values.min() == values.max():
        return None
    counts, edges = np.histogram(values, bins=n_bins, range=(values.min(), values.max()))
    centres = (edges[:-1] + edges[1:]) / 2
    smooth = counts.astype(float)
    for _ in range(max_iter):
        smooth = ndimage.uniform_filter1d(smooth, 3)
        # A maximum is where the curve starts falling after last rising (plateaus allowed).
        step = np.sign(np.diff(smooth))
        last_change = np.maximum.accumulate(np.where(step != 0, np.arange(len(step)), -1))
        rising_before = np.concatenate(
            ([True], np.where(last_change[:-1] >= 0, step[last_change[:-1]] > 0, True))
        )
        maxima = np.flatnonzero((step < 0) & rising_before)
        if len(maxima) < 3:
            break
    else:
        return None
    if len(maxima) != 2:
        return None
    return float(centres[maxima[0] + np.argmin(smooth[maxima[0] : maxima[1] + 1])])


def score_doublets(
    adata: ad.AnnData, *, seed: int = 0, expected_doublet_rate: float = 0.05
) -> DoubletScores:
    """Scrublet doublet scores and calls for the cells of one sample.

    Parameters
    ----------
    adata
        Cells x genes raw UMI counts of ONE sample (scrublet assumes a single sample).
        Not modified.
    seed
        Seed of scrublet's doublet simulation, PCA and neighbours: same seed, same result.
    expected_doublet_rate
        Scrublet's prior doublet rate.

    Returns
    -------
    DoubletScores: the pair (doublet_score, predicted_doublet), with `.reason` and
    `.threshold`. With fewer than MIN_CELLS cells, or when scrublet raises, all values are
    missing and `reason` says why; when scrublet's simulated-doublet scores have no two
    modes the scores are kept and only the calls are missing (cells scrublet filters out,
    with < 3 genes, are missing too).
    """
    n_cells = adata.n_obs
    if n_cells < MIN_CELLS:
        return _missing(
            n_cells,
            f"{n_cells} cells: scrublet embeds cells in {N_PRINCIPAL_COMPONENTS} principal "
            f"components and needs at least {MIN_CELLS}",
        )
    import scanpy as sc

    counts = adata.X if sp.issparse(adata.X) else sp.csr_matrix(np.asarray(adata.X))
    work = ad.AnnData(
        sp.csr_matrix(counts, dtype=np.float32),
        obs=pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str)),
    )
    try:
        sc.pp.scrublet(
            work,
            expected_doublet_rate=expected_doublet_rate,
            n_prin_comps=N_PRINCIPAL_COMPONENTS,
            use_approx_neighbors=False,
            threshold=0.0,  # placeholder: the calls are made below with threshold_minimum
            random_state=seed,
            verbose=False,
        )
    except Exception as error:  # any scrublet failure is a per-sample "not scored"
        return _missing(n_cells, f"scrublet failed: {type(error).__name__}: {error}")
    scores = work.obs["doublet_score"].to_numpy(dtype=float)
    threshold = threshold_minimum(work.uns["scrublet"]["doublet_scores_sim"])
    if threshold is None:
        return _missing(
            n_cells,
            "scrublet's simulated doublet scores have no two modes: no threshold, no calls",
            scores,
        )
    called = pd.array(scores > threshold, dtype="boolean")
    called[np.isnan(scores)] = pd.NA
    return DoubletScores(scores, called, None, threshold)
