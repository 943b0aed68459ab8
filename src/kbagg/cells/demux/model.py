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

A latent per-cell log capture (`CAPTURE_NODES` Gauss-Hermite nodes; 1 turns it off), normal
with a fitted sd and integrated out, is shared by a cell's signal (offset) and background
(fitted coefficient, within `BACKGROUND_CAPTURE_RANGE`); a doublet's two hashtags each have
their own. EM fits the model without it first (both starts, hashtag selection), then refines
that fit with it, the NB sizes then by weighted maximum likelihood (`_ml_size`), not moments.
Measured (docs/demultiplexing.md): with it, singlet accuracy and doublet recall track the
Bayes classifier that knows the simulator's true parameters on every regime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, polygamma

from kbagg.cells.demux.stats import log_sum_exp, normal_log_pdf, weighted_normal
from kbagg.cells.nb import nb_count_term, nb_log_pmf

EM_MAX_ITERATIONS = 100
EM_MIN_ITERATIONS = 5
EM_TOLERANCE = 1e-4  # log-likelihood gain per cell below which EM stops
IRLS_STEPS = 3
MIN_SIZE, MAX_SIZE = 0.2, 1e4  # NB size bounds (variance mean + mean**2 / size)
# A background no more overdispersed than this: a looser one can swallow a doublet's second
# hashtag in small samples (45 cells of the demo: 4 of 7 doublets lost at size 0.4).
MIN_BACKGROUND_SIZE = 1.0
LOG2 = float(np.log(2.0))
CAPTURE_NODES = 5  # Gauss-Hermite nodes of the latent log capture (1: none; see docs)
CAPTURE_START_SD = 0.3  # its starting sd; EM then fits it
# How a hashtag's background follows the cell's capture: d log(background) / d log(capture).
# The background is ambient tag (the same in every droplet) plus tag bound non-specifically
# (in proportion to the capture), so its log rises with the log capture at a slope between 0
# and 1. Unbounded, the fit could trade the capture's sd for the slope: on BAL batch 3
# (Howitt et al. 2023) the sd fell to 0.014 and the slopes rose to 35-58, leaving the
# signal's spread to its NB size (docs/demultiplexing.md).
BACKGROUND_CAPTURE_RANGE = (0.0, 1.0)


@dataclass
class NBRegression:
    """log mean = intercept + slope * covariate + capture * (latent log capture); NB size."""

    intercept: float
    slope: float
    size: float
    capture: float = 0.0

    def mean(self, covariate: np.ndarray, log_capture: float | np.ndarray = 0.0) -> np.ndarray:
        eta = self.intercept + self.slope * covariate + self.capture * log_capture
        return np.exp(np.clip(eta, -10, 15))


@dataclass
class MixtureFit:
    """The fitted model: per hashtag background and signal regressions, class priors,
    the latent log capture's nodes and weights, and per cell the posterior of every class."""

    background: list[NBRegression]
    signal: list[NBRegression]
    pairs: np.ndarray  # (n_pairs, 2) hashtag indices of the doublet classes
    posterior: np.ndarray  # cells x (1 + n_tags + n_pairs): negative, singlets, doublets
    log_prior: np.ndarray
    iterations: int
    log_likelihood: float
    capture_nodes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1))
    capture_log_weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1))


def fit_nb_regression(
    values: np.ndarray,
    covariate: np.ndarray,
    weights: np.ndarray,
    use_slope: bool,
    start=None,
    min_size: float = MIN_SIZE,
    log_capture: np.ndarray | None = None,
    capture_coefficient: float | None = None,
) -> NBRegression:
    """Weighted NB regression with a log link: IRLS for the coefficients, the size by
    weighted moments of the Pearson residuals (a few steps: EM calls it every iteration).

    `log_capture` (per value) enters with a fitted coefficient when `capture_coefficient`
    is None, else as an offset times `capture_coefficient`. A fitted coefficient outside
    `BACKGROUND_CAPTURE_RANGE` is refitted as an offset at the nearer end of it."""
    total = weights.sum()
    if total <= 1e-9:
        return start or NBRegression(0.0, 0.0, 1.0)
    mean0 = max(float((weights * values).sum() / total), 1e-3)
    fit = start or NBRegression(float(np.log(mean0)), 0.0, 1.0)
    u = np.zeros_like(covariate) if log_capture is None else log_capture
    fitted_capture = log_capture is not None and capture_coefficient is None
    columns = [np.ones_like(covariate)]
    if use_slope:
        columns.append(covariate)
    if fitted_capture:
        columns.append(u)
    design = np.column_stack(columns)
    beta = np.array([fit.intercept] + ([fit.slope] if use_slope else []))
    if fitted_capture:
        beta = np.append(beta, fit.capture)
    offset = 0.0 if fitted_capture or log_capture is None else capture_coefficient * u
    size = fit.size
    for _ in range(IRLS_STEPS):
        eta = np.clip(design @ beta + offset, -10, 15)
        mu = np.exp(eta)
        working = weights * mu / (1 + mu / size)
        response = eta - offset + (values - mu) / mu
        gram = design.T @ (design * working[:, None])
        if design.shape[1] > 1 and np.linalg.cond(gram) > 1e10:
            # no information on the slopes: intercept only from here on
            design, beta = design[:, :1], beta[:1]
            use_slope = fitted_capture = False
            continue
        beta = np.linalg.solve(gram, design.T @ (working * response))
    mu = np.exp(np.clip(design @ beta + offset, -10, 15))
    excess = float((weights * ((values - mu) ** 2 - mu)).sum())
    size = (
        float(np.clip((weights * mu**2).sum() / excess, min_size, MAX_SIZE))
        if excess > 0
        else MAX_SIZE
    )
    if log_capture is not None:  # the latent fit: see `_ml_size`
        size = _ml_size(values, mu, weights, size, min_size)
    slope = float(beta[1]) if use_slope else 0.0
    if fitted_capture:
        capture = float(beta[-1])
        bounded = float(np.clip(capture, *BACKGROUND_CAPTURE_RANGE))
        if capture != bounded:
            start = NBRegression(float(beta[0]), slope, size, bounded)
            return fit_nb_regression(
                values, covariate, weights, use_slope, start, min_size, log_capture, bounded
            )
    else:
        capture = 0.0 if capture_coefficient is None else float(capture_coefficient)
    return NBRegression(float(beta[0]), slope, size, capture)


SIZE_NEWTON_STEPS = 4  # from the moment estimate, warm: EM calls it every iteration


def _ml_size(values, mu, weights, size, min_size) -> float:
    """The weighted maximum-likelihood NB size, by Newton steps on log size from `size`.

    With a latent capture the moment estimate is biased up: residuals at the capture
    nodes a cell's posterior favours are small by construction. EM's M step maximises
    the expected complete-data likelihood instead."""
    keep = weights > 1e-12
    y, m, w = values[keep], mu[keep], weights[keep]
    # the digamma terms depend on the count only: sum them over distinct counts
    distinct, w_distinct = _weights_by_count(y, w)
    w_total = w_distinct.sum()
    t = np.log(np.clip(size, min_size, MAX_SIZE))
    for _ in range(SIZE_NEWTON_STEPS):
        r = np.exp(t)
        rm = r + m
        score = (w_distinct * digamma(distinct + r)).sum() - w_total * digamma(r)
        score += (w * (np.log(r / rm) + 1 - (r + y) / rm)).sum()
        curve = (w_distinct * polygamma(1, distinct + r)).sum() - w_total * polygamma(1, r)
        curve += (w * (1 / r - 1 / rm - (m - y) / rm**2)).sum()
        d1, d2 = r * score, r * score + r * r * curve
        step = -d1 / d2 if d2 < 0 else np.sign(d1)
        t = float(np.clip(t + np.clip(step, -1.0, 1.0), np.log(min_size), np.log(MAX_SIZE)))
    return float(np.exp(t))


def _weights_by_count(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values (ascending) and the sum of `weights` of each: by a bincount for
    counts (no sort; the same sums as `np.unique` then a bincount, 5x faster on 10^5 counts),
    by `np.unique` otherwise."""
    top = values.max(initial=0)
    if values.min(initial=0) >= 0 and top <= 4 * values.size + 1024 and (values % 1 == 0).all():
        counts = values.astype(np.int64)
        seen = np.bincount(counts) > 0
        return np.flatnonzero(seen).astype(values.dtype), np.bincount(counts, weights=weights)[seen]
    distinct, index = np.unique(values, return_inverse=True)
    return distinct, np.bincount(index, weights=weights)


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
    capture_nodes: int | None = None,
) -> MixtureFit:
    """The fit of highest likelihood among EM runs started from each of `init_quantiles`
    (see `_initial_posterior`; EM finds local optima, e.g. with no negatives left), without
    latent capture; with `capture_nodes` > 1 (default `CAPTURE_NODES`) that fit is then
    refined by EM with the latent capture (see `_fit_mixture`)."""
    n_nodes = CAPTURE_NODES if capture_nodes is None else capture_nodes
    fits = [_fit_mixture(counts, covariate, active, q) for q in init_quantiles]
    best = max(fits, key=lambda fit: fit.log_likelihood)
    if n_nodes <= 1:
        return best
    return _fit_mixture(counts, covariate, active, init_quantiles[0], n_nodes, best)


def _fit_mixture(
    counts: np.ndarray,
    covariate: np.ndarray | None,
    active: np.ndarray | None,
    quantile: float,
    n_nodes: int = 1,
    start: MixtureFit | None = None,
) -> MixtureFit:
    """Fit the joint mixture to cells x hashtags counts.

    `covariate` is the centred log RNA library size per cell (None: intercept-only
    regressions). `active` marks the hashtags that may be carried (default all); the
    others have only a background component. `start`: a fit to continue from (its
    posterior and regressions) instead of `_initial_posterior`. With `n_nodes` > 1 each cell has a latent
    log capture, normal with an sd fitted by EM and integrated out by Gauss-Hermite
    quadrature on `n_nodes` nodes: it enters every signal mean as an offset and every
    background mean with a fitted coefficient, so that one cell's signal and background
    rise and fall together.
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
    if start is None:
        posterior = _initial_posterior(counts, n_classes, pairs, active, quantile)
    else:
        posterior = start.posterior.copy()
    # carries[k, h]: class k carries hashtag h; doublet[k]: class k is a doublet
    carries = np.zeros((n_classes, n_tags))
    carries[1 + np.arange(n_tags), np.arange(n_tags)] = 1
    if n_pairs:
        carries[1 + n_tags + np.arange(n_pairs), pairs[:, 0]] = 1
        carries[1 + n_tags + np.arange(n_pairs), pairs[:, 1]] = 1
    is_doublet = np.zeros(n_classes, dtype=bool)
    is_doublet[1 + n_tags :] = True
    background = [None] * n_tags if start is None else list(start.background)
    signal = [None] * n_tags if start is None else list(start.signal)
    log_prior = np.full(n_classes, -np.inf)
    latent = n_nodes > 1
    if latent:
        standard, node_weights = np.polynomial.hermite_e.hermegauss(n_nodes)
        log_weights = np.log(node_weights / node_weights.sum())
    else:
        standard, log_weights = np.zeros(1), np.zeros(1)
    capture_sd = CAPTURE_START_SD if latent else 0.0
    nodes = capture_sd * standard
    # joint[c, k, q]: posterior of class k and capture node q (start: the node's prior)
    joint = posterior[:, :, None] * np.exp(log_weights)[None, None, :]
    signal_nodes = np.broadcast_to(np.exp(log_weights)[:, None, None], (n_nodes, n_cells, n_tags))
    # Log RNA library size per class: a doublet holds two cells' RNA (scDblFinder and
    # every expression-based doublet caller rely on it). Gaussian per kind, singlet-like
    # (negative and singlet) or doublet.
    rna_single = rna_double = (0.0, 1.0)
    spread = float(np.std(x)) or 1.0  # the RNA normals' sd while a kind has under 5 cells
    iteration = 0
    log_likelihood = previous = -np.inf
    n_q = len(nodes)
    x_q = np.tile(x, n_q)  # node-major: value i of node q at q * n_cells + i
    u_q = np.repeat(nodes, n_cells)
    for iteration in range(1, EM_MAX_ITERATIONS + 1):  # noqa: B007 (reported)
        # M step: class priors and per-hashtag regressions.
        share = posterior.mean(axis=0)
        with np.errstate(divide="ignore"):
            log_prior = np.where(allowed, np.log(np.maximum(share, 1e-8)), -np.inf)
        by_node = joint.transpose(2, 0, 1)  # q, c, k
        total = by_node.sum(axis=2)  # q, c
        carried = by_node @ carries  # q, c, h: P(node, carries h)
        # P(node, doublet with h): each hashtag of a doublet has its own cell's capture
        in_doublet = (posterior[:, is_doublet] @ carries[is_doublet])[None] * signal_nodes
        for h in range(n_tags):
            values = np.tile(counts[:, h], n_q)
            background[h] = fit_nb_regression(
                values,
                x_q,
                (total - carried[:, :, h]).ravel(),
                use_slope,
                background[h],
                MIN_BACKGROUND_SIZE,
                log_capture=u_q if latent else None,
            )
            if not active[h]:
                continue
            signal[h] = fit_nb_regression(
                np.concatenate([values, values]),
                np.concatenate([x_q, x_q - LOG2]),
                np.concatenate([by_node[:, :, 1 + h].ravel(), in_doublet[:, :, h].ravel()]),
                use_slope,
                signal[h],
                log_capture=np.concatenate([u_q, u_q]) if latent else None,
                capture_coefficient=1.0 if latent else None,
            )
        if use_slope:
            rna_single = weighted_normal(x, posterior[:, ~is_doublet].sum(axis=1), (0.0, spread))
            rna_double = weighted_normal(x, posterior[:, is_doublet].sum(axis=1), (LOG2, spread))
        if latent and iteration > 1:
            capture_sd = float(
                np.clip(np.sqrt((total * nodes[:, None] ** 2).sum() / n_cells), 0.01, 3.0)
            )
            nodes = capture_sd * standard
            u_q = np.repeat(nodes, n_cells)
        # E step.
        per_node, node_total, signal_nodes = latent_log_likelihoods(
            counts, x, background, signal, pairs, active, nodes, log_weights
        )
        log_like = node_total.copy()
        if use_slope:
            log_like[:, ~is_doublet] += normal_log_pdf(x, *rna_single)[:, None]
            log_like[:, is_doublet] += normal_log_pdf(x, *rna_double)[:, None]
        joint_log = log_like + log_prior
        per_cell = log_sum_exp(joint_log, axis=1, keepdims=True)
        posterior = np.exp(joint_log - per_cell)
        joint = posterior[:, :, None] * per_node
        log_likelihood = float(per_cell.sum())
        # The M step is approximate (a few IRLS steps, moment sizes): the likelihood may
        # dip, so stop on a small change either way, after a few iterations.
        if (
            iteration >= EM_MIN_ITERATIONS
            and abs(log_likelihood - previous) < EM_TOLERANCE * n_cells
        ):
            break
        previous = log_likelihood
    return MixtureFit(
        background,
        signal,
        pairs,
        posterior,
        log_prior,
        iteration,
        log_likelihood,
        nodes,
        log_weights,
    )


def latent_log_likelihoods(counts, x, background, signal, pairs, active, nodes, log_weights):
    """Per cell and class the log-likelihood with the log capture integrated out.

    Returns ``(node_posterior, log_like, signal_nodes)``: cells x classes x nodes posterior
    of the capture node given the class (for a doublet: of the background's capture),
    cells x classes log-likelihood, and nodes x cells x hashtags posterior of the capture
    node of a doublet's cell carrying the hashtag. A negative or a singlet is one cell
    whose capture scales its signal and background alike; a doublet's two hashtags each
    have their own cell's capture, and its background a third (the sum of both cells').
    """
    n_cells, n_tags = counts.shape
    # the counts' terms of the NB log-pmfs are the same at every node: once per component
    background_terms = [nb_count_term(counts[:, h], background[h].size) for h in range(n_tags)]
    signal_terms = {h: nb_count_term(counts[:, h], signal[h].size) for h in np.flatnonzero(active)}
    singles, doublets, double_signal = [], [], []
    for u, lw in zip(nodes, log_weights, strict=True):
        log_background = np.column_stack(
            [
                nb_log_pmf(
                    counts[:, h], background[h].mean(x, u), background[h].size, background_terms[h]
                )
                for h in range(n_tags)
            ]
        )
        negative = log_background.sum(axis=1, keepdims=True)
        gain = np.full((n_cells, n_tags), -np.inf)
        double = np.full((n_cells, n_tags), -np.inf)
        for h in np.flatnonzero(active):
            s, term = signal[h], signal_terms[h]
            gain[:, h] = nb_log_pmf(counts[:, h], s.mean(x, u), s.size, term) - log_background[:, h]
            double[:, h] = nb_log_pmf(counts[:, h], s.mean(x - LOG2, u), s.size, term) + lw
        singles.append(np.concatenate([negative, negative + gain], axis=1) + lw)
        if len(pairs):
            doublets.append(
                negative - log_background[:, pairs[:, 0]] - log_background[:, pairs[:, 1]] + lw
            )
        double_signal.append(double)
    singles = np.stack(singles, axis=2)
    single_total = log_sum_exp(singles, axis=2)
    with np.errstate(invalid="ignore"):  # classes of an inactive hashtag: -inf - -inf
        node_posterior = [np.nan_to_num(np.exp(singles - single_total[:, :, None]))]
    log_like = [single_total]
    double_signal = np.stack(double_signal)  # q, c, h
    with np.errstate(invalid="ignore"):
        signal_total = log_sum_exp(double_signal, axis=0)
        signal_nodes = np.nan_to_num(np.exp(double_signal - signal_total[None]))
    if len(pairs):
        doublets = np.stack(doublets, axis=2)
        doublet_total = log_sum_exp(doublets, axis=2)
        node_posterior.append(np.exp(doublets - doublet_total[:, :, None]))
        log_like.append(doublet_total + signal_total[:, pairs[:, 0]] + signal_total[:, pairs[:, 1]])
    return np.concatenate(node_posterior, axis=1), np.concatenate(log_like, axis=1), signal_nodes
