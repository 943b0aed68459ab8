"""The Bayes classifier of hashtag data under the simulator's own model and true parameters:
what any method could reach on a regime of `kbagg.simulate.hashtags`, a ceiling for the
reference panel (not a peer).

For every cell it computes the posterior of negative, each singlet and each doublet from
the regime's true parameters: the class priors and pool weights, the background mean
``background * (0.5 + 0.5 * capture)`` and the signal ``signal * capture`` (per hashtag,
`kbagg.simulate.hashtags.tag_levels`), each negative binomial with the regime's sizes, the log capture integrated out
by Gauss-Hermite quadrature (for a negative or a singlet given the cell's RNA library
size, with which it is correlated; for a doublet, each of its two cells' captures from
the marginal), and the RNA library size itself (one cell's log-normal, or the sum of two:
a doublet holds two cells' RNA). Three approximations, each of which can only cost the
oracle accuracy: the count of a carried hashtag (signal plus background) is a negative
binomial with the sum's mean and variance, a doublet's RNA is log-normal with the sum's
mean and variance (Fenton-Wilkinson), and a doublet's captures ignore its RNA. Calls are made
as kbagg makes them: doublet when the doublets' posterior reaches the cut, else the more
probable of negative and the singlets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

from kbagg.simulate.hashtags import HashtagRegime, tag_levels

SINGLE_NODES = 21  # Gauss-Hermite nodes of a single cell's log capture
DOUBLE_NODES = 7  # per cell of a doublet (7 x 7 pairs)


def _nb_log_pmf(counts: np.ndarray, mean: np.ndarray, size) -> np.ndarray:
    size = np.asarray(size, dtype=float)
    return (
        gammaln(counts + size)
        - gammaln(size)
        - gammaln(counts + 1)
        + size * np.log(size / (size + mean))
        + counts * np.log(mean / (size + mean))
    )


def _normal_log_pdf(values, mean, sd):
    return -0.5 * ((values - mean) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))


def _carried(counts, signal_mean, background_mean, regime: HashtagRegime) -> np.ndarray:
    """Log-likelihood of a carried hashtag's count: signal + background as one NB with
    their summed mean and variance."""
    mean = signal_mean + background_mean
    variance = (
        signal_mean
        + signal_mean**2 / regime.signal_size
        + background_mean
        + background_mean**2 / regime.background_size
    )
    size = mean**2 / np.maximum(variance - mean, 1e-9)
    return _nb_log_pmf(counts, mean, size)


def oracle_posterior(
    counts: np.ndarray, rna_umis: np.ndarray, regime: HashtagRegime
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of every class under the regime's true model.

    Parameters
    ----------
    counts
        Cells x hashtags UMI counts.
    rna_umis
        Each cell's RNA UMIs.
    regime
        The regime the counts were simulated from.

    Returns
    -------
    ``(posterior, pairs)``: cells x (1 + hashtags + pairs) posterior (negative, singlets,
    doublets) and the (pairs, 2) hashtag indices of the doublet classes.
    """
    if regime.signal_fraction_beta is not None:
        raise ValueError(f"{regime.name}: the oracle models counts, not proportions")
    counts = np.asarray(counts, dtype=float)
    n_cells, n_tags = counts.shape
    tag_signal, tag_background = tag_levels(regime)
    weights = np.ones(n_tags) if regime.pool_weights is None else np.array(regime.pool_weights)
    weights = weights / weights.sum()
    rho, sd = regime.capture_rna_correlation, regime.capture_log_sd
    z_rna = np.log(np.maximum(rna_umis, 1.0) / regime.rna_median_umis) / regime.rna_log_sd
    nodes, node_weights = np.polynomial.hermite_e.hermegauss(SINGLE_NODES)
    log_node_weights = np.log(node_weights / node_weights.sum())
    negative, singlets = [], []
    for e, lw in zip(nodes, log_node_weights, strict=True):
        capture = np.exp(sd * (rho * z_rna + np.sqrt(1 - rho**2) * e))[:, None]
        background_mean = tag_background[None, :] * (0.5 + 0.5 * capture)
        log_background = _nb_log_pmf(counts, background_mean, regime.background_size)
        total = log_background.sum(axis=1, keepdims=True)
        signal_mean = tag_signal[None, :] * capture
        gain = _carried(counts, signal_mean, background_mean, regime) - log_background
        negative.append(total[:, 0] + lw)
        singlets.append(total + gain + lw)
    # log RNA: one cell's normal, or the Fenton-Wilkinson log-normal of two cells' sum
    log_rna = np.log(np.maximum(rna_umis, 1.0))
    sd_rna = regime.rna_log_sd
    rna_single = _normal_log_pdf(log_rna, np.log(regime.rna_median_umis), sd_rna)
    sum_mean = 2 * regime.rna_median_umis * np.exp(sd_rna**2 / 2)
    sum_variance = 2 * regime.rna_median_umis**2 * np.exp(sd_rna**2) * (np.exp(sd_rna**2) - 1)
    sd_double = np.sqrt(np.log(1 + sum_variance / sum_mean**2))
    rna_double = _normal_log_pdf(log_rna, np.log(sum_mean) - sd_double**2 / 2, sd_double)
    log_negative = (
        logsumexp(np.stack(negative), axis=0) + np.log(regime.negative_fraction) + rna_single
    )
    singlet_share = 1 - regime.negative_fraction - regime.doublet_fraction
    log_singlets = (
        logsumexp(np.stack(singlets), axis=0)
        + np.log(singlet_share * weights)
        + rna_single[:, None]
    )
    pairs = np.array([(a, b) for a in range(n_tags) for b in range(a + 1, n_tags)]).reshape(-1, 2)
    # Doublet prior of pair (a, b): the first cell's hashtag from the pool weights, the
    # second's redrawn until it differs.
    wa, wb = weights[pairs[:, 0]], weights[pairs[:, 1]]
    pair_weights = wa * wb * (1 / (1 - wa) + 1 / (1 - wb))
    d_nodes, d_weights = np.polynomial.hermite_e.hermegauss(DOUBLE_NODES)
    d_log_weights = np.log(d_weights / d_weights.sum())
    captures = np.exp(sd * d_nodes)
    doublet_terms = []
    for i, c1 in enumerate(captures):
        for j, c2 in enumerate(captures):
            background_mean = tag_background * (0.5 + 0.5 * (c1 + c2))
            log_background = _nb_log_pmf(counts, background_mean, regime.background_size)
            total = log_background.sum(axis=1, keepdims=True)
            gain1 = _carried(counts, tag_signal * c1, background_mean, regime) - log_background
            gain2 = _carried(counts, tag_signal * c2, background_mean, regime) - log_background
            doublet_terms.append(
                total
                + gain1[:, pairs[:, 0]]
                + gain2[:, pairs[:, 1]]
                + d_log_weights[i]
                + d_log_weights[j]
            )
    log_doublets = (
        logsumexp(np.stack(doublet_terms), axis=0)
        + np.log(regime.doublet_fraction * pair_weights)
        + rna_double[:, None]
    )
    joint = np.concatenate([log_negative[:, None], log_singlets, log_doublets], axis=1)
    return np.exp(joint - logsumexp(joint, axis=1, keepdims=True)), pairs


def oracle_calls(
    counts: np.ndarray,
    rna_umis: np.ndarray,
    regime: HashtagRegime,
    names: list[str],
    doublet_posterior: float,
) -> np.ndarray:
    """The oracle's call per cell (a hashtag name, ``doublet`` or ``negative``), with
    kbagg's decision rule at the doublet cut `doublet_posterior`."""
    posterior, _ = oracle_posterior(counts, rna_umis, regime)
    n_tags = len(names)
    doublet = posterior[:, 1 + n_tags :].sum(axis=1)
    best = posterior[:, : 1 + n_tags].argmax(axis=1)
    tags = np.array(names, dtype=object)
    single = np.where(best == 0, "negative", tags[np.clip(best - 1, 0, n_tags - 1)])
    return np.where(doublet >= doublet_posterior, "doublet", single)


def oracle_series(hashtags, regime: HashtagRegime, doublet_posterior: float) -> pd.Series:
    """`oracle_calls` on a simulated AnnData (its obs ``rna_umis``), indexed by cell."""
    counts = hashtags.X.toarray() if hasattr(hashtags.X, "toarray") else hashtags.X
    calls = oracle_calls(
        counts,
        hashtags.obs["rna_umis"].to_numpy(),
        regime,
        [str(v) for v in hashtags.var_names],
        doublet_posterior,
    )
    return pd.Series(calls, index=hashtags.obs_names)
