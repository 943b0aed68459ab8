"""Hard cases for cell calling, with truth: small cells, realistic empty droplets, doublets.

`simulate_droplets` returns a barcode x gene UMI matrix and per-barcode truth:

- `cell`: a cell of one of `n_cell_types` types at normal depth (log-normal UMIs);
- `small_cell`: a real cell of its own type (think neutrophils) at `small_cell_depth` of
  normal depth, usually below the knee of the barcode-rank curve;
- `empty`: ambient RNA only, a multinomial draw from the mixture of all cells' profiles
  weighted by their UMIs; depth log-normal around `empty_umis_median`, capped at
  `empty_umis_max` (most 1-10 UMIs, a tail up to ~50 by default). Optionally a fraction
  of ambient-rich empty droplets at a second, higher depth (`rich_empty_fraction`), and
  overdispersion: each empty droplet's own profile drawn from Dirichlet(`empty_alpha` x
  ambient) (a Dirichlet-multinomial, the null model of EmptyDrops);
- `doublet`: two cells' molecules under one barcode (the sum of two fresh cells' counts);
  `doublet_of` names both source cells' types, e.g. `type2+small`. With
  `doublet_umis="singlet"` the sum is downsampled to a singlet's depth (depth-matched
  doublets, see `HardCells.doublet_umis`).

Cell types share a skewed base profile and each has its own programme of genes the others
barely express (see `cell_type_profiles`). The FASTQ simulator
(`kbagg.simulate.demo`) uses this for samples whose `SampleSpec.hard` is set; tests use it
directly at matrix level. Everything comes from the generator passed in, so a seed fixes
the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.simulate.spec import HardCells

KINDS = ("cell", "small_cell", "doublet", "empty")
SMALL_TYPE = "small"


@dataclass(frozen=True)
class SimulatedDroplets:
    """`counts`: droplets x genes UMIs (CSR, int64); `obs`: truth per droplet, same order,
    with `kind` (one of KINDS), `is_cell` (not empty), `cell_type` (singlets) and
    `doublet_of` (doublets); `profiles`: the expression profile of each type, by name."""

    counts: sp.csr_matrix
    obs: pd.DataFrame
    profiles: dict[str, np.ndarray]
    ambient: np.ndarray
    # Counts before ambient RNA was added to cells (kbagg.simulate.ambient); None: none added.
    ambient_free: sp.csr_matrix | None = None


def cell_type_profiles(
    rng: np.random.Generator, n_genes: int, names: list[str], hard: HardCells
) -> dict[str, np.ndarray]:
    """One expression profile (proportions over genes) per cell type name.

    All types share a skewed base profile; each type also has its own programme, a
    disjoint set of `program_fraction` of the genes (log-normal around the base level)
    that the other types express at only `program_off` of the base level.
    """
    base = rng.gamma(0.5, 1.0, n_genes) + 1e-3
    size = max(1, int(hard.program_fraction * n_genes))
    if size * len(names) > n_genes:
        raise ValueError(f"{len(names)} programmes of {size} genes need more than {n_genes}")
    genes = rng.permutation(n_genes)
    programmes = [genes[i * size : (i + 1) * size] for i in range(len(names))]
    in_any = np.concatenate(programmes)
    profiles = {}
    for name, own in zip(names, programmes, strict=True):
        fold = np.ones(n_genes)
        fold[in_any] = hard.program_off
        fold[own] = np.exp(rng.normal(0.0, 0.5, size))
        profile = base * fold
        profiles[name] = profile / profile.sum()
    return profiles


def _log_normal_umis(rng: np.random.Generator, median: float, sigma: float, n: int):
    return np.maximum(1, np.rint(median * np.exp(rng.normal(0.0, sigma, n)))).astype(np.int64)


def _dirichlet_multinomial(
    rng: np.random.Generator, profile: np.ndarray, alpha: float, umis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(draw, gene) of every molecule of len(umis) Dirichlet-multinomial draws of
    Dirichlet(alpha * profile), by the Polya urn: molecule k of a draw is new (a gene from
    `profile`) with probability alpha / (alpha + k), else a copy of one of the k earlier
    molecules of the same draw, picked uniformly. Work in molecules, not genes."""
    n = int(umis.sum())
    draw = np.repeat(np.arange(len(umis)), umis)
    first = np.repeat(np.cumsum(umis) - umis, umis)
    k = np.arange(n) - first  # position within the draw
    is_new = rng.random(n) * (alpha + k) < alpha  # always for k == 0
    source = np.where(is_new, np.arange(n), first + (rng.random(n) * k).astype(np.int64))
    while True:  # follow copies back to the new molecule each one copies
        jumped = source[source]
        if np.array_equal(jumped, source):
            break
        source = jumped
    cumulative = np.cumsum(profile)
    gene = np.zeros(n, dtype=np.int64)
    picks = np.searchsorted(cumulative / cumulative[-1], rng.random(int(is_new.sum())), "right")
    gene[is_new] = np.minimum(picks, len(profile) - 1)
    return draw, gene[source]


def _downsample_rows(
    rng: np.random.Generator, counts: sp.csr_matrix, target: np.ndarray
) -> sp.csr_matrix:
    """Each row's molecules sampled without replacement down to `target[row]` UMIs (rows
    with fewer molecules are kept whole)."""
    row = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    molecule_row = np.repeat(row, counts.data)
    molecule_gene = np.repeat(counts.indices, counts.data)
    # Molecules in random order within each row; keep the first target[row] of each row.
    order = np.lexsort((rng.random(len(molecule_row)), molecule_row))
    totals = np.asarray(counts.sum(axis=1)).ravel().astype(np.int64)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(totals) - totals, totals)
    keep = order[rank < target[molecule_row[order]]]
    kept = sp.coo_matrix(
        (np.ones(len(keep), dtype=np.int64), (molecule_row[keep], molecule_gene[keep])),
        shape=counts.shape,
    ).tocsr()
    kept.sum_duplicates()
    return kept


def simulate_droplets(
    rng: np.random.Generator, n_genes: int, n_cells: int, n_empty: int, hard: HardCells
) -> SimulatedDroplets:
    """Counts and truth for `n_cells` normal cells, `hard.n_small_cells` small cells,
    doublets (`hard.doublet_fraction` of non-empty droplets) and `n_empty` empty droplets,
    in random order.

    Parameters
    ----------
    rng
        The generator every draw comes from.
    n_genes
        Number of genes (matrix columns).
    n_cells
        Normal-depth singlet cells.
    n_empty
        Empty droplets (ambient RNA only).
    hard
        Depths, doublet fraction and cell-type structure.
    """
    type_names = [f"type{i + 1}" for i in range(hard.n_cell_types)]
    profiles = cell_type_profiles(rng, n_genes, [*type_names, SMALL_TYPE], hard)
    n_small = hard.n_small_cells
    n_singlets = n_cells + n_small
    n_doublets = round(hard.doublet_fraction * n_singlets / (1.0 - hard.doublet_fraction))
    small_median = hard.cell_umis_median * hard.small_cell_depth

    # Each "source" puts molecules of one profile (by code) into one droplet (row).
    names = [*type_names, SMALL_TYPE]
    small_code, ambient_code = len(type_names), len(type_names) + 1
    cell_codes = rng.integers(hard.n_cell_types, size=n_cells)
    # Doublet parents are drawn like the singlets: a normal cell or, in proportion, a small one.
    parent_is_small = rng.random((n_doublets, 2)) < n_small / max(n_singlets, 1)
    parent_codes = np.where(
        parent_is_small, small_code, rng.integers(hard.n_cell_types, size=(n_doublets, 2))
    )
    normal_umis = _log_normal_umis(rng, hard.cell_umis_median, hard.cell_umis_sigma, 2 * n_doublets)
    small_umis = _log_normal_umis(rng, small_median, hard.cell_umis_sigma, 2 * n_doublets)
    parent_umis = np.where(parent_is_small.ravel(), small_umis, normal_umis)
    source_row = np.concatenate(
        [np.arange(n_singlets), np.repeat(n_singlets + np.arange(n_doublets), 2)]
    )
    source_code = np.concatenate([cell_codes, np.full(n_small, small_code), parent_codes.ravel()])
    source_umis = np.concatenate(
        [
            _log_normal_umis(rng, hard.cell_umis_median, hard.cell_umis_sigma, n_cells),
            _log_normal_umis(rng, small_median, hard.cell_umis_sigma, n_small),
            parent_umis,
        ]
    )
    # Ambient RNA: every cell's molecules mixed, so types weigh by their UMIs.
    umis_by_code = np.bincount(source_code, weights=source_umis, minlength=len(names))
    ambient = sum(umis_by_code[c] * profiles[name] for c, name in enumerate(names))
    ambient /= ambient.sum()
    n_rows = n_singlets + n_doublets + n_empty
    empty_umis = _log_normal_umis(rng, hard.empty_umis_median, hard.empty_umis_sigma, n_empty)
    if hard.rich_empty_fraction > 0:
        rich = rng.random(n_empty) < hard.rich_empty_fraction
        empty_umis[rich] = _log_normal_umis(
            rng, hard.rich_empty_umis_median, hard.rich_empty_umis_sigma, int(rich.sum())
        )
    source_row = np.concatenate([source_row, n_singlets + n_doublets + np.arange(n_empty)])
    source_code = np.concatenate([source_code, np.full(n_empty, ambient_code)])
    source_umis = np.concatenate([source_umis, np.minimum(empty_umis, hard.empty_umis_max)])

    rows, genes = [], []
    for code, profile in enumerate([*(profiles[name] for name in names), ambient]):
        mine = source_code == code
        umis = source_umis[mine]
        if code == ambient_code and hard.empty_alpha is not None:
            row, gene = _dirichlet_multinomial(rng, profile, hard.empty_alpha, umis)
            rows.append(source_row[mine][row])
            genes.append(gene)
            continue
        cumulative = np.cumsum(profile)
        picks = np.searchsorted(cumulative / cumulative[-1], rng.random(int(umis.sum())), "right")
        genes.append(np.minimum(picks, n_genes - 1))
        rows.append(np.repeat(source_row[mine], umis))
    rows_all, genes_all = np.concatenate(rows), np.concatenate(genes)
    del rows, genes
    counts = sp.coo_matrix(
        (np.ones(len(rows_all), dtype=np.int64), (rows_all, genes_all)), shape=(n_rows, n_genes)
    ).tocsr()
    counts.sum_duplicates()

    kind_code = np.repeat(np.arange(4), [n_cells, n_small, n_doublets, n_empty])
    type_code = np.concatenate([source_code[:n_singlets], np.full(n_doublets + n_empty, -1)])
    doublet_of = np.array(
        [""] * n_singlets + [f"{names[a]}+{names[b]}" for a, b in parent_codes] + [""] * n_empty,
        dtype=object,
    )
    order = rng.permutation(n_rows)
    if hard.doublet_umis == "singlet":  # drawn after everything else: the rest is unchanged
        depth = np.where(
            parent_is_small[:, 0],
            _log_normal_umis(rng, small_median, hard.cell_umis_sigma, n_doublets),
            _log_normal_umis(rng, hard.cell_umis_median, hard.cell_umis_sigma, n_doublets),
        )
        target = np.full(n_rows, np.iinfo(np.int64).max)
        target[n_singlets : n_singlets + n_doublets] = depth
        counts = _downsample_rows(rng, counts, target)
    elif hard.doublet_umis != "sum":
        raise ValueError(f"doublet_umis must be 'sum' or 'singlet', not {hard.doublet_umis!r}")
    obs = pd.DataFrame(
        {
            "kind": pd.Categorical.from_codes(kind_code[order], categories=KINDS),
            "is_cell": kind_code[order] != KINDS.index("empty"),
            "cell_type": np.array(["", *names], dtype=object)[type_code[order] + 1],
            "doublet_of": doublet_of[order],
        },
        index=pd.RangeIndex(n_rows).astype(str),
    )
    droplets = SimulatedDroplets(counts[order], obs, profiles, ambient)
    if hard.ambient_fraction > 0:  # ambient RNA in the cells too, with truth
        from kbagg.simulate.ambient import contaminate, contamination_fractions

        fractions = contamination_fractions(
            rng,
            n_rows,
            hard.ambient_fraction,
            hard.ambient_concentration,
            hard.ambient_fraction_max,
        )
        droplets = contaminate(rng, droplets, fractions)
    return droplets
