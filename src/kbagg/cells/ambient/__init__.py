"""Ambient RNA removal (config `ambient.method`).

`soup` (kbagg's own, SoupX-style profile, DecontX-style per-cell removal):

1. the ambient ("soup") profile of a sample is the gene composition of its empty
   droplets: raw barcodes that are not called cells, with 1 to `soup_max_umis` UMIs
   (SoupX's `soupRange`, Young & Behjati 2020);
2. cells are clustered (PCA of log-normalised counts, k-means);
3. for each cluster, the genes its cells do not express are those whose share of the
   cluster's UMIs is lowest relative to their share of the soup; their counts in a cell
   are ambient only, so the cell's contamination fraction is their counts over what the
   soup would put there (SoupX's estimator, per cell), shrunk towards its cluster's by an
   empirical-Bayes Gamma-Poisson prior;
4. from there, each cell's fraction f is refined by maximum likelihood over all its genes
   in the two-component mixture (1 - f) x cluster profile + f x soup (DecontX's model,
   Yang et al. 2020), by SQUAREM-accelerated EM (`per_cell_fraction`);
5. each count is split between the cell and the soup by the posterior of that mixture, so
   the `decontaminated` layer holds expected ambient-free counts (not integers).

`remove_ambient` returns the per-cell fractions, the layer and the profile; see
`kbagg.cells.ambient.soup`.
"""

from kbagg.cells.ambient.apply import add_ambient, sample_fraction
from kbagg.cells.ambient.soup import METHODS, AmbientResult, remove_ambient, soup_profile

__all__ = [
    "add_ambient",
    "sample_fraction",
    "METHODS",
    "AmbientResult",
    "remove_ambient",
    "soup_profile",
]
