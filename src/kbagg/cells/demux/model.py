"""The joint negative-binomial mixture behind `kbagg.cells.demux.demultiplex`.

Every cell is one of: negative (no hashtag), a singlet of hashtag h, or a doublet of h and
k. Each hashtag's count in a cell is negative binomial: from its *background* component
when the cell does not carry it, from its *signal* component when it does. As in demuxmix
(Klein et al. 2023 / Howitt et al. 2023, NAR Genom Bioinform 5:lqad086), both components
are negative-binomial regressions on the cell's log RNA library size (a proxy of how much
tag a cell binds); a doublet's RNA is that of two cells, so its signal for each of its two
hashtags uses the library size halved. Unlike demuxmix, whose per-hashtag mixtures are
combined afterwards, the classes are modelled jointly, as hashsolo (Bernstein et al. 2020)
compares negative / singlet / doublet hypotheses per cell: a doublet is a hypothesis with
its own likelihood and prior, not two hashtags that each had to pass a cut.

EM: start from each cell's top hashtag (counts divided by each hashtag's median), then
alternate posteriors over all classes (E) and weighted NB regressions per hashtag and
component plus class priors (M).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from kbagg.cells.nb import nb_log_pmf

EM_MAX_ITERATIONS = 100
EM_MIN_ITERATIONS = 5
EM_TOLERANCE = 1e-4  # log-likelihood gain per cell below which EM stops
IRLS_STEPS = 3
MIN_SIZE, MAX_SIZE = 0.2, 1e4  # NB size bounds (variance mean + mean**2 / size)
# A background no more overdispersed than this: a looser one can swallow a doublet's second
# hashtag in small samples (45 cells of the demo: 4 of 7 doublets lost at size 0.4).
MIN_BACKGROUND_SIZE = 1.0
LOG2 = float(np.log(2.0))


@dataclass
class NBRegression:
    """log mean = intercept + slope * covariate; NB size."""

    intercept: float
    slope: float
    size: float

    def mean(self, covariate: np.ndarray) -> np.ndarray:
        return np.exp(np.clip(self.intercept + self.slope * covariate, -10, 15))


@dataclass
class MixtureFit:
    """The fitted model: per hashtag background and signal regressions, class priors,
    and per cell the posterior of every class."""

    background: list[NBRegression]
    signal: list[NBRegression]
    pairs: np.ndarray  # (n_pairs, 2) hashtag indices of the doublet classes
    posterior: np.ndarray  # cells x (1 + n_tags + n_pairs): negative, singlets, doublets
    log_prior: np.ndarray
    iterations: int
    log_likelihood: float


def fit_nb_regression(
    values: np.ndarray,
    covariate: np.ndarray,
    weights: np.ndarray,
    use_slope: bool,
    start=None,
    min_size: float = MIN_SIZE,
) -> NBRegression:
    """Weighted NB regression with a log link: IRLS for the coefficients, the size by
    weighted moments of the Pearson residuals (a few steps: EM calls it every iteration)."""
    total = weights.sum()
    if total <= 1e-9:
        return start or NBRegression(0.0, 0.0, 1.0)
    mean0 = max(float((weights * values).sum() / total), 1e-3)
    fit = start or NBRegression(float(np.log(mean0)), 0.0, 1.0)
    beta = np.array([fit.intercept, fit.slope if use_slope else 0.0])
    size = fit.size
    design = np.column_stack([np.ones_like(covariate), covariate])
    for _ in range(IRLS_STEPS):
        eta = np.clip(design @ beta, -10, 15)
        mu = np.exp(eta)
        working = weights * mu / (1 + mu / size)
        response = eta + (values - mu) / mu
        if use_slope:
            gram = design.T @ (design * working[:, None])
            if np.linalg.cond(gram) > 1e10:
                use_slope = False
                beta[1] = 0.0
                continue
            beta = np.linalg.solve(gram, design.T @ (working * response))
        else:
            beta = np.array([float((working * response).sum() / working.sum()), 0.0])
    mu = np.exp(np.clip(design @ beta, -10, 15))
    excess = float((weights * ((values - mu) ** 2 - mu)).sum())
    size = (
        float(np.clip((weights * mu**2).sum() / excess, min_size, MAX_SIZE))
        if excess > 0
        else MAX_SIZE
    )
    return NBRegression(float(beta[0]), float(beta[1]), size)


def _initial_posterior(
    counts: np.ndarray, n_classes: int, pairs: np.ndarray, active: np.ndarray, quantile: float
) -> np.ndarray:
    """Each cell a singlet of its top hashtag (counts over the hashtag's `quantile`, its
    background scale while fewer than 1 - `quantile` of cells carry it), a doublet of its
    top two when the second is at least half the first, a negative when the top is below
    twice its scale."""
    n_cells, n_tags = counts.shape
    scaled = (counts + 1) / (np.quantile(counts, quantile, axis=0) + 1)
    scaled[:, ~active] = 0
    order = np.argsort(-scaled, axis=1)
    top, second = order[:, 0], order[:, 1]
    top_value = scaled[np.arange(n_cells), top]
    second_value = scaled[np.arange(n_cells), second]
    posterior = np.zeros((n_cells, n_classes))
    pair_index = {(int(a), int(b)): 1 + n_tags + i for i, (a, b) in enumerate(pairs)}
    for c in range(n_cells):
        pair = tuple(sorted((int(top[c]), int(second[c]))))
        if top_value[c] < 2:
            posterior[c, 0] = 1
        elif second_value[c] >= max(0.5 * top_value[c], 2) and pair in pair_index:
            posterior[c, pair_index[pair]] = 1
        else:
            posterior[c, 1 + top[c]] = 1
    return posterior


def fit_mixture(
    counts: np.ndarray,
    covariate: np.ndarray | None,
    active: np.ndarray | None = None,
    init_quantiles: tuple[float, ...] = (0.5, 0.1),
) -> MixtureFit:
    """The fit of highest likelihood among EM runs started from each of `init_quantiles`
    (see `_initial_posterior`; EM finds local optima, e.g. with no negatives left)."""
    fits = [_fit_mixture(counts, covariate, active, q) for q in init_quantiles]
    return max(fits, key=lambda fit: fit.log_likelihood)


def _fit_mixture(
    counts: np.ndarray, covariate: np.ndarray | None, active: np.ndarray | None, quantile: float
) -> MixtureFit:
    """Fit the joint mixture to cells x hashtags counts.

    `covariate` is the centred log RNA library size per cell (None: intercept-only
    regressions). `active` marks the hashtags that may be carried (default all); the
    others have only a background component.
    """
    n_cells, n_tags = counts.shape
    use_slope = covariate is not None
    x = np.zeros(n_cells) if covariate is None else np.asarray(covariate, dtype=float)
    active = np.ones(n_tags, dtype=bool) if active is None else active
    tags = np.flatnonzero(active)
    pairs = np.array([(a, b) for i, a in enumerate(tags) for b in tags[i + 1 :]], dtype=int)
    pairs = pairs.reshape(-1, 2)
    n_pairs = len(pairs)
    n_classes = 1 + n_tags + n_pairs
    allowed = np.concatenate([[True], active, np.ones(n_pairs, dtype=bool)])
    posterior = _initial_posterior(counts, n_classes, pairs, active, quantile)
    # carries[k, h]: class k carries hashtag h; doublet[k]: class k is a doublet
    carries = np.zeros((n_classes, n_tags))
    carries[1 + np.arange(n_tags), np.arange(n_tags)] = 1
    if n_pairs:
        carries[1 + n_tags + np.arange(n_pairs), pairs[:, 0]] = 1
        carries[1 + n_tags + np.arange(n_pairs), pairs[:, 1]] = 1
    is_doublet = np.zeros(n_classes, dtype=bool)
    is_doublet[1 + n_tags :] = True
    background = [None] * n_tags
    signal = [None] * n_tags
    log_prior = np.full(n_classes, -np.inf)
    # Log RNA library size per class: a doublet holds two cells' RNA (scDblFinder and
    # every expression-based doublet caller rely on it). Gaussian per kind, singlet-like
    # (negative and singlet) or doublet.
    rna_single = rna_double = (0.0, 1.0)
    iteration = 0
    log_likelihood = previous = -np.inf
    for iteration in range(1, EM_MAX_ITERATIONS + 1):  # noqa: B007 (reported)
        # M step: class priors and per-hashtag regressions.
        share = posterior.mean(axis=0)
        with np.errstate(divide="ignore"):
            log_prior = np.where(allowed, np.log(np.maximum(share, 1e-8)), -np.inf)
        carried = posterior @ carries  # P(cell carries h)
        in_doublet = posterior[:, is_doublet] @ carries[is_doublet]  # P(carries h, doublet)
        for h in range(n_tags):
            background[h] = fit_nb_regression(
                counts[:, h], x, 1 - carried[:, h], use_slope, background[h], MIN_BACKGROUND_SIZE
            )
            if not active[h]:
                continue
            in_singlet = posterior[:, 1 + h]
            signal[h] = fit_nb_regression(
                np.concatenate([counts[:, h], counts[:, h]]),
                np.concatenate([x, x - LOG2]),
                np.concatenate([in_singlet, in_doublet[:, h]]),
                use_slope,
                signal[h],
            )
        if use_slope:
            rna_single = _weighted_normal(x, posterior[:, ~is_doublet].sum(axis=1))
            rna_double = _weighted_normal(x, posterior[:, is_doublet].sum(axis=1), LOG2)
        # E step.
        log_like = class_log_likelihoods(counts, x, background, signal, pairs, active)
        if use_slope:
            log_like[:, ~is_doublet] += _normal_log_pdf(x, *rna_single)[:, None]
            log_like[:, is_doublet] += _normal_log_pdf(x, *rna_double)[:, None]
        joint = log_like + log_prior
        per_cell = logsumexp(joint, axis=1, keepdims=True)
        updated = np.exp(joint - per_cell)
        log_likelihood = float(per_cell.sum())
        posterior = updated
        # The M step is approximate (a few IRLS steps, moment sizes): the likelihood may
        # dip, so stop on a small change either way, after a few iterations.
        if (
            iteration >= EM_MIN_ITERATIONS
            and abs(log_likelihood - previous) < EM_TOLERANCE * n_cells
        ):
            break
        previous = log_likelihood
    return MixtureFit(background, signal, pairs, posterior, log_prior, iteration, log_likelihood)


def _weighted_normal(values, weights, default_mean=0.0) -> tuple[float, float]:
    total = weights.sum()
    if total < 5:
        return default_mean, float(np.std(values)) or 1.0
    mean = float((weights * values).sum() / total)
    sd = float(np.sqrt((weights * (values - mean) ** 2).sum() / total))
    return mean, max(sd, 0.05)


def _normal_log_pdf(values, mean, sd) -> np.ndarray:
    return -0.5 * ((values - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def class_log_likelihoods(counts, x, background, signal, pairs, active) -> np.ndarray:
    """Cells x classes log-likelihood: negative, singlet of each hashtag, each doublet."""
    n_cells, n_tags = counts.shape
    log_background = np.column_stack(
        [nb_log_pmf(counts[:, h], background[h].mean(x), background[h].size) for h in range(n_tags)]
    )
    gain_single = np.full((n_cells, n_tags), -np.inf)
    gain_double = np.full((n_cells, n_tags), -np.inf)
    for h in np.flatnonzero(active):
        s = signal[h]
        gain_single[:, h] = nb_log_pmf(counts[:, h], s.mean(x), s.size) - log_background[:, h]
        gain_double[:, h] = (
            nb_log_pmf(counts[:, h], s.mean(x - LOG2), s.size) - log_background[:, h]
        )
    negative = log_background.sum(axis=1, keepdims=True)
    parts = [negative, negative + gain_single]
    if len(pairs):
        parts.append(negative + gain_double[:, pairs[:, 0]] + gain_double[:, pairs[:, 1]])
    return np.concatenate(parts, axis=1)
