"""kbagg's ambient RNA estimate and removal (see `kbagg.cells.ambient`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from kbagg.cells.blocks import row_blocks

METHODS = ("none", "soup")


@dataclass
class AmbientResult:
    """What `remove_ambient` found for one sample.

    `ambient_fraction`: estimated contamination per cell (NaN when not estimated);
    `decontaminated`: cells x genes expected ambient-free counts (float32 CSR);
    `profile`: the soup's share of each gene (sums to 1; NaN when no soup);
    `sample_fraction`: the sample's contamination, ambient UMIs / all cell UMIs;
    `params`, `warnings`: for uns and provenance."""

    ambient_fraction: np.ndarray
    decontaminated: sp.csr_matrix
    profile: np.ndarray
    sample_fraction: float
    params: dict
    warnings: list[str] = field(default_factory=list)


def soup_profile(
    raw: sp.spmatrix, is_cell: np.ndarray, soup_max_umis: int = 100
) -> tuple[np.ndarray, int, int]:
    """The ambient profile: the gene composition of the empty droplets.

    Parameters
    ----------
    raw
        Every barcode (barcodes x genes UMI counts).
    is_cell
        Boolean per barcode: called cells, left out of the soup.
    soup_max_umis
        Barcodes with 1 to this many UMIs are the empty droplets (SoupX's soupRange).

    Returns
    -------
    The profile (share of the soup's UMIs per gene; NaN when the soup is empty), the number
    of empty droplets and their UMIs.
    """
    raw = sp.csr_matrix(raw)
    umis = np.asarray(raw.sum(axis=1)).ravel()
    empty = ~np.asarray(is_cell, dtype=bool) & (umis >= 1) & (umis <= soup_max_umis)
    counts = np.asarray(raw[empty].sum(axis=0), dtype=np.float64).ravel()
    total = counts.sum()
    profile = counts / total if total > 0 else np.full(raw.shape[1], np.nan)
    return profile, int(empty.sum()), int(total)


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of tall `y`: CholeskyQR2 (two passes), which
    took ~10 ms where numpy's multithreaded Householder QR took 250 ms on 2 busy cores;
    Householder QR when `y` is rank-deficient."""
    try:
        for _ in range(2):
            y = np.linalg.solve(np.linalg.cholesky(y.T @ y), y.T).T
        return y
    except np.linalg.LinAlgError:
        return np.linalg.qr(y)[0]


def _randomized_pcs(x: sp.csr_matrix, n_comps: int, rng: np.random.Generator) -> np.ndarray:
    """The first `n_comps` principal-component scores of `x` (uncentred, as truncated SVD),
    by the randomized range finder with 4 power iterations (Halko, Martinsson & Tropp
    2011), in numpy: scikit-learn's import alone took longer than the whole estimate."""
    width = min(n_comps + 10, min(x.shape))
    q = _orthonormal(x @ rng.standard_normal((x.shape[1], width)))
    for _ in range(4):
        q = _orthonormal(x.T @ q)
        q = _orthonormal(x @ q)
    u, sing, _ = np.linalg.svd(np.asarray((x.T @ q).T), full_matrices=False)
    return (q @ u[:, :n_comps]) * sing[:n_comps]


def _kmeans(points: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means labels, best (least within-cluster sum of squares) of 3 k-means++ starts;
    empty clusters dropped and labels renumbered 0..k-1."""
    import warnings

    from scipy.cluster.vq import kmeans2, vq

    best, best_inertia = None, np.inf
    for _ in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "One of the clusters is empty"
            centres, labels = kmeans2(points, n_clusters, iter=50, minit="++", seed=rng)
        inertia = float((vq(points, centres)[1] ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return np.unique(best, return_inverse=True)[1].astype(np.int64)


FRACTION_MAX = 0.99  # a cell's ambient fraction is kept below this
BLOCK_NNZ = 2_000_000  # entries per block of per-entry work (bounds the temporaries)


def _blocks(matrix: sp.csr_matrix):
    """Per block of rows (`row_blocks`): start, stop, and each entry's row (of the whole
    matrix), column and value as float64."""
    for start, stop in row_blocks(matrix.indptr, BLOCK_NNZ):
        lo, hi = matrix.indptr[start], matrix.indptr[stop]
        rows = np.repeat(np.arange(start, stop), np.diff(matrix.indptr[start : stop + 1]))
        yield start, stop, rows, matrix.indices[lo:hi], matrix.data[lo:hi].astype(np.float64)


def _clusters(counts: sp.csr_matrix, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels on 20 principal components of log1p(counts per 10,000) of the
    1,000 most variable genes."""
    n_cells = counts.shape[0]
    if n_clusters <= 1 or n_cells <= n_clusters:
        return np.zeros(n_cells, dtype=np.int64)
    n_genes = counts.shape[1]
    scale = 1e4 / np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1)

    def log_norm(start: int, stop: int) -> np.ndarray:  # float32 data of rows start:stop
        lo, hi = counts.indptr[start], counts.indptr[stop]
        per_row = np.repeat(scale[start:stop], np.diff(counts.indptr[start : stop + 1]))
        return np.log1p(counts.data[lo:hi] * per_row).astype(np.float32)

    # gene means and variances, then the top genes' rows, a block of cells at a time
    total, total_sq = np.zeros(n_genes), np.zeros(n_genes)
    for start, stop in row_blocks(counts.indptr, BLOCK_NNZ):
        data = log_norm(start, stop)
        genes = counts.indices[counts.indptr[start] : counts.indptr[stop]]
        total += np.bincount(genes, weights=data, minlength=n_genes)
        total_sq += np.bincount(genes, weights=data.astype(np.float64) ** 2, minlength=n_genes)
    mean = total / n_cells
    top = np.argsort(total_sq / n_cells - mean**2)[::-1][: min(1000, n_genes)]
    position = np.full(n_genes, -1, dtype=np.int64)
    position[top] = np.arange(len(top))
    blocks = []
    for start, stop in row_blocks(counts.indptr, BLOCK_NNZ):
        lo, hi = counts.indptr[start], counts.indptr[stop]
        column = position[counts.indices[lo:hi]]
        keep = column >= 0
        row = np.repeat(np.arange(stop - start), np.diff(counts.indptr[start : stop + 1]))
        blocks.append(
            sp.csr_matrix(
                (log_norm(start, stop)[keep], (row[keep], column[keep])),
                shape=(stop - start, len(top)),
            )
        )
    x = sp.vstack(blocks, format="csr")
    n_comps = max(1, min(20, x.shape[1] - 1, n_cells - 1))
    rng = np.random.default_rng(seed)
    pcs = _randomized_pcs(x, n_comps, rng)
    pcs -= pcs.mean(axis=0)
    return _kmeans(pcs, n_clusters, rng)


def _cell_share(
    fraction: np.ndarray, clean_share: np.ndarray, soup_share: np.ndarray
) -> np.ndarray:
    """Per count: the posterior probability that it is the cell's, in the mixture
    (1 - fraction) x clean profile + fraction x soup profile."""
    cell_part = (1 - fraction) * clean_share
    return cell_part / np.maximum(cell_part + fraction * soup_share, 1e-300)


def per_cell_fraction(
    cells: sp.csr_matrix,
    labels: np.ndarray,
    clean: np.ndarray,
    profile: np.ndarray,
    start: np.ndarray,
    umis: np.ndarray,
    *,
    tolerance: float = 1e-5,
    max_cycles: int = 50,
) -> tuple[np.ndarray, int]:
    """Each cell's ambient fraction by maximum likelihood over all its genes.

    A cell's counts are a multinomial draw from (1 - f) x its cluster's clean profile +
    f x the soup profile. With both profiles fixed, EM's update of f is the cell's expected
    ambient UMIs (each count times its posterior soup share) over its UMIs. Every gene
    informs f, not only the genes taken as not expressed: on the simulator this halved the
    per-cell error (docs/ambient.md). EM alone converges slowly (40 passes over the counts
    left 8e-4 to go), so it is accelerated by SQUAREM (Varadhan & Roland 2008, Scand. J.
    Stat. 35:335, scheme S3), with each cell's own step length since the cells'
    likelihoods are separate: about 12 passes reach 1e-7. (Newton's method, tried first,
    overshot: the likelihood is far from quadratic near f = 0.)

    Parameters
    ----------
    cells
        Cells x genes UMI counts.
    labels
        Cluster of each cell (rows of `clean`).
    clean
        Clusters x genes: each cluster's profile without the soup (rows sum to 1).
    profile
        The soup profile (sums to 1).
    start
        Starting fraction per cell.
    umis
        UMIs per cell (the row sums of `cells`).
    tolerance
        Stop when no cell's fraction moved by more than this in a cycle.
    max_cycles
        Stop after this many cycles (3 EM updates each) in any case.

    Returns
    -------
    The fractions (from 0 to `FRACTION_MAX`) and the number of EM updates run.
    """
    n_cells = cells.shape[0]

    def em_update(fraction: np.ndarray) -> np.ndarray:
        ambient = np.zeros(n_cells)
        for _start, _stop, rows, genes, data in _blocks(cells):
            soup = 1 - _cell_share(fraction[rows], clean[labels[rows], genes], profile[genes])
            ambient += np.bincount(rows, weights=data * soup, minlength=n_cells)
        return np.clip(ambient / np.maximum(umis, 1), 0.0, FRACTION_MAX)

    fraction = np.clip(np.asarray(start, dtype=np.float64), 0.0, FRACTION_MAX)
    updates = 0
    for _cycle in range(max_cycles):
        once = em_update(fraction)
        twice = em_update(once)
        step, bend = once - fraction, twice - 2 * once + fraction
        with np.errstate(divide="ignore", invalid="ignore"):
            length = -np.abs(step) / np.abs(bend)
        # -1 is two plain EM updates (`twice`); longer steps only where they are defined
        length = np.where(np.isfinite(length), np.minimum(length, -1.0), -1.0)
        jumped = np.clip(fraction - 2 * length * step + length**2 * bend, 0.0, FRACTION_MAX)
        updated = em_update(jumped)  # SQUAREM's stabilising update
        updates += 3
        moved = float(np.abs(updated - fraction).max()) if n_cells else 0.0
        fraction = updated
        if moved < tolerance:
            break
    return fraction, updates


def remove_ambient(
    sample: str,
    raw: sp.spmatrix,
    is_cell: np.ndarray,
    *,
    soup_max_umis: int = 100,
    n_clusters: int | None = None,
    nonexpressed_fraction: float = 0.05,
    min_empty_droplets: int = 50,
    min_soup_umis: int = 1000,
    seed: int = 0,
) -> AmbientResult:
    """Estimate each cell's ambient RNA fraction and remove it.

    Parameters
    ----------
    sample
        Sample name, for warnings.
    raw
        Every barcode of the sample (barcodes x genes UMI counts).
    is_cell
        Boolean per barcode of `raw`: the called cells, in the order of the result.
    soup_max_umis
        Empty droplets for the soup profile: non-cells with 1 to this many UMIs.
    n_clusters
        k-means clusters of the cells; None: about sqrt(cells / 20), from 2 to 20.
    nonexpressed_fraction
        Per cluster, the genes (weighted by soup share) with the lowest cluster/soup ratio
        that together hold this fraction of the soup are taken as not expressed by it.
    min_empty_droplets, min_soup_umis
        Below these the soup is too thin to trust: warn and leave the counts as they are.
    seed
        Seed of the PCA and k-means.

    Returns
    -------
    AmbientResult
    """
    raw = sp.csr_matrix(raw)
    is_cell = np.asarray(is_cell, dtype=bool)
    cells = raw[is_cell].tocsr()  # kb's dtype; per-entry work below is done in blocks
    n_cells, n_genes = cells.shape
    profile, n_empty, soup_umis = soup_profile(raw, is_cell, soup_max_umis)
    params = {
        "method": "soup",
        "soup_max_umis": int(soup_max_umis),
        "nonexpressed_fraction": float(nonexpressed_fraction),
        "seed": int(seed),
        "n_empty_droplets": n_empty,
        "soup_umis": soup_umis,
    }
    warnings: list[str] = []

    def unchanged(reason: str) -> AmbientResult:
        warnings.append(f"sample '{sample}': ambient RNA not removed: {reason}")
        return AmbientResult(
            np.full(n_cells, np.nan),
            cells.astype(np.float32),
            profile,
            float("nan"),
            params,
            warnings,
        )

    if n_cells == 0:
        return unchanged("no cells")
    if n_empty < min_empty_droplets or soup_umis < min_soup_umis:
        return unchanged(
            f"too few empty droplets for a soup profile ({n_empty:,} droplets with 1-"
            f"{soup_max_umis} UMIs, {soup_umis:,} UMIs; needs {min_empty_droplets:,} and "
            f"{min_soup_umis:,})"
        )
    if n_clusters is None:
        n_clusters = int(np.clip(round(np.sqrt(n_cells / 20)), 2, 20))
    labels = _clusters(cells, n_clusters, seed)
    params["n_clusters"] = int(labels.max() + 1)

    umis = np.zeros(n_cells)
    for _start, _stop, rows, _genes, data in _blocks(cells):
        umis += np.bincount(rows, weights=data, minlength=n_cells)
    n_lab = int(labels.max() + 1)
    # Cross-fitting: the genes a cluster leaves to the soup are chosen on one half of its
    # cells and counted on the other, so their Poisson noise does not bias the estimate low.
    half = np.zeros(n_cells, dtype=np.int64)
    for k in range(n_lab):
        mine = np.flatnonzero(labels == k)
        half[mine[1::2]] = 1
    group = labels * 2 + half
    group_counts = np.zeros(2 * n_lab * n_genes)  # (cluster, half) x genes
    for _start, _stop, rows, genes, data in _blocks(cells):
        group_counts += np.bincount(
            group[rows] * n_genes + genes, weights=data, minlength=len(group_counts)
        )
    group_counts = group_counts.reshape(2 * n_lab, n_genes)
    group_umis = group_counts.sum(axis=1)
    nonexpressed = np.zeros((2 * n_lab, n_genes), dtype=bool)  # set used by each group
    group_fraction = np.full(2 * n_lab, np.nan)
    for g in range(2 * n_lab):
        other = g ^ 1
        expected = group_umis[other] * profile
        ok = expected >= 20
        if not ok.any() or group_umis[g] == 0:
            continue
        ratio = np.where(ok, group_counts[other] / np.where(ok, expected, 1), np.inf)
        order = np.argsort(ratio)
        n_take = int(np.searchsorted(np.cumsum(profile[order]), nonexpressed_fraction)) + 1
        take = order[: min(n_take, int(ok.sum()))]
        nonexpressed[g, take] = True
        group_fraction[g] = group_counts[g, take].sum() / (group_umis[g] * profile[take].sum())
    if np.isnan(group_fraction).all():
        return unchanged("no genes that a cluster of cells leaves to the soup (no markers)")
    group_fraction = np.where(
        np.isnan(group_fraction), np.nanmedian(group_fraction), group_fraction
    )
    cluster_counts = group_counts[0::2] + group_counts[1::2]
    cluster_umis = cluster_counts.sum(axis=1)
    cluster_fraction = (
        group_fraction[0::2] * group_umis[0::2] + group_fraction[1::2] * group_umis[1::2]
    ) / np.maximum(cluster_umis, 1)

    # Per cell: ambient-only counts X ~ Poisson(f * umis * soup share of those genes), f ~
    # Gamma(a, a / cluster fraction); a by the method of moments over the cluster's cells.
    observed = np.zeros(n_cells)
    for _start, _stop, rows, genes, data in _blocks(cells):
        in_set = nonexpressed[group[rows], genes]
        observed += np.bincount(rows[in_set], weights=data[in_set], minlength=n_cells)
    soup_share = (nonexpressed * profile).sum(axis=1)[group]
    exposure = umis * soup_share
    prior_mean = group_fraction[group]
    raw_estimate = observed / np.maximum(exposure, 1e-12)
    shape = np.empty(2 * n_lab)
    for k in range(2 * n_lab):
        mine = group == k
        if not mine.any():
            continue
        m = prior_mean[mine][0]
        noise = np.mean(m / np.maximum(exposure[mine], 1e-12))
        spread = np.var(raw_estimate[mine]) - noise
        shape[k] = m**2 / spread if spread > 0 else 1e6
    a = shape[group]
    fraction = (a + observed) / (a / np.maximum(prior_mean, 1e-6) + exposure)
    fraction = np.clip(fraction, 0.0, FRACTION_MAX)

    # Cluster profiles without the soup; then each cell's fraction by maximum likelihood
    # over all its genes, starting from the estimate above; then each count's posterior
    # cell share.
    clean = np.maximum(
        cluster_counts - cluster_fraction[:, None] * cluster_umis[:, None] * profile, 0
    )
    clean += 1e-9
    clean /= clean.sum(axis=1, keepdims=True)
    fraction, params["fraction_em_updates"] = per_cell_fraction(
        cells, labels, clean, profile, fraction, umis
    )
    kept = np.empty(cells.nnz, dtype=np.float32)
    for start, stop, rows, genes, data in _blocks(cells):
        keep = _cell_share(fraction[rows], clean[labels[rows], genes], profile[genes])
        kept[cells.indptr[start] : cells.indptr[stop]] = data * keep
    decontaminated = sp.csr_matrix(
        (kept, cells.indices, cells.indptr),
        shape=cells.shape,  # cells is our own copy
    )
    sample_fraction = float((fraction * umis).sum() / max(umis.sum(), 1))
    return AmbientResult(fraction, decontaminated, profile, sample_fraction, params, warnings)
