"""The aggregates the rules write: the h5ad (`h5ad`: `kbagg.concat`'s on-disk join with the
sheet's metadata and the provenance), the `.h5mu` (`mudata`) and the provenance record every
aggregate output carries (`provenance`). The SOMA store is written by `kbagg.soma`."""
