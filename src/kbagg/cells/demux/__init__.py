"""Demultiplexing of hashtag (Multiplexing Capture) counts: which sample each cell came from.

`demultiplex` fits a joint negative-binomial mixture (`kbagg.cells.demux.model`): every
cell is negative, a singlet of one hashtag or a doublet of two; each hashtag's count is a
background or a signal negative binomial, both regressions on the cell's log RNA library
size when it is given (demuxmix's covariate), and doublets are a class of their own with
their own likelihood and prior (hashsolo's model comparison). Each cell gets the class of
highest posterior.

Why (docs/demultiplexing.md; tests/benchmarks/bench_demux.py on the regimes of
`kbagg.simulate.hashtags`, seeds 1-3): the per-hashtag two-mode split used before collapsed
on noisy data (background x3, signal x0.35: 82 % of cells negative, no doublet found). The
joint model with a latent per-cell capture is as accurate as the Bayes classifier that
knows the simulator's true parameters, at the same doublet cut, on every regime; it has the
best singlet accuracy of the panel (Seurat's HTODemux and MULTIseqDemux, scanpy's hashsolo,
demuxEM, GMM-Demux) on 10 of 11 regimes. Peers that call more cells doublet find more
doublets; where even the oracle cannot match both their doublets and the best singlets,
the page says so.

That model assumes each hashtag's counts at absolute levels; on real captures whose
signal is relative (lipid tags, weak antibodies) it fails (docs/demultiplexing.md, real
data with genotype truth: 0 of the cell lines' singlets right). `demultiplex` therefore
also fits `kbagg.cells.demux.composition`, a mixture of each cell's hashtag proportions,
and keeps the model of lower BIC (``attrs['hashtag_model']``, ``['hashtag_model_bic']``).

`separability` (`kbagg.cells.demux.separability`) says per hashtag how well its signal
stands apart from its background; `demultiplex` warns (`WeakHashtagsWarning`, naming the
sample and the hashtags) when they do not separate. `assign_samples` turns the calls into
sample names with a hashtag -> sample mapping.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.cells.demux.composition import CompositionFit, fit_composition
from kbagg.cells.demux.errors import DemuxError
from kbagg.cells.demux.model import MixtureFit, fit_mixture
from kbagg.cells.demux.samples import assign_samples
from kbagg.cells.demux.separability import (
    MAX_EXPECTED_ERROR,
    WEAK_SEPARABILITY,
    WeakHashtagsWarning,
    add_expected_error,
    composition_separability,
    describe_weak,
    hashtag_separability,
    weak_hashtags_message,
)

__all__ = [
    "DOUBLET",
    "NEGATIVE",
    "SINGLET",
    "WEAK_SEPARABILITY",
    "MAX_EXPECTED_ERROR",
    "DemuxError",
    "WeakHashtagsWarning",
    "assign_samples",
    "clr",
    "demultiplex",
    "describe_weak",
]

SINGLET, DOUBLET, NEGATIVE = "singlet", "doublet", "negative"
# A hashtag with separability or signal:background below these is tested for being unused
# (no signal at all): it is dropped when the model without it loses less log-likelihood
# than BIC's penalty for its parameters. Measured (seed 1): unused hashtags of pure ambient
# counts gain 1-6 (one had a spurious "signal" of 3.9x background at separability 0.92);
# the failed hashtag (5 % signal) 262; a noisy one 640; the penalty is 30-60.
UNUSED_CANDIDATE_SEPARABILITY = 0.6
UNUSED_CANDIDATE_FOLD = 5.0
# A cell is called doublet when its doublets' posterior reaches this (not 0.5): a missed
# doublet puts a second sample's cell into a sample, a singlet called doublet is only lost.
# Chosen on seeds 1-3 of the regimes with the latent capture (0.05-0.3 tried;
# docs/demultiplexing.md has the trade-off, the oracle's and the held-out check).
DOUBLET_POSTERIOR = 0.1
COUNTS, COMPOSITION = "counts", "composition"


def clr(counts: np.ndarray) -> np.ndarray:
    """Seurat's CLR across cells (per hashtag column): ``log1p(x / exp(mean(log1p(x))))``."""
    counts = np.asarray(counts, dtype=float)
    geometric = np.exp(np.log1p(counts).mean(axis=0))
    return np.log1p(counts / geometric)


def demultiplex(
    hashtags: ad.AnnData,
    rna_umis: np.ndarray | pd.Series | None = None,
    sample: str | None = None,
) -> pd.DataFrame:
    """Call each cell's hashtag, or doublet / negative (see the module docstring).

    Parameters
    ----------
    hashtags
        Cells x hashtags raw UMI counts (the ``hashtag`` modality); var_names are the
        hashtag ids.
    rna_umis
        Gene-expression UMIs per cell, in the order of `hashtags`' obs (a Series is aligned
        by index). Used as the covariate of the regressions; without it they are
        intercept-only, which is less accurate when capture varies between cells.
    sample
        The sample's name, for the `WeakHashtagsWarning` and error messages.

    Returns
    -------
    One row per cell (index: obs_names) with ``hashtag`` (the hashtag id, ``doublet`` or
    ``negative``), ``hashtag_class`` (singlet/doublet/negative), ``hashtag_confidence``
    (posterior probability of the called class), ``hashtag_margin`` (CLR of the top
    hashtag minus the second's), and per hashtag ``clr:<id>`` and ``prob:<id>`` (posterior
    probability that the cell carries it). ``attrs['hashtag_separability']`` holds the
    chosen model's separability table (one row per hashtag) with ``expected_error``,
    ``attrs['hashtag_model']`` that model (``counts`` or ``composition``) and
    ``attrs['hashtag_model_bic']`` both models' BIC.

    Warns
    -----
    WeakHashtagsWarning
        When a hashtag's separability is below `WEAK_SEPARABILITY` (or it has no signal),
        or more than `MAX_EXPECTED_ERROR` of its singlet calls are expected to be wrong:
        the message names the sample, the hashtags and the share of uncertain calls.
    """
    names = [str(v) for v in hashtags.var_names]
    label = f"sample '{sample}': " if sample else ""
    counts = hashtags.X.toarray() if sp.issparse(hashtags.X) else np.asarray(hashtags.X)
    counts = np.asarray(counts, dtype=float)
    n_cells, n_tags = counts.shape
    if n_tags < 2:
        raise DemuxError(f"{label}demultiplexing needs at least 2 hashtags, got {n_tags}: {names}")
    if n_cells < 2:
        raise DemuxError(f"{label}demultiplexing needs at least 2 cells, got {n_cells}")
    covariate = _covariate(rna_umis, hashtags.obs_names, label)
    fit = fit_mixture(counts, covariate, capture_nodes=1)
    active = _used_hashtags(counts, covariate, fit, names)  # at least one
    fit = fit_mixture(counts, covariate, active)
    fit, active = _without_signals_below_background(counts, covariate, fit, active, names)
    composition = fit_composition(counts, covariate)
    criteria = {
        COUNTS: _bic(fit.log_likelihood, _count_parameters(fit, active, covariate), n_cells),
        COMPOSITION: _bic(composition.log_likelihood, composition.n_parameters, n_cells),
    }
    if criteria[COUNTS] <= criteria[COMPOSITION]:
        chosen = COUNTS
        calls = _calls(hashtags, counts, fit, names)
        table = hashtag_separability(fit, names, active)
    else:
        chosen = COMPOSITION
        calls = _calls(hashtags, counts, composition, names)
        table = composition_separability(composition, names)
    table = add_expected_error(table, calls)
    calls.attrs["hashtag_separability"] = table
    calls.attrs["hashtag_model"] = chosen
    calls.attrs["hashtag_model_bic"] = criteria
    message = weak_hashtags_message(table, sample, calls["hashtag_confidence"].to_numpy())
    if message:
        warnings.warn(message, WeakHashtagsWarning, stacklevel=2)
    return calls


def _covariate(rna_umis, obs_names, label) -> np.ndarray | None:
    if rna_umis is None:
        return None
    if isinstance(rna_umis, pd.Series):
        missing = ~obs_names.isin(rna_umis.index)
        if missing.any():
            raise DemuxError(
                f"{label}no RNA library size for {int(missing.sum())} hashtag cells "
                f"(first: {obs_names[missing][0]})"
            )
        rna_umis = rna_umis.reindex(obs_names).to_numpy()
    rna_umis = np.asarray(rna_umis, dtype=float)
    if rna_umis.shape != (len(obs_names),):
        raise DemuxError(
            f"{label}rna_umis has {rna_umis.size} values for {len(obs_names)} hashtag cells"
        )
    logged = np.log(np.maximum(rna_umis, 1.0))
    return logged - np.median(logged)


def _used_hashtags(counts, covariate, fit: MixtureFit, names) -> np.ndarray:
    """Hashtags that carry a signal: those of low separability are kept only when the
    model without them is worse by more than BIC's penalty for their parameters. The last
    one is always kept: on counts with no signal at all, BIC keeps several anyway (the
    cells' capture spread looks like signal; docs/demultiplexing.md); those whose fitted
    signal ends up below the background go next (`_without_signals_below_background`)."""
    n_cells, n_tags = counts.shape
    table = hashtag_separability(fit, names, np.ones(n_tags, dtype=bool))
    candidates = np.flatnonzero(
        (table["separability"].to_numpy() < UNUSED_CANDIDATE_SEPARABILITY)
        | ~(table["signal_to_background"].to_numpy() >= UNUSED_CANDIDATE_FOLD)
    )
    active = np.ones(n_tags, dtype=bool)
    # signal regression (3) + singlet prior (1) + a doublet prior with each other hashtag
    penalty = 0.5 * (3 + 1 + (n_tags - 1)) * np.log(n_cells)
    for h in candidates:
        without = active.copy()
        without[h] = False
        if not without.any():
            continue
        reduced = fit_mixture(counts, covariate, without, init_quantiles=(0.5,), capture_nodes=1)
        if fit.log_likelihood - reduced.log_likelihood < penalty:
            active[h] = False
    return active


def _without_signals_below_background(counts, covariate, fit: MixtureFit, active, names):
    """Drop the hashtags whose fitted signal is not above their background and refit, until
    every kept one's is (keeping at least one hashtag). A tag adds UMIs to the cells that
    carry it, so a "signal" at or below the background is the fit splitting the background
    in two: on background-only counts such fits called every cell doublet at posteriors of
    0.76-0.93 (docs/demultiplexing.md "Hashtags with no signal at all")."""
    while True:
        table = hashtag_separability(fit, names, active)
        below = active & ~(table["signal_to_background"].to_numpy() > 1.0)
        if not below.any() or below.sum() == active.sum():
            return fit, active
        active = active & ~below
        fit = fit_mixture(counts, covariate, active)


def _bic(log_likelihood: float, n_parameters: int, n_cells: int) -> float:
    return -2.0 * log_likelihood + n_parameters * np.log(n_cells)


def _count_parameters(fit: MixtureFit, active: np.ndarray, covariate) -> int:
    """Free parameters of the count model: per hashtag a background regression (intercept,
    size, slope with a covariate, capture coefficient with the latent capture), per active
    hashtag a signal one, class priors, the capture's sd, the RNA normals."""
    slope = covariate is not None
    latent = len(fit.capture_nodes) > 1
    n_tags = len(active)
    background = n_tags * (2 + slope + latent)
    signal = int(active.sum()) * (2 + slope)
    priors = int(np.isfinite(fit.log_prior).sum()) - 1
    return background + signal + priors + latent + 4 * slope


def _calls(hashtags, counts, fit: MixtureFit | CompositionFit, names) -> pd.DataFrame:
    n_tags = len(names)
    posterior = fit.posterior
    doublet = posterior[:, 1 + n_tags :].sum(axis=1)
    best = np.argmax(posterior[:, : 1 + n_tags], axis=1)  # negative or a singlet
    is_doublet = doublet >= DOUBLET_POSTERIOR
    tag_names = np.array(names, dtype=object)
    hashtag_class = np.where(is_doublet, DOUBLET, np.where(best == 0, NEGATIVE, SINGLET)).astype(
        object
    )
    hashtag = np.where(
        hashtag_class == SINGLET, tag_names[np.clip(best - 1, 0, n_tags - 1)], hashtag_class
    )
    confidence = np.where(is_doublet, doublet, posterior[np.arange(len(best)), best])
    carried = posterior[:, 1 : 1 + n_tags].copy()
    for k, (a, b) in enumerate(fit.pairs):
        carried[:, a] += posterior[:, 1 + n_tags + k]
        carried[:, b] += posterior[:, 1 + n_tags + k]
    normalised = clr(counts)
    top2 = np.sort(normalised, axis=1)[:, -2:]
    calls = pd.DataFrame(
        {
            "hashtag": hashtag,
            "hashtag_class": pd.Categorical(hashtag_class, categories=[SINGLET, DOUBLET, NEGATIVE]),
            "hashtag_confidence": confidence,
            "hashtag_margin": top2[:, 1] - top2[:, 0],
        },
        index=hashtags.obs_names.copy(),
    )
    for h, name in enumerate(names):
        calls[f"clr:{name}"] = normalised[:, h]
    for h, name in enumerate(names):
        calls[f"prob:{name}"] = np.clip(carried[:, h], 0, 1)
    return calls
