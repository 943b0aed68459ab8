"""The composition mixture: hashtag calls from each cell's hashtag *proportions*.

Every cell is negative, a singlet of hashtag h or a doublet of h and k, as in
`kbagg.cells.demux.model`; here the counts of one cell are Dirichlet-multinomial given its
total hashtag UMIs N, with mean proportions

- negative: ``b``, one background composition shared by all cells (ambient and
  non-specific tag);
- singlet of h: ``(1 - a) * b + a * e_h``, where the signal fraction ``a`` of the cell's
  hashtag UMIs takes one of `SIGNAL_FRACTIONS`, with weights fitted per hashtag (a
  histogram: no shape is assumed for how much tag a cell binds);
- doublet of h and k: ``(1 - a) * b + a * (w * e_h + (1 - w) * e_k)``, ``w`` one of
  `DOUBLET_SPLITS` (the two cells bind unequal amounts), weights over ``(a, w)`` shared by
  all pairs.

The Dirichlet's concentration absorbs the spread of the background's composition between
cells. log N is normal per class (negatives, each singlet hashtag, and a doublet around the
sum of its two cells' mean totals), rising with the log RNA library size when it is given;
the log RNA is normal per kind of class (negative, singlet, doublet): a doublet holds two
cells' tag and RNA. Doublet pair priors
are tied to the singlet shares (pair h, k in proportion to ``p_h * p_k``): doublets form
at random, and a free pair prior lets one pair absorb a singlet class whose background
leans to the pair's other hashtag (the cell-line data of Howitt et al. 2023: 0.61 of
singlets right free, 0.89 tied).

Why it exists beside the count model (docs/demultiplexing.md): on real captures with
genotype truth the count model's per-hashtag absolute levels fail (0.00-0.56 of singlets
right on five of ten captures) where the proportions hold; on the simulator's data the
count model fits better. `kbagg.cells.demux.demultiplex` fits both and keeps the one the
data support (BIC).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from kbagg.cells.demux.stats import log_sum_exp, normal_log_pdf, weighted_normal

SIGNAL_FRACTIONS = np.array([0.03, 0.08, 0.15, 0.25, 0.4, 0.55, 0.7, 0.82, 0.91, 0.97])
DOUBLET_SPLITS = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
EM_MAX_ITERATIONS = 60
EM_MIN_ITERATIONS = 5
EM_TOLERANCE = 1e-4  # log-likelihood change per cell below which EM stops
CONCENTRATION_START = 50.0
CONCENTRATION_STEP = 1.5  # the line search's factor
CONCENTRATION_MAX_STEPS = 8
CONCENTRATION_EVERY = 5  # iterations between concentration updates
CONCENTRATION_RANGE = (1.0, 1e5)
PSEUDOCOUNT = 0.5  # added to every signal-fraction histogram bin
START_NEGATIVE, START_DOUBLET = 0.05, 0.10  # starting class shares
KINDS = ("negative", "singlet", "doublet")


@dataclass
class CompositionFit:
    """The fitted composition mixture and per cell the posterior of every class."""

    background: np.ndarray  # (hashtags,) background composition, sums to 1
    concentration: float  # the Dirichlet's precision
    signal_weights: np.ndarray  # (hashtags, len(SIGNAL_FRACTIONS)) per singlet hashtag
    doublet_weights: np.ndarray  # (len(SIGNAL_FRACTIONS), len(DOUBLET_SPLITS))
    pairs: np.ndarray  # (n_pairs, 2) hashtag indices of the doublet classes
    posterior: np.ndarray  # cells x (1 + n_tags + n_pairs): negative, singlets, doublets
    log_likelihood: float  # of the counts (and RNA sizes), constants included
    n_parameters: int
    iterations: int
    median_total: float  # median hashtag UMIs per cell


class _TotalNormals:
    """log N normal per class: the negatives', each singlet hashtag's, and a doublet's
    around the log of the sum of its two cells' mean totals (a doublet's tag UMIs are its
    two cells'), with one sd for all doublets. With the centred log RNA library size `x`,
    every mean also rises with it at one fitted slope (a cell that binds more tag holds
    more RNA, demuxmix's covariate); a doublet's two cells each hold about half its RNA."""

    def __init__(self, log_total, n_tags: int, pairs: np.ndarray, covariate=None):
        self.values, self.pairs = log_total, pairs
        self.x = np.zeros_like(log_total) if covariate is None else np.asarray(covariate)
        self.x_doublet = self.x if covariate is None else self.x - np.log(2.0)
        self.fit_slope = covariate is not None
        self.slope = 0.0
        centre, spread = float(np.median(log_total)), float(log_total.std()) + 1e-3
        self.negative = (centre, spread)
        self.singlet = np.full((n_tags, 2), (centre, spread))
        self.doublet_sd = spread

    def doublet_means(self) -> np.ndarray:
        mean, sd = self.singlet[:, 0], self.singlet[:, 1]
        linear = np.exp(mean + sd**2 / 2)
        return np.log(linear[self.pairs[:, 0]] + linear[self.pairs[:, 1]])

    def log_pdfs(self) -> dict[str, np.ndarray]:
        single = self.values - self.slope * self.x
        double = (self.values - self.slope * self.x_doublet)[:, None]
        return {
            "negative": normal_log_pdf(single, *self.negative),
            "singlet": normal_log_pdf(
                single[:, None], self.singlet[None, :, 0], self.singlet[None, :, 1]
            ),
            "doublet": normal_log_pdf(double, self.doublet_means()[None], self.doublet_sd),
        }

    def update(self, negative, singlet, pair) -> None:
        single = self.values - self.slope * self.x
        self.negative = weighted_normal(single, negative, self.negative)
        for h in range(singlet.shape[1]):
            self.singlet[h] = weighted_normal(single, singlet[:, h], self.singlet[h])
        has_doublets = len(self.pairs) and pair.sum() >= 5
        if has_doublets:
            residual = (self.values - self.slope * self.x_doublet)[:, None] - self.doublet_means()
            self.doublet_sd = max(float(np.sqrt((pair * residual**2).sum() / pair.sum())), 0.05)
        if not self.fit_slope:
            return
        # the slope by weighted least squares around the class means just fitted
        x, x_d = self.x, self.x_doublet
        numerator = (negative * x * (self.values - self.negative[0])).sum()
        numerator += (
            singlet * x[:, None] * (self.values[:, None] - self.singlet[None, :, 0])
        ).sum()
        denominator = (negative * x**2).sum() + (singlet * (x**2)[:, None]).sum()
        if has_doublets:
            numerator += (pair * x_d[:, None] * (self.values[:, None] - self.doublet_means())).sum()
            denominator += (pair * (x_d**2)[:, None]).sum()
        if denominator > 1e-9:
            self.slope = float(numerator / denominator)


class _Normals:
    """Per kind of class a normal on a per-cell value (the log RNA), fitted by weights."""

    def __init__(self, values: np.ndarray, shift_doublet: float):
        self.values = values
        centre, spread = float(np.median(values)), float(values.std()) + 1e-3
        self.params = {
            k: (centre + (shift_doublet if k == "doublet" else 0.0), spread) for k in KINDS
        }

    def log_pdf(self, kind: str) -> np.ndarray:
        return normal_log_pdf(self.values, *self.params[kind])

    def update(self, kind: str, weights: np.ndarray) -> None:
        self.params[kind] = weighted_normal(self.values, weights, self.params[kind])


def _log_dm_terms(counts: np.ndarray, concentration: np.ndarray) -> np.ndarray:
    """``lgamma(y + c) - lgamma(c)``, broadcast: the count-dependent part of a
    Dirichlet-multinomial term."""
    return gammaln(counts + concentration) - gammaln(concentration)


@dataclass
class _Parameters:
    background: np.ndarray
    concentration: float
    signal_weights: np.ndarray
    doublet_weights: np.ndarray
    negative_share: float
    singlet_share: np.ndarray
    doublet_share: float


@dataclass
class _Expectations:
    """What the M step needs from the E step (doublets summed over their grid in chunks)."""

    per_cell: np.ndarray  # (n,) log-likelihood
    negative: np.ndarray  # (n,) posterior
    singlet: np.ndarray  # (n, T, A)
    pair: np.ndarray  # (n, P)
    doublet_grid: np.ndarray  # (A, W) summed over cells and pairs
    doublet_background: np.ndarray  # (n, T) expected background UMIs from doublets


CHUNK_ELEMENTS = 4_000_000  # cells x pairs x grid per block of the doublet terms


def _e_step(y, total, pairs, params: _Parameters, kind_terms) -> _Expectations:
    n_cells, n_tags = y.shape
    a_grid, w_grid = SIGNAL_FRACTIONS, DOUBLET_SPLITS
    n_a, n_w, n_pairs = len(a_grid), len(w_grid), len(pairs)
    phi, background = params.concentration, params.background
    base = gammaln(phi) - gammaln(total + phi)
    kept = phi * (1 - a_grid)[None, :] * background[:, None]  # T, A
    background_terms = _log_dm_terms(y[:, :, None], kept[None])  # n, T, A
    background_sum = background_terms.sum(axis=1)  # n, A
    negative = base + _log_dm_terms(y, phi * background[None]).sum(axis=1)
    negative += np.log(params.negative_share) + kind_terms["negative"]
    carried = _log_dm_terms(y[:, :, None], (kept + phi * a_grid[None, :])[None])
    singlets = (
        (base[:, None] + background_sum)[:, None, :]
        - background_terms
        + carried
        + np.log(np.maximum(params.singlet_share, 1e-300))[None, :, None]
        + np.log(params.signal_weights)[None]
        + kind_terms["singlet"][:, :, None]
    )
    per_cell = np.logaddexp(negative, log_sum_exp(singlets.reshape(n_cells, -1), axis=1))
    pair_log = np.zeros((n_cells, n_pairs))
    doublet_grid = np.zeros((n_a, n_w))
    doublet_background = np.zeros((n_cells, n_tags))
    if n_pairs:
        # one pass over blocks of cells: a cell's normaliser needs only its own terms
        half_kept = (1 - a_grid)[None, :, None] * background[:, None, None]  # T, A, 1
        half = phi * (half_kept + a_grid[None, :, None] * w_grid[None, None, :])  # T, A, W
        kept_shares = [
            half_kept / (half_kept + a_grid[None, :, None] * split[None, None, :])
            for split in (w_grid, 1 - w_grid)
        ]  # per side of the pair: the share of its UMIs that is background
        pair_share = params.singlet_share[pairs[:, 0]] * params.singlet_share[pairs[:, 1]]
        log_pair = np.log(params.doublet_share) + np.log(pair_share / pair_share.sum())
        grid = np.log(params.doublet_weights)[None, None]
        first, second = pairs[:, 0], pairs[:, 1]
        chunk = max(1, CHUNK_ELEMENTS // (n_pairs * n_a * n_w))
        for lo in range(0, n_cells, chunk):
            rows = slice(lo, lo + chunk)
            half_terms = _log_dm_terms(y[rows, :, None, None], half[None])  # c, T, A, W
            terms = (
                (base[rows, None] + background_sum[rows])[:, None, :, None]
                - background_terms[rows][:, first, :, None]
                - background_terms[rows][:, second, :, None]
                + half_terms[:, first]
                + half_terms[:, second][..., ::-1]  # the second cell's share is 1 - w
                + log_pair[None, :, None, None]
                + grid
                + kind_terms["doublet"][rows, :, None, None]
            )
            pair_log[rows] = log_sum_exp(terms, axis=(2, 3))
            per_cell[rows] = np.logaddexp(per_cell[rows], log_sum_exp(pair_log[rows], axis=1))
            posterior = np.exp(terms - per_cell[rows, None, None, None])
            doublet_grid += posterior.sum(axis=(0, 1))
            pair_posterior = posterior.sum(axis=(2, 3))  # c, P
            background_share = np.zeros((len(pair_posterior), n_tags))
            in_pair = np.zeros_like(background_share)
            for side, tags in enumerate((first, second)):
                part = np.einsum("cpaw,paw->cp", posterior, kept_shares[side][tags])
                np.add.at(background_share.T, tags, part.T)
                np.add.at(in_pair.T, tags, pair_posterior.T)
            not_in_pair = pair_posterior.sum(axis=1, keepdims=True) - in_pair
            doublet_background[rows] = (not_in_pair + background_share) * y[rows]
    return _Expectations(
        per_cell=per_cell,
        negative=np.exp(negative - per_cell),
        singlet=np.exp(singlets - per_cell[:, None, None]),
        pair=np.exp(pair_log - per_cell[:, None]),
        doublet_grid=doublet_grid,
        doublet_background=doublet_background,
    )


def fit_composition(counts: np.ndarray, log_rna: np.ndarray | None = None) -> CompositionFit:
    """Fit the composition mixture to cells x hashtags counts by EM.

    Parameters
    ----------
    counts
        Cells x hashtags raw UMI counts.
    log_rna
        Log RNA library size per cell (any centring), or None.

    Returns
    -------
    The fit EM reached from its start: the background composition from each hashtag's
    median share in the cells where it is not the largest, even signal fractions, 5 %
    negatives and 10 % doublets.
    """
    y = np.asarray(counts, dtype=float)
    n_cells, n_tags = y.shape
    total = y.sum(axis=1)
    log_total = np.log(np.maximum(total, 1.0))
    pairs = np.array([(a, b) for a in range(n_tags) for b in range(a + 1, n_tags)], dtype=int)
    pairs = pairs.reshape(-1, 2)
    n_pairs, n_a, n_w = len(pairs), len(SIGNAL_FRACTIONS), len(DOUBLET_SPLITS)

    top = y.argmax(axis=1)
    share = y / np.maximum(total, 1.0)[:, None]
    start = np.array(
        [
            np.median(share[top != t, t]) if (top != t).any() else share[:, t].mean()
            for t in range(n_tags)
        ]
    )
    params = _Parameters(
        background=(start + 1e-3) / (start + 1e-3).sum(),
        concentration=CONCENTRATION_START,
        signal_weights=np.full((n_tags, n_a), 1.0 / n_a),
        doublet_weights=np.full((n_a, n_w), 1.0 / (n_a * n_w)),
        negative_share=START_NEGATIVE,
        singlet_share=np.full(n_tags, (1 - START_NEGATIVE - START_DOUBLET) / n_tags),
        doublet_share=START_DOUBLET,
    )
    totals = _TotalNormals(log_total, n_tags, pairs, log_rna)
    normals = [] if log_rna is None else [_Normals(np.asarray(log_rna, dtype=float), np.log(2.0))]

    def kind_terms():
        terms = totals.log_pdfs()
        for normal in normals:
            terms["negative"] = terms["negative"] + normal.log_pdf("negative")
            terms["singlet"] = terms["singlet"] + normal.log_pdf("singlet")[:, None]
            terms["doublet"] = terms["doublet"] + normal.log_pdf("doublet")[:, None]
        return terms

    previous = -np.inf
    iteration = 0
    for iteration in range(1, EM_MAX_ITERATIONS + 1):  # noqa: B007 (reported)
        e = _e_step(y, total, pairs, params, kind_terms())
        log_likelihood = float(e.per_cell.sum())
        if (
            iteration > EM_MIN_ITERATIONS
            and abs(log_likelihood - previous) < EM_TOLERANCE * n_cells
        ):
            break
        previous = log_likelihood
        # M step: shares, signal-fraction histograms, background, normals, concentration
        params.negative_share = max(float(e.negative.mean()), 1e-6)
        params.singlet_share = np.maximum(e.singlet.sum(axis=(0, 2)) / n_cells, 1e-8)
        if n_pairs:
            params.doublet_share = max(float(e.pair.sum() / n_cells), 1e-8)
        params.signal_weights = e.singlet.sum(axis=0) + PSEUDOCOUNT
        params.signal_weights /= params.signal_weights.sum(axis=1, keepdims=True)
        params.doublet_weights = e.doublet_grid + PSEUDOCOUNT
        params.doublet_weights /= params.doublet_weights.sum()
        params.background = _background_update(y, params.background, e)
        singlet_of = e.singlet.sum(axis=2)  # cells x hashtags
        kinds = {
            "negative": e.negative,
            "singlet": singlet_of.sum(axis=1),
            "doublet": e.pair.sum(axis=1),
        }
        for normal in normals:
            for kind, weights in kinds.items():
                normal.update(kind, weights)
        totals.update(e.negative, singlet_of, e.pair)
        if iteration % CONCENTRATION_EVERY == 2:
            params.concentration = _concentration_search(y, total, pairs, params, kind_terms())
    posterior = np.concatenate([e.negative[:, None], e.singlet.sum(axis=2), e.pair], axis=1)
    # constants, so that the likelihood is the counts' probability (as the count model's):
    # the multinomial coefficient, and N's from log N's density. The RNA term stays a
    # density of log RNA, as in the count model.
    constant = float((gammaln(total + 1) - gammaln(y + 1).sum(axis=1) - log_total).sum())
    n_parameters = (
        (n_tags - 1)  # background
        + 1  # concentration
        + n_tags * (n_a - 1)  # signal-fraction histograms
        + (n_a * n_w - 1)  # doublet (a, w) weights
        + n_tags
        + 1  # shares: negative, singlets, doublets (pairs tied)
        + 2 * (n_tags + 1)
        + 1  # log total normals: negative, per singlet, doublet sd
        + len(normals)  # their slope on log RNA
        + 6 * len(normals)  # the RNA normal per kind
    )
    return CompositionFit(
        background=params.background,
        concentration=params.concentration,
        signal_weights=params.signal_weights,
        doublet_weights=params.doublet_weights,
        pairs=pairs,
        posterior=posterior,
        log_likelihood=log_likelihood + constant,
        n_parameters=n_parameters,
        iterations=iteration,
        median_total=float(np.median(total)),
    )


def _concentration_search(y, total, pairs, params: _Parameters, kind_terms) -> float:
    """The concentration of highest likelihood along a line search in steps of
    `CONCENTRATION_STEP`, the other parameters held (a few E steps)."""

    def score(value: float) -> float:
        trial = dataclasses.replace(params, concentration=value)
        return float(_e_step(y, total, pairs, trial, kind_terms).per_cell.sum())

    low, high = CONCENTRATION_RANGE
    best_value, best = params.concentration, score(params.concentration)
    for factor in (CONCENTRATION_STEP, 1 / CONCENTRATION_STEP):
        moved = False
        for _ in range(CONCENTRATION_MAX_STEPS):
            value = float(np.clip(best_value * factor, low, high))
            candidate = score(value)
            if candidate <= best:
                break
            best_value, best, moved = value, candidate, True
        if moved:
            break
    return best_value


def _background_update(y, background, e: _Expectations) -> np.ndarray:
    """The background composition from the expected background UMIs of every tag (EM for
    the multinomial allocation of a carried tag's UMIs between signal and background):
    a negative's UMIs are all background; a singlet of h's are, but for h's, of which the
    share kept / (kept + a) is; a doublet's likewise (`_e_step`)."""
    a_grid = SIGNAL_FRACTIONS
    kept = (1 - a_grid)[None, :] * background[:, None]  # T, A
    singlet_of = e.singlet.sum(axis=2)  # n, T
    carried_share = (e.singlet * (kept / (kept + a_grid[None, :]))[None]).sum(axis=2)
    expected = (e.negative[:, None] + singlet_of.sum(axis=1, keepdims=True) - singlet_of) * y
    expected += carried_share * y + e.doublet_background
    updated = expected.sum(axis=0) + 1e-3
    return updated / updated.sum()
