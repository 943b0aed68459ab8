"""Demultiplexing of hashtag (Multiplexing Capture) counts: which sample each cell came from.

Method: a two-component negative-binomial mixture per hashtag, as demuxmix (Klein et al.
2023) without its regression term, on the raw hashtag UMI counts of the cells called on
gene expression:

1. each hashtag is CLR-normalised across cells (Seurat's ``log1p(x / exp(mean(log1p(x))))``)
   and its cells are split in two at the optimal 1-D two-means cut of those values;
2. from that start, EM fits background and signal negative binomials (weighted method of
   moments) and the signal fraction, giving each cell's probability that the hashtag is
   really on it (``prob:<hashtag>``);
3. a cell positive (probability > 0.5) for exactly one hashtag is a singlet of it, for two
   or more a doublet, for none a negative. A hashtag whose signal component is not at least
   `MIN_SIGNAL_FOLD` times its background (an unused hashtag, e.g. 12 CMOs in the
   reference, 4 in the experiment) is positive nowhere.

Why this method (tests/benchmarks/bench_demux.py: 5 simulated data sets of 2,000 cells for
each of 4, 8 and 12 hashtags, `kbagg.simulate.features`): on its worst data set it assigned
>= 99.2 % of true singlets to the right hashtag and found >= 99.4 % of doublets and
>= 97.8 % of negatives, also with 8 unused hashtags added. Seurat's HTODemux (global
k-means, 0.99 quantile of each background) assigned 99.2 % of singlets with 4 hashtags but
92 % with 8 and 75 % with 12 (one false positive in 100 per hashtag adds up), and 67 %
with 8 unused hashtags; scanpy's `hashsolo` assigned >= 99.4 % of singlets but found only
41-84 % of negatives (default or true priors) and fell to 53-87 % of singlets with unused
hashtags. Only numpy/scipy are needed.

`assign_samples` turns the calls into sample names with a hashtag -> sample mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import expit, gammaln

from kbagg.errors import KbaggError

SINGLET, DOUBLET, NEGATIVE = "singlet", "doublet", "negative"
MIN_SIGNAL_FOLD = 5.0  # signal mean / background mean below this: the hashtag is unused
EM_MAX_ITERATIONS = 200
EM_TOLERANCE = 1e-6


class DemuxError(KbaggError):
    """Hashtag counts that cannot be demultiplexed, or a mapping that misses a hashtag."""


def clr(counts: np.ndarray) -> np.ndarray:
    """Seurat's CLR across cells (per hashtag column): ``log1p(x / exp(mean(log1p(x))))``."""
    counts = np.asarray(counts, dtype=float)
    geometric = np.exp(np.log1p(counts).mean(axis=0))
    return np.log1p(counts / geometric)


def demultiplex(hashtags: ad.AnnData) -> pd.DataFrame:
    """Call each cell's hashtag, or doublet / negative (see the module docstring).

    Parameters
    ----------
    hashtags
        Cells x hashtags raw UMI counts (the ``hashtag`` modality); var_names are the
        hashtag ids.

    Returns
    -------
    One row per cell (index: obs_names) with ``hashtag`` (the hashtag id, ``doublet`` or
    ``negative``), ``hashtag_class`` (singlet/doublet/negative), ``hashtag_confidence``
    (probability of that class under the fitted mixtures), ``hashtag_margin`` (CLR of the
    top hashtag minus the second's), and per hashtag ``clr:<id>`` and ``prob:<id>``.
    """
    names = [str(v) for v in hashtags.var_names]
    counts = hashtags.X.toarray() if sp.issparse(hashtags.X) else np.asarray(hashtags.X)
    counts = np.asarray(counts, dtype=float)
    n_cells, n_tags = counts.shape
    if n_tags < 2:
        raise DemuxError(f"demultiplexing needs at least 2 hashtags, got {n_tags}: {names}")
    if n_cells < 2:
        raise DemuxError(f"demultiplexing needs at least 2 cells, got {n_cells}")
    normalised = clr(counts)
    probability = np.column_stack(
        [signal_probability(counts[:, h], normalised[:, h]) for h in range(n_tags)]
    )
    positive = probability > 0.5
    n_positive = positive.sum(axis=1)
    tag_names = np.array(names, dtype=object)
    hashtag_class = np.where(n_positive == 1, SINGLET, np.where(n_positive == 0, NEGATIVE, DOUBLET))
    hashtag = np.where(n_positive == 1, tag_names[np.argmax(positive, axis=1)], hashtag_class)
    top2 = np.sort(normalised, axis=1)[:, -2:]
    calls = pd.DataFrame(
        {
            "hashtag": hashtag,
            "hashtag_class": pd.Categorical(hashtag_class, categories=[SINGLET, DOUBLET, NEGATIVE]),
            "hashtag_confidence": _class_probability(probability, n_positive, positive),
            "hashtag_margin": top2[:, 1] - top2[:, 0],
        },
        index=hashtags.obs_names.copy(),
    )
    for h, name in enumerate(names):
        calls[f"clr:{name}"] = normalised[:, h]
    for h, name in enumerate(names):
        calls[f"prob:{name}"] = probability[:, h]
    return calls


def signal_probability(counts: np.ndarray, normalised: np.ndarray) -> np.ndarray:
    """Per cell, the probability that this hashtag's count comes from its signal component.

    `counts` are one hashtag's raw counts across cells, `normalised` their CLR values (which
    only choose the starting split).
    """
    start = normalised > _two_means_cut(normalised)
    if start.sum() < 2 or (~start).sum() < 2:
        return np.zeros(len(counts))
    responsibility = start.astype(float)
    for _ in range(EM_MAX_ITERATIONS):
        fraction = responsibility.mean()
        if not 0 < fraction < 1:
            break
        signal = _nb_log_pmf(counts, *_weighted_moments(counts, responsibility))
        background = _nb_log_pmf(counts, *_weighted_moments(counts, 1 - responsibility))
        updated = expit(np.log(fraction) + signal - np.log1p(-fraction) - background)
        converged = np.abs(updated - responsibility).max() < EM_TOLERANCE
        responsibility = updated
        if converged:
            break
    signal_mean = _weighted_moments(counts, responsibility)[0]
    background_mean = _weighted_moments(counts, 1 - responsibility)[0]
    if signal_mean < MIN_SIGNAL_FOLD * max(background_mean, 1.0):
        return np.zeros(len(counts))  # no real signal: an unused hashtag
    return responsibility


def _two_means_cut(values: np.ndarray) -> float:
    """The cut minimising the within-group sum of squares of a 1-D split (exact 2-means)."""
    ordered = np.sort(values)
    n = len(ordered)
    if n < 2 or ordered[0] == ordered[-1]:
        return float(ordered[-1]) if n else 0.0
    sums, squares = np.cumsum(ordered), np.cumsum(ordered**2)
    left = np.arange(1, n)
    left_ss = squares[left - 1] - sums[left - 1] ** 2 / left
    right_ss = (squares[-1] - squares[left - 1]) - (sums[-1] - sums[left - 1]) ** 2 / (n - left)
    best = int(np.argmin(left_ss + right_ss))
    return float((ordered[best] + ordered[best + 1]) / 2)


def _weighted_moments(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    total = weights.sum()
    if total <= 0:
        return 0.0, 0.0
    mean = float((weights * values).sum() / total)
    return mean, float((weights * (values - mean) ** 2).sum() / total)


def _nb_log_pmf(values: np.ndarray, mean: float, variance: float) -> np.ndarray:
    """Negative binomial log-pmf by mean and variance (a near-Poisson one if not overdispersed)."""
    mean = max(mean, 1e-3)
    variance = max(variance, mean * (1 + 1e-4))
    size = mean**2 / (variance - mean)
    # scipy.stats.nbinom.logpmf, written out: 4x faster, and EM calls it 2 x iterations times.
    return (
        gammaln(values + size)
        - gammaln(size)
        - gammaln(values + 1)
        + size * np.log(size / (size + mean))
        + values * np.log(mean / (size + mean))
    )


def _class_probability(probability, n_positive, positive) -> np.ndarray:
    """Probability of the called class, treating hashtags as independent."""
    n_tags = probability.shape[1]
    negative = np.prod(1 - probability, axis=1)
    only = np.column_stack(  # P(hashtag h and no other)
        [np.prod(np.where(np.arange(n_tags) == h, probability, 1 - probability), axis=1)
         for h in range(n_tags)]
    )  # fmt: skip
    singlet_called = only[np.arange(len(probability)), np.argmax(positive, axis=1)]
    doublet = np.clip(1 - negative - only.sum(axis=1), 0, 1)
    return np.where(n_positive == 1, singlet_called, np.where(n_positive == 0, negative, doublet))


def assign_samples(calls: pd.DataFrame, mapping: Mapping[str, str]) -> pd.Series:
    """The sample of each cell: ``mapping[hashtag]`` for singlets, missing otherwise.

    Parameters
    ----------
    calls
        `demultiplex`'s result (``hashtag``, ``hashtag_class`` and ``clr:<id>`` columns).
    mapping
        Hashtag id -> sample name (the config's hashtags section); it must name every
        hashtag of `calls` (its ``clr:`` columns and singlet calls). Several hashtags may
        map to one sample.

    Returns
    -------
    Categorical Series (index: cells) of sample names; doublets and negatives are missing
    (``hashtag_class`` says which).
    """
    singlet = calls["hashtag_class"] == SINGLET
    scored = [c.removeprefix("clr:") for c in calls.columns if c.startswith("clr:")]
    hashtags = list(dict.fromkeys([*scored, *calls.loc[singlet, "hashtag"]]))
    missing = [h for h in hashtags if h not in mapping]
    if missing:
        n_cells = int(calls.loc[singlet, "hashtag"].isin(missing).sum())
        raise DemuxError(
            f"hashtag(s) {', '.join(map(str, missing))} (singlet call of {n_cells} cells) "
            f"missing from the hashtag -> sample mapping, which has "
            f"{', '.join(map(str, mapping)) or 'none'}; add them"
        )
    samples = calls["hashtag"].where(singlet).map(dict(mapping))
    categories = list(dict.fromkeys(mapping.values()))
    return pd.Series(
        pd.Categorical(samples, categories=categories), index=calls.index, name="sample"
    )
