"""EmptyDrops cell calling (Lun et al. 2019), following DropletUtils' `emptyDrops`.

A barcode is called a cell when its counts are unlikely to be a draw from the ambient RNA
pool. Steps, each as in DropletUtils (R/emptyDrops.R, R/ambientProfileEmpty.R,
src/montecarlo_pval.cpp) unless said otherwise:

1. Ambient profile: the summed counts of barcodes with 0 < total <= `lower`, turned into
   proportions by Simple Good-Turing (edgeR's `goodTuringProportions`), so genes never seen
   in the ambient pool still get a small proportion. Genes with no count anywhere get 0.
2. Concentration `alpha` of a Dirichlet-multinomial (DM) null: maximum likelihood over the
   ambient barcodes (DropletUtils' `alpha=NULL`), on [0.01, 10000].
3. Every barcode with total > `lower` gets its DM log-probability under the null.
4. Monte Carlo p-values: per iteration, molecules are drawn one at a time from the ambient DM
   up to the largest total to test, recording the log-probability at each distinct total, so
   barcodes with the same total share draws; p = (1 + #{sim <= obs}) / (n_iter + 1).
5. Barcodes with total >= `retain` (default: the knee of the barcode-rank curve, as
   `barcodeRanks`) are kept as cells: p-value and FDR 0, and they are not simulated.
6. Benjamini-Hochberg over the tested barcodes; cells are those with FDR <= `fdr`.

Differences from DropletUtils, all deliberate:

- DM molecules are drawn by the Polya urn (each new molecule copies an earlier one of the
  same iteration with probability k / (alpha + k), else comes from the ambient profile).
  This is the same distribution as DropletUtils' Dirichlet draw followed by multinomial
  draws, without drawing a gamma variate for each of ~30,000 genes per iteration, and it
  vectorizes across iterations.
- Each iteration has its own random stream (`SeedSequence(seed).spawn`), as DropletUtils
  seeds each iteration; results depend on `seed` only, not on memory limits.
- Retained barcodes report p-value 0 (DropletUtils reports their Monte Carlo p-value and
  uses 0 only in the correction); skipping their simulation bounds the work by the knee.
- A simulated log-probability within 1e-9 (relative) of the observed one counts as "<=":
  the two are computed by different sums, so float noise must not decide ties.
- `knee_point` fits its own penalized cubic B-spline with the same knots rule and df as R's
  `smooth.spline(df=20)`; the knee can differ from R's by a rank or two.

Memory: the raw matrix is read in row blocks for the ambient statistics; only the rows of
tested barcodes are copied; Monte Carlo works on blocks of iterations x draws bounded by
`max_block_draws`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from scipy.interpolate import BSpline
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from kbagg.cells.blocks import row_blocks
from kbagg.errors import KbaggError

ALPHA_BOUNDS = (0.01, 10_000.0)  # DropletUtils' .estimate_alpha interval
TIE_TOLERANCE = 1e-9  # relative; see the module docstring
ROW_BLOCK_NNZ = 1 << 20  # non-zeros per row block when scanning the raw matrix


class EmptyDropsWarning(UserWarning):
    """EmptyDrops ran but its result is degenerate (nothing to test, no knee, ...)."""


@dataclass(frozen=True)
class EmptyDropsResult:
    """Per-barcode EmptyDrops statistics, in the row order of the raw matrix.

    `log_prob`, `p_value`, `fdr` and `limited` are NaN / False for barcodes that were not
    tested (total <= lower). `ambient` holds the ambient proportion of every gene.
    """

    total: np.ndarray
    log_prob: np.ndarray
    p_value: np.ndarray
    fdr: np.ndarray
    is_cell: np.ndarray
    limited: np.ndarray
    ambient: np.ndarray
    params: dict
    warnings: tuple[str, ...] = field(default=())

    def to_frame(self, barcodes=None) -> pd.DataFrame:
        """The per-barcode columns as a DataFrame (index: `barcodes` when given)."""
        return pd.DataFrame(
            {
                "total": self.total,
                "log_prob": self.log_prob,
                "p_value": self.p_value,
                "fdr": self.fdr,
                "is_cell": self.is_cell,
                "limited": self.limited,
            },
            index=None if barcodes is None else pd.Index(barcodes),
        )


class _Progress:
    """Calls `log` at most every `every_s` seconds (and always for `force`)."""

    def __init__(self, log: Callable[[str], None] | None, every_s: float = 5.0):
        self.log, self.every_s, self.last = log, every_s, -math.inf

    def __call__(self, message: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.log is not None and (force or now - self.last >= self.every_s):
            self.log(f"emptydrops: {message}")
            self.last = now


# --- input -------------------------------------------------------------------------------
def _counts_csr(raw) -> tuple[sp.csr_matrix, bool]:
    """`raw` as a canonical CSR matrix of non-negative integer counts (rounded if needed)."""
    if isinstance(raw, np.ndarray):
        raw = sp.csr_matrix(raw)
    elif not sp.issparse(raw):
        raise KbaggError(
            f"empty_drops: raw matrix must be a scipy sparse matrix or numpy array, "
            f"got {type(raw).__name__}"
        )
    raw = raw.tocsr()
    if raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] == 0:
        raise KbaggError(
            f"empty_drops: raw matrix has shape {raw.shape}; need >= 1 barcode and >= 1 gene"
        )
    if not raw.has_canonical_format:
        raw = raw.copy()
        raw.sum_duplicates()
    if raw.nnz and raw.data.min() < 0:
        raise KbaggError("empty_drops: raw matrix has negative counts; pass UMI counts")
    step = ROW_BLOCK_NNZ
    rounded = raw.dtype.kind == "f" and any(
        np.any(raw.data[i : i + step] != np.round(raw.data[i : i + step]))
        for i in range(0, raw.nnz, step)
    )
    if rounded:
        # DropletUtils rounds non-integer counts (e.g. from kb --mm) before testing.
        raw = sp.csr_matrix((np.round(raw.data), raw.indices, raw.indptr), shape=raw.shape)
    return raw, rounded


# --- ambient profile ---------------------------------------------------------------------
def good_turing_proportions(counts: np.ndarray, confidence: float = 1.96) -> np.ndarray:
    """Simple Good-Turing proportions of one count vector (edgeR's `goodTuringProportions`).

    Parameters
    ----------
    counts
        Non-negative integer counts, one per item (gene).
    confidence
        Confidence factor for switching from Turing to the log-linear estimates
        (Gale & Sampson 1995; edgeR uses 1.96).

    Returns
    -------
    Proportions summing to 1. Items with count 0 share the estimated unseen mass equally;
    when no item has count 1 that mass is 0 and, as DropletUtils' `.safe_good_turing`,
    a pseudo-probability 1/sum(counts) is given to the zeros instead.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= 0:
        raise KbaggError("good_turing_proportions: all counts are zero")
    r, n = np.unique(counts[counts > 0], return_counts=True)
    r_f, n_f = r.astype(float), n.astype(float)
    log_r = np.log(r_f)
    # Log-linear fit of the averaged frequencies of frequencies (Z_r) on r.
    # Z_r = n_r / ((r_next - r_prev) / 2), with r_next = 2r - r_prev for the largest r.
    prev = np.concatenate(([0.0], r_f[:-1]))
    span = np.concatenate((r_f[1:] - prev[:-1], [2.0 * (r_f[-1] - prev[-1])]))
    log_z = np.log(2.0 * n_f / span)
    if len(r) > 1:
        dx = log_r - log_r.mean()
        slope = float(np.sum(dx * (log_z - log_z.mean())) / np.sum(dx * dx))
    else:
        slope = -1.0  # one distinct count: no fit possible; r* = r
    p_unseen = n_f[0] / total if r[0] == 1 else 0.0
    lgt = (r_f + 1) * np.exp(slope * (np.log(r_f + 1) - log_r))
    # Turing estimates while the next count is r+1 and they differ significantly from LGT.
    consecutive = np.zeros(len(r), dtype=bool)
    consecutive[:-1] = r[1:] == r[:-1] + 1
    n_next = np.concatenate((n_f[1:], [1.0]))
    turing = (r_f + 1) * n_next / n_f
    differs = np.abs(turing - lgt) > confidence * turing * np.sqrt(1.0 / n_next + 1.0 / n_f)
    use_turing = np.logical_and.accumulate(consecutive & differs)
    r_star = np.where(use_turing, turing, lgt)
    proportion_of_r = r_star * (1.0 - p_unseen) / np.sum(r_star * n_f)

    out = np.zeros(len(counts))
    seen = counts > 0
    out[seen] = proportion_of_r[np.searchsorted(r, counts[seen])]
    n_zero = int(np.count_nonzero(~seen))
    if n_zero:
        out[~seen] = p_unseen / n_zero
        if p_unseen <= 0:
            pseudo = 1.0 / total
            out[seen] *= 1.0 - pseudo
            out[~seen] = pseudo / n_zero
    return out


@dataclass(frozen=True)
class _Ambient:
    proportions: np.ndarray  # per gene, 0 for genes with no count anywhere
    n_barcodes: int
    totals_hist: np.ndarray  # number of ambient barcodes with each total (index = total)
    pair_gene: np.ndarray  # distinct (gene, count) pairs among ambient non-zeros ...
    pair_count: np.ndarray
    pair_n: np.ndarray  # ... and how many times each occurs


def _ambient_stats(raw: sp.csr_matrix, totals: np.ndarray, lower: int) -> _Ambient:
    is_ambient = (totals > 0) & (totals <= lower)
    n_ambient = int(np.count_nonzero(is_ambient))
    if n_ambient == 0:
        raise KbaggError(
            f"empty_drops: no barcode has between 1 and lower={lower} UMIs to estimate the "
            f"ambient profile from (largest total {int(totals.max())}, smallest positive "
            f"{int(totals[totals > 0].min()) if (totals > 0).any() else 0}); raise `lower` "
            f"or pass the raw (unfiltered) matrix"
        )
    expressed = np.asarray(raw.sum(axis=0)).ravel() > 0
    profile = np.zeros(raw.shape[1], dtype=np.int64)
    keys = []
    for first, end in row_blocks(raw.indptr, ROW_BLOCK_NNZ):
        lo, hi = raw.indptr[first], raw.indptr[end]
        in_ambient = np.repeat(is_ambient[first:end], np.diff(raw.indptr[first : end + 1]))
        genes = raw.indices[lo:hi][in_ambient].astype(np.int64)
        values = raw.data[lo:hi][in_ambient].astype(np.int64)
        profile += np.bincount(genes, weights=values, minlength=raw.shape[1]).astype(np.int64)
        key, n = np.unique(genes * (lower + 1) + values, return_counts=True)
        keys.append((key, n))
    key = np.concatenate([k for k, _ in keys])
    n = np.concatenate([c for _, c in keys])
    key, inverse = np.unique(key, return_inverse=True)
    n = np.bincount(inverse, weights=n).astype(np.int64)

    proportions = np.zeros(raw.shape[1])
    proportions[expressed] = good_turing_proportions(profile[expressed])
    return _Ambient(
        proportions=proportions,
        n_barcodes=n_ambient,
        totals_hist=np.bincount(totals[is_ambient], minlength=lower + 1),
        pair_gene=key // (lower + 1),
        pair_count=key % (lower + 1),
        pair_n=n,
    )


def _estimate_alpha(ambient: _Ambient) -> float:
    """Maximum-likelihood DM concentration over the ambient barcodes (on ALPHA_BOUNDS)."""
    t = np.flatnonzero(ambient.totals_hist)
    t_n = ambient.totals_hist[t]
    p = ambient.proportions[ambient.pair_gene]
    x, x_n = ambient.pair_count, ambient.pair_n

    def negative_loglik(log_alpha: float) -> float:
        a = math.exp(log_alpha)
        ap = a * p
        loglik = (
            ambient.n_barcodes * gammaln(a)
            - np.dot(t_n, gammaln(t + a))
            + np.dot(x_n, gammaln(x + ap) - gammaln(ap))
        )
        return -float(loglik)

    fit = minimize_scalar(
        negative_loglik,
        bounds=tuple(math.log(b) for b in ALPHA_BOUNDS),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(fit.x))


# --- the knee ----------------------------------------------------------------------------
def _smoothing_spline_knots(n: int) -> int:
    """Number of knots R's smooth.spline uses for n distinct x (.nknots.smspl)."""
    if n < 50:
        return n
    a1, a2, a3, a4 = (math.log2(v) for v in (50, 100, 140, 200))
    if n < 200:
        return int(2 ** (a1 + (a2 - a1) * (n - 50) / 150))
    if n < 800:
        return int(2 ** (a2 + (a3 - a2) * (n - 200) / 600))
    if n < 3200:
        return int(2 ** (a3 + (a4 - a3) * (n - 800) / 2400))
    return int(200 + (n - 3200) ** 0.2)


def _smoothing_spline_derivatives(
    x: np.ndarray, y: np.ndarray, df: float
) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives at x of a cubic smoothing spline with `df` degrees of
    freedom (R's smooth.spline criterion and knot placement; x increasing)."""
    span = x[-1] - x[0]
    xs = (x - x[0]) / span
    n_knots = _smoothing_spline_knots(len(xs))
    inner = xs[np.floor(np.linspace(0, len(xs) - 1, n_knots)).astype(int)]
    t = np.concatenate(([xs[0]] * 3, inner, [xs[-1]] * 3))
    n_basis = len(t) - 4
    eye = np.eye(n_basis)
    basis = BSpline(t, eye, 3)(xs)
    btb, bty = basis.T @ basis, basis.T @ y
    # Penalty: integral of f''^2; B'' is linear between knots, so 2-point Gauss is exact.
    left, right = t[:-1], t[1:]
    width = right - left
    keep = width > 0
    mid, half = (left + right)[keep] / 2, width[keep] / 2
    nodes = np.concatenate((mid - half / math.sqrt(3), mid + half / math.sqrt(3)))
    weights = np.concatenate((half, half))
    second = BSpline(t, eye, 3).derivative(2)(nodes)
    omega = second.T @ (second * weights[:, None])

    # Demmler-Reinsch: with M = B'B (+ a tiny ridge) and Omega V = M V diag(d), V'MV = I,
    # the fit for penalty lam is V diag(1/(1 + lam d)) V'B'y and its df the sum of
    # diag(V'B'BV) / (1 + lam d): one eigen-decomposition, then a 1-D search for lam.
    ridge = 1e-10 * np.trace(btb) / n_basis
    d, v = scipy.linalg.eigh(omega, btb + ridge * eye)
    d = np.maximum(d, 0.0)
    c = np.einsum("ij,jk,ki->i", v.T, btb, v)

    def trace(log_lambda: float) -> float:
        return float(np.sum(c / (1.0 + 10.0**log_lambda * d)))

    target = min(float(df), len(xs) - 1.0, float(c.sum()) - 1e-6)
    lo, hi = -15.0, 15.0  # trace falls from ~len(x) (interpolation) to 2 (a line)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if trace(mid) > target else (lo, mid)
    shrink = 1.0 / (1.0 + 10.0 ** ((lo + hi) / 2) * d)
    coef = v @ (shrink * (v.T @ bty))
    spline = BSpline(t, coef, 3)
    return spline.derivative(1)(xs) / span, spline.derivative(2)(xs) / span**2


def knee_point(totals, *, lower: int = 100, exclude_from: int = 50, df: float = 20) -> float:
    """Total UMI count at the knee of the barcode-rank curve (DropletUtils' `barcodeRanks`).

    Parameters
    ----------
    totals
        Total UMI count per barcode (all barcodes of the raw matrix).
    lower
        Only distinct totals above this are used.
    exclude_from
        The first `exclude_from` ranks are not used to find the fitting region.
    df
        Degrees of freedom of the smoothing spline fitted to log10(total) vs log10(rank).

    Returns
    -------
    The knee total (a total of some barcode). Raises `KbaggError` when fewer than 3
    distinct totals are above `lower`.
    """
    totals = np.asarray(totals)
    values, lengths = np.unique(totals, return_counts=True)
    values, lengths = values[::-1], lengths[::-1]  # decreasing totals
    rank = np.cumsum(lengths) - (lengths - 1) / 2  # mid-rank of each run of equal totals
    keep = values > lower
    if np.count_nonzero(keep) < 3:
        raise KbaggError(
            f"knee_point: only {np.count_nonzero(keep)} distinct barcode totals above "
            f"lower={lower}; need 3 to find a knee (pass `retain` explicitly)"
        )
    kept = values[keep]
    y = np.log10(kept.astype(float))
    x = np.log10(rank[keep])
    slope = np.diff(y) / np.diff(x)
    skip = min(len(slope) - 1, int(np.count_nonzero(x <= math.log10(exclude_from))))
    right = int(np.argmin(slope[skip:]))
    left = int(np.argmax(slope[skip : skip + right + 1]))
    left, right = left + skip, right + skip
    if right - left + 1 < 4:
        return float(kept[left])
    d1, d2 = _smoothing_spline_derivatives(x[left : right + 1], y[left : right + 1], df)
    curvature = d2 / (1 + d1**2) ** 1.5
    return float(kept[left + int(np.argmin(curvature))])


# --- log-probabilities -------------------------------------------------------------------
def _observed_log_probs(
    rows: sp.csr_matrix, totals: np.ndarray, proportions: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """(data-dependent part, full log-probability) of each row under the ambient null."""
    log_factorial = gammaln(np.arange(int(rows.data.max(initial=0)) + 1) + 1.0)  # log(k!)
    data_part = np.zeros(rows.shape[0])
    for first, end in row_blocks(rows.indptr, ROW_BLOCK_NNZ):
        lo, hi = rows.indptr[first], rows.indptr[end]
        x = rows.data[lo:hi].astype(np.int64)
        p = proportions[rows.indices[lo:hi]]
        if math.isinf(alpha):
            per_entry = x * np.log(p)
        else:
            # lgamma(x + ap) - lgamma(ap) is log(ap) for x == 1, by far the commonest count.
            ap = alpha * p
            per_entry = np.log(ap)
            many = x > 1
            per_entry[many] = gammaln(x[many] + ap[many]) - gammaln(ap[many])
        per_entry -= log_factorial[x]
        row = np.repeat(np.arange(end - first), np.diff(rows.indptr[first : end + 1]))
        data_part[first:end] = np.bincount(row, weights=per_entry, minlength=end - first)
    if math.isinf(alpha):
        rest = gammaln(totals + 1.0)
    else:
        rest = gammaln(totals + 1.0) + gammaln(alpha) - gammaln(totals + alpha)
    return data_part, data_part + rest


def _null_log_probs(
    u_new: np.ndarray, u_pick: np.ndarray, cumulative: np.ndarray, weight: np.ndarray, alpha
) -> np.ndarray:
    """Data-dependent DM log-probability after each molecule, for a block of iterations.

    Row i of `u_new`/`u_pick` holds two uniforms per molecule of iteration i. Molecule k is
    new (drawn from the ambient profile, via `cumulative`) with probability alpha/(alpha+k),
    else a copy of molecule floor(u_pick * k) of the same iteration (Polya urn). `weight` is
    alpha*p per ambient gene (or log p when alpha is infinite).
    """
    n_rows, n_draws = u_new.shape
    k = np.arange(n_draws)
    is_new = (
        np.ones((n_rows, n_draws), dtype=bool)
        if math.isinf(alpha)
        else (u_new * (alpha + k) < alpha)
    )
    flat = np.arange(n_rows * n_draws).reshape(n_rows, n_draws)
    parent = np.minimum((u_pick * k).astype(np.int64), np.maximum(k - 1, 0))
    parent += (np.arange(n_rows) * n_draws)[:, None]
    root = np.where(is_new, flat, parent).ravel()
    del flat, parent
    while True:  # pointer jumping: every molecule ends at the new molecule it copies
        jumped = root[root]
        if np.array_equal(jumped, root):
            break
        root = jumped
    gene_dtype = np.uint16 if len(cumulative) <= np.iinfo(np.uint16).max else np.int64
    gene = np.zeros(n_rows * n_draws, dtype=gene_dtype)
    picks = u_pick.ravel()[is_new.ravel()]
    gene[is_new.ravel()] = np.minimum(
        np.searchsorted(cumulative, picks, side="right"), len(cumulative) - 1
    )
    gene = gene[root].reshape(n_rows, n_draws)
    del root, is_new, picks
    # How many earlier molecules of the same iteration have the same gene.
    order = np.argsort(gene, axis=1, kind="stable")
    ordered = np.take_along_axis(gene, order, axis=1)
    group_start = np.ones((n_rows, n_draws), dtype=bool)
    group_start[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start_pos = np.maximum.accumulate(np.where(group_start, k, 0), axis=1)
    earlier = np.empty((n_rows, n_draws), dtype=np.int64)
    np.put_along_axis(earlier, order, k - start_pos, axis=1)
    del order, ordered, group_start, start_pos
    if math.isinf(alpha):
        step = weight[gene] - np.log1p(earlier)
    else:
        step = np.log(weight[gene] + earlier) - np.log1p(earlier)
    return np.cumsum(step, axis=1, out=step)


def _count_at_most(sorted_sims: np.ndarray, column: np.ndarray, value: np.ndarray) -> np.ndarray:
    """For each i: how many of sorted_sims[:, column[i]] (sorted ascending) are <= value[i]."""
    n_rows = sorted_sims.shape[0]
    lo = np.zeros(len(value), dtype=np.int64)
    hi = np.full(len(value), n_rows, dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        at_most = sorted_sims[np.minimum(mid, n_rows - 1), column] <= value
        lo = np.where(active & at_most, mid + 1, lo)
        hi = np.where(active & ~at_most, mid, hi)


def _monte_carlo_n_below(
    totals: np.ndarray,
    data_log_probs: np.ndarray,
    proportions: np.ndarray,
    alpha: float,
    n_iter: int,
    seed: int,
    max_block_draws: int,
    progress: _Progress,
) -> np.ndarray:
    """#{simulated null log-prob <= observed} over n_iter iterations, per barcode."""
    distinct, column = np.unique(totals, return_inverse=True)
    max_total = int(distinct[-1])
    genes = np.flatnonzero(proportions > 0)
    cumulative = np.cumsum(proportions[genes])
    cumulative /= cumulative[-1]
    weight = np.log(proportions[genes]) if math.isinf(alpha) else alpha * proportions[genes]
    threshold = data_log_probs + TIE_TOLERANCE * np.maximum(1.0, np.abs(data_log_probs))
    rows_per_block = max(1, min(n_iter, max_block_draws // max_total))
    streams = np.random.SeedSequence(seed).spawn(n_iter)
    n_below = np.zeros(len(totals), dtype=np.int64)
    for start in range(0, n_iter, rows_per_block):
        n_rows = min(rows_per_block, n_iter - start)
        u_new = np.empty((n_rows, max_total))
        u_pick = np.empty((n_rows, max_total))
        for i in range(n_rows):
            rng = np.random.Generator(np.random.PCG64(streams[start + i]))
            rng.random(out=u_new[i])
            rng.random(out=u_pick[i])
        log_probs = _null_log_probs(u_new, u_pick, cumulative, weight, alpha)
        del u_new, u_pick
        sims = np.sort(log_probs[:, distinct - 1], axis=0)
        del log_probs
        n_below += _count_at_most(sims, column, threshold)
        progress(f"{start + n_rows:,}/{n_iter:,} iterations (up to {max_total:,} UMIs)")
    return n_below


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p, kind="stable")
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(adjusted)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# --- the whole thing ---------------------------------------------------------------------
def empty_drops(
    raw,
    *,
    lower: int = 100,
    fdr: float = 0.001,
    n_iter: int = 10_000,
    seed: int = 0,
    retain: float | None = None,
    alpha: float | None = None,
    max_block_draws: int = 1 << 20,
    log: Callable[[str], None] | None = None,
    log_every_s: float = 5.0,
) -> EmptyDropsResult:
    """Call cells in a raw (unfiltered) barcode x gene UMI matrix with EmptyDrops.

    Parameters
    ----------
    raw
        Barcodes x genes UMI counts (scipy sparse, CSR preferred; other formats are
        converted). Non-integer counts are rounded, as DropletUtils does.
    lower
        Barcodes with 0 < total <= `lower` define the ambient profile; only barcodes above
        it are tested.
    fdr
        Barcodes with Benjamini-Hochberg FDR <= `fdr` are cells.
    n_iter
        Monte Carlo iterations; the smallest p-value possible is 1 / (n_iter + 1).
    seed
        Seed of the Monte Carlo draws; the same seed gives the same result.
    retain
        Barcodes with total >= `retain` are cells without testing. None: the knee point
        (`knee_point(totals, lower=lower)`); `math.inf`: retain none.
    alpha
        Dirichlet-multinomial concentration. None: maximum likelihood on the ambient
        barcodes; `math.inf`: multinomial null.
    max_block_draws
        Monte Carlo memory bound: iterations x molecules simulated at once (about 80 bytes
        each).
    log
        Called with a progress line every few seconds on long runs.
    log_every_s
        Seconds between Monte Carlo progress lines (0: one per block of iterations).

    Returns
    -------
    EmptyDropsResult, one entry per barcode. Raises `KbaggError` for an empty or all-zero
    matrix or when no barcode has 1..lower UMIs (no ambient profile). A matrix with no
    barcode above `lower`, or no knee, gives a result with a `warnings` entry (also issued
    as `EmptyDropsWarning`).
    """
    if lower < 0 or not 0 < fdr <= 1 or n_iter < 1 or max_block_draws < 1:
        raise KbaggError(
            f"empty_drops: need lower >= 0, 0 < fdr <= 1, n_iter >= 1 and "
            f"max_block_draws >= 1 (got lower={lower}, fdr={fdr}, n_iter={n_iter}, "
            f"max_block_draws={max_block_draws})"
        )
    if alpha is not None and not alpha > 0:
        raise KbaggError(f"empty_drops: alpha must be positive or None, got {alpha}")
    progress = _Progress(log, log_every_s)
    notes: list[str] = []

    def warn(message: str) -> None:
        notes.append(message)
        warnings.warn(message, EmptyDropsWarning, stacklevel=3)
        progress(message, force=True)

    raw, rounded = _counts_csr(raw)
    totals = np.asarray(raw.sum(axis=1)).ravel().astype(np.int64)
    if totals.max() <= 0:
        raise KbaggError(f"empty_drops: all {raw.shape[0]:,} barcodes have 0 UMIs")
    progress(
        f"{raw.shape[0]:,} barcodes x {raw.shape[1]:,} genes, {int(totals.sum()):,} UMIs",
        force=True,
    )
    ambient = _ambient_stats(raw, totals, lower)
    alpha_used = _estimate_alpha(ambient) if alpha is None else float(alpha)
    progress(f"ambient from {ambient.n_barcodes:,} barcodes; alpha={alpha_used:.4g}", force=True)

    tested = np.flatnonzero(totals > lower)
    knee = None
    if retain is not None:
        retain_used = float(retain)
    elif len(tested) == 0:
        retain_used = math.inf
    else:
        try:
            knee = knee_point(totals, lower=lower)
            retain_used = knee
        except KbaggError as error:
            retain_used = math.inf
            warn(f"{error}; no barcode is retained without testing")
    if len(tested) == 0:
        warn(
            f"no barcode has more than lower={lower} UMIs (largest {int(totals.max())}): "
            f"nothing to test, no cells called"
        )

    n = raw.shape[0]
    log_prob = np.full(n, np.nan)
    p_value = np.full(n, np.nan)
    fdr_values = np.full(n, np.nan)
    limited = np.zeros(n, dtype=bool)
    retained = np.zeros(0, dtype=np.int64)
    max_simulated = 0
    if len(tested):
        data_part, log_prob[tested] = _observed_log_probs(
            raw[tested], totals[tested].astype(float), ambient.proportions, alpha_used
        )
        retained_mask = totals[tested] >= retain_used
        retained = tested[retained_mask]
        simulate = ~retained_mask
        p_tested = np.zeros(len(tested))
        if simulate.any():
            max_simulated = int(totals[tested][simulate].max())
            n_below = _monte_carlo_n_below(
                totals[tested][simulate],
                data_part[simulate],
                ambient.proportions,
                alpha_used,
                n_iter,
                seed,
                max_block_draws,
                progress,
            )
            p_tested[simulate] = (n_below + 1) / (n_iter + 1)
            limited[tested[simulate]] = n_below == 0
        p_value[tested] = p_tested
        fdr_values[tested] = _benjamini_hochberg(p_tested)
    is_cell = np.nan_to_num(fdr_values, nan=np.inf) <= fdr
    progress(
        f"{int(is_cell.sum()):,} cells ({len(retained):,} retained at total >= "
        f"{retain_used:g}, {len(tested):,} tested)",
        force=True,
    )
    params = {
        "method": "emptydrops",
        "reference": "Lun et al. 2019, Genome Biology 20:63; DropletUtils emptyDrops",
        "lower": int(lower),
        "fdr": float(fdr),
        "n_iter": int(n_iter),
        "seed": int(seed),
        "retain": None if retain is None else float(retain),
        "retain_used": float(retain_used),
        "knee": knee,
        "alpha": None if alpha is None else float(alpha),
        "alpha_used": float(alpha_used),
        "alpha_bounds": list(ALPHA_BOUNDS),
        "max_block_draws": int(max_block_draws),
        "rounded_counts": rounded,
        "n_barcodes": int(n),
        "n_genes": int(raw.shape[1]),
        "n_ambient_barcodes": int(ambient.n_barcodes),
        "n_tested": int(len(tested)),
        "n_retained": int(len(retained)),
        "max_simulated_total": max_simulated,
        "n_cells": int(is_cell.sum()),
    }
    return EmptyDropsResult(
        total=totals,
        log_prob=log_prob,
        p_value=p_value,
        fdr=fdr_values,
        is_cell=is_cell,
        limited=limited,
        ambient=ambient.proportions,
        params=params,
        warnings=tuple(notes),
    )
