"""The X arrays' layouts (tiledbsoma's ``platform_config``) and the store layouts made of them.

A store keeps each X layer in one of two ways (``aggregate.soma.layout``, the journal's
``layout``):

* ``two_arrays`` (the default): ``X[L]`` in the cell-major `ROW_LAYOUT` for cell queries and
  its copy ``X[L + BY_GENE_SUFFIX]`` (``counts_by_gene``) in the gene-major `COL_LAYOUT` for
  gene queries, the same values, as CELLxGENE's portal keeps them. Every write writes both.
* ``gene_query`` (the default until 2026-12-06): one array per layer, ``X[L]``, in
  `GENE_QUERY_LAYOUT`: half the X on disk, slow for cells (docs/soma_benchmarks.md).

`query_layer` names the array to query for genes or for cells in either layout.
"""

from __future__ import annotations

from pathlib import Path

import tiledbsoma as soma

from kbagg.soma.context import read_context
from kbagg.soma.lock import StoreError

__all__ = [
    "BY_GENE_SUFFIX",
    "COL_LAYOUT",
    "GENE_QUERY_LAYOUT",
    "LAYOUTS",
    "ROW_LAYOUT",
    "by_gene",
    "layer_arrays",
    "query_layer",
]

GENE_QUERY = "gene_query"
TWO_ARRAYS = "two_arrays"
LAYOUTS = (GENE_QUERY, TWO_ARRAYS)
# The gene-major copy of X layer L is X[L + BY_GENE_SUFFIX] (layout two_arrays).
BY_GENE_SUFFIX = "_by_gene"

# Within tiles of 2,048 cells x 64 genes, cells are stored gene by gene, 2,000 to a data tile,
# so a query for a few genes reads a few data tiles per 2,048 cells instead of a 2,048-gene-wide
# block (tiledbsoma's default). tests/benchmarks/bench_access.py, 200,000 cells x 30,000 genes:
# one gene 1.5 s instead of 5.5 s, 100 genes 5.9 s instead of 36 s; 1,000 scattered cells and
# the build are slower (at 50,000 cells: 5.3 s instead of 2.5 s, and a 1.2-1.5x longer build).
GENE_QUERY_LAYOUT = {
    "tiledb": {
        "create": {
            "cell_order": "col-major",
            "capacity": 2000,
            "dims": {"soma_dim_1": {"tile": 64}},
        }
    }
}
# Cell-major: a space tile holds 256 cells with all (up to 32,768) genes, stored row by row,
# 4,096 entries (about 5 cells at 800 genes per cell) per data tile, so a cell is read from
# one or two tiles.
ROW_LAYOUT = {
    "tiledb": {
        "create": {
            "cell_order": "row-major",
            "tile_order": "row-major",
            "capacity": 4096,
            "dims": {"soma_dim_0": {"tile": 256}, "soma_dim_1": {"tile": 32768}},
        }
    }
}
# Gene-major: a space tile holds 8 genes over 2^20 cells, stored gene by gene.
COL_LAYOUT = {
    "tiledb": {
        "create": {
            "cell_order": "col-major",
            "tile_order": "col-major",
            "capacity": 4096,
            "dims": {"soma_dim_0": {"tile": 1 << 20}, "soma_dim_1": {"tile": 8}},
        }
    }
}


def check_layout(layout: str) -> str:
    """``layout`` if it is one of `LAYOUTS`; ValueError otherwise."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown store layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    return layout


def main_platform_config(layout: str) -> dict:
    """The platform_config of the store's dataframes and of ``X[L]`` in ``layout``."""
    return ROW_LAYOUT if check_layout(layout) == TWO_ARRAYS else GENE_QUERY_LAYOUT


def by_gene(layer: str) -> str:
    """The name of the gene-major copy of X layer ``layer`` (layout ``two_arrays``)."""
    return f"{layer}{BY_GENE_SUFFIX}"


def layer_arrays(layer: str, layout: str) -> list[str]:
    """The X arrays that hold layer ``layer`` in a store of ``layout``: ``[layer]``, or
    ``[layer, by_gene(layer)]`` for ``two_arrays``."""
    return [layer, by_gene(layer)] if check_layout(layout) == TWO_ARRAYS else [layer]


def copies(names) -> set[str]:
    """Which of the X array ``names`` are gene-major copies of another of them."""
    names = set(names)
    return {by_gene(name) for name in names} & names


def query_layer(
    exp_or_uri: soma.Experiment | str | Path,
    layer: str = "counts",
    by: str = "gene",
    *,
    measurement: str = "RNA",
) -> str:
    """The X array to query for ``layer``: its gene-major copy for gene queries when the
    store keeps one (layout ``two_arrays``), else the layer itself.

    Parameters
    ----------
    exp_or_uri
        The store: an open `tiledbsoma.Experiment` or its URI (opened with
        `kbagg.soma.read_context`).
    layer
        The X layer, as `kbagg.soma.store.read_store` names it (``counts``, ``mature``...).
    by
        ``"gene"`` for queries that select genes (a few var rows, all cells): the gene-major
        copy ``<layer>_by_gene`` if present. ``"cell"`` for queries that select cells: the
        layer itself (cell-major in ``two_arrays``).
    measurement
        The measurement holding X.

    Returns
    -------
    str
        A key of ``exp.ms[measurement].X``, to pass as ``X_name`` to
        ``ExperimentAxisQuery.X`` or ``to_anndata``.

    Examples
    --------
    >>> import tiledbsoma as soma
    >>> from kbagg.soma import query_layer, read_context
    >>> with soma.Experiment.open("filtered.soma", context=read_context()) as exp:
    ...     with exp.axis_query("RNA", var_query=soma.AxisQuery(coords=([12, 345],))) as q:
    ...         genes = q.to_anndata(X_name=query_layer(exp, "counts", by="gene"))
    """
    if by not in ("gene", "cell"):
        raise ValueError(f"by must be 'gene' or 'cell', not {by!r}")
    if isinstance(exp_or_uri, soma.Experiment):
        names = set(exp_or_uri.ms[measurement].X.keys())
    else:
        with soma.Experiment.open(str(exp_or_uri), context=read_context()) as exp:
            names = set(exp.ms[measurement].X.keys())
    if layer not in names:
        raise StoreError(f"no X layer {layer!r} (layers: {', '.join(sorted(names))})")
    if by == "gene" and by_gene(layer) in names:
        return by_gene(layer)
    return layer
