"""The aggregate `.h5mu` (`mudata`) and the provenance record every aggregate output carries
(`provenance`). The h5ad aggregate itself is written by `kbagg.concat`, the SOMA store by
`kbagg.soma`."""
