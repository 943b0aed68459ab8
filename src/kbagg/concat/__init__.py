"""The chunked on-disk concat engine: many h5ad/zarr inputs -> one h5ad or zarr, in bounded
memory (`concat_on_disk`), its gene-major (CSC) copy (`gene_major`) and its command
(`kbagg-concat`, `cli`). It writes matrices only; provenance comes from its caller."""

from kbagg.concat.engine import concat_on_disk

__all__ = ["concat_on_disk"]
