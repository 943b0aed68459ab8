"""Ambient RNA in cell-containing droplets, with truth.

Every droplet holds some ambient RNA: free transcripts from lysed cells that get a real
cell's barcode. `contaminate` adds such molecules to the cell-containing droplets of a
`SimulatedDroplets`, each droplet at its own contamination fraction (ambient UMIs / all
UMIs of the droplet), and keeps the ambient-free counts as truth.

The fractions are drawn per droplet from a Beta distribution with mean
`HardCells.ambient_fraction` and concentration `HardCells.ambient_concentration`, capped
at `HardCells.ambient_fraction_max` (0.3). Published estimates that set these ranges:

- SoupX (Young & Behjati 2020, GigaScience 9:giaa151): 2-50% of a droplet's UMIs in the
  data sets they examined, most between a few % and 20%; PBMC around 5-10%.
- DecontX (Yang et al. 2020, Genome Biology 21:57): median per-cell contamination of
  a few % to ~10% in 10x PBMC, varying from cell to cell.
- CellBender (Fleming et al. 2023, Nature Methods 20:1323): background fractions of
  a few % up to tens of % in public 10x data sets.
- Janssen et al. 2023 (Genome Biology 24:140), with genotype-based truth in mouse
  kidney: background noise 3-35% of a cell's UMIs, varying between cells and replicates.

Concentration 30 gives a per-cell standard deviation of about 0.05 at mean 0.1 (Janssen's
between-cell spread), so cells of one sample range from about 2% to 20%.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp


def contamination_fractions(
    rng: np.random.Generator, n: int, mean: float, concentration: float, maximum: float
) -> np.ndarray:
    """Per-droplet contamination fractions: Beta(mean x c, (1 - mean) x c), capped.

    Parameters
    ----------
    rng
        The generator of the draws.
    n
        Number of droplets.
    mean
        Mean fraction of a droplet's UMIs that are ambient (0 gives zeros).
    concentration
        Beta concentration c; larger is less spread between droplets.
    maximum
        Cap on a droplet's fraction.
    """
    if mean <= 0:
        return np.zeros(n)
    return np.minimum(rng.beta(mean * concentration, (1 - mean) * concentration, n), maximum)


def contaminate(rng: np.random.Generator, droplets, fractions: np.ndarray):
    """`droplets` with ambient molecules added to its cell-containing rows.

    Row i gets round(n_i x f_i / (1 - f_i)) molecules drawn from `droplets.ambient`, where
    n_i is its UMIs and f_i `fractions[i]`, so ambient molecules are f_i of its new total.
    Empty droplets are left as they are (they are ambient RNA already).

    Parameters
    ----------
    rng
        The generator of the draws.
    droplets
        A `kbagg.simulate.cells.SimulatedDroplets`.
    fractions
        Contamination fraction per droplet (row order); ignored for empty droplets.

    Returns
    -------
    A new `SimulatedDroplets` whose `counts` hold the observed (contaminated) counts,
    `ambient_free` the counts before contamination, and obs the columns
    `ambient_fraction` (the target fraction) and `ambient_umis` (molecules added).
    """
    counts = droplets.counts
    umis = np.asarray(counts.sum(axis=1)).ravel()
    fractions = np.where(droplets.obs["is_cell"].to_numpy(), fractions, 0.0)
    added = np.rint(umis * fractions / (1.0 - fractions)).astype(np.int64)
    cumulative = np.cumsum(droplets.ambient)
    genes = np.searchsorted(cumulative / cumulative[-1], rng.random(int(added.sum())), "right")
    genes = np.minimum(genes, counts.shape[1] - 1)
    rows = np.repeat(np.arange(counts.shape[0]), added)
    ambient = sp.coo_matrix(
        (np.ones(len(rows), dtype=np.int64), (rows, genes)), shape=counts.shape
    ).tocsr()
    ambient.sum_duplicates()
    obs = droplets.obs.copy()
    total = umis + added
    obs["ambient_fraction"] = np.divide(added, total, out=np.zeros(len(total)), where=total > 0)
    obs["ambient_umis"] = added
    observed = (counts + ambient).tocsr()
    return dataclasses.replace(droplets, counts=observed, obs=obs, ambient_free=counts)
