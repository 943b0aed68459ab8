"""A sample's matrix written into an X array in the array's own global order.

An unordered write makes TileDB sort every cell into the array's global order before it
stores them. For kbagg's gene-friendly layout that sort took 5.0 s of a 6.3 s write of
3.2 M non-zeros (TileDB's own timers, 2026-12-05); numpy orders the same coordinates in
about 0.5 s, and a write declared to be in global order skips TileDB's sort. TileDB still
checks the order of such a write and refuses one that is not, so a wrong order is an error,
never a wrong store. Arrays whose order this module does not know (a Hilbert cell order)
are written unordered, as tiledbsoma does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import tiledbsoma as soma

__all__ = ["ArrayOrder", "array_order", "global_order", "write_matrix"]

_INT64_MAX = np.iinfo(np.int64).max
_GLOBAL_ORDER_WRITE = {"tiledb": {"write": {"sort_coords": False}}}


@dataclass(frozen=True)
class ArrayOrder:
    """The global order of a 2-D sparse array: tiles of ``tile_extents`` (rows, columns)
    taken in ``tile_order``, and cells within a tile in ``cell_order`` ("row-major" or
    "column-major"). Tiles start at coordinate 0, as every SOMA dimension's domain does."""

    tile_extents: tuple[int, int]
    tile_order: str
    cell_order: str


def array_order(array: soma.SparseNDArray) -> ArrayOrder | None:
    """The global order of an open 2-D array, from its schema; None if it is neither
    row-major nor column-major (TileDB's Hilbert order)."""
    options = array.schema_config_options()
    orders = (options.tile_order, options.cell_order)
    if any(order not in ("row-major", "column-major") for order in orders):
        return None
    dims = json.loads(options.dims)
    extents = tuple(int(dims[f"soma_dim_{i}"]["tile"]) for i in (0, 1))
    return ArrayOrder(extents, *orders)


def global_order(rows: np.ndarray, cols: np.ndarray, order: ArrayOrder) -> np.ndarray:
    """The permutation that puts coordinates ``(rows, cols)`` in ``order``.

    Coordinates already in row order, as a CSR matrix gives them, are ordered by a counting
    sort over the tiles (and, for a column-major cell order, the columns within a tile), in
    time linear in their number; others by a comparison sort of the whole key.

    Parameters
    ----------
    rows, cols
        Non-negative coordinates of the cells, one entry per cell, no two the same.
    order
        The array's global order (`array_order`).

    Returns
    -------
    np.ndarray
        Indices into ``rows`` and ``cols``, in global order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0, dtype=np.intp)
    by_column = order.cell_order == "column-major"
    # A stable sort by (tile, column) keeps each column's cells in row order: enough when the
    # coordinates come row by row. For row-major cells a stable sort by tile keeps the row
    # by row order, which is the cells' order within a tile if each row's columns ascend.
    in_rows = bool((rows[1:] >= rows[:-1]).all())
    if not in_rows or not (by_column or ((rows[1:] > rows[:-1]) | (cols[1:] > cols[:-1])).all()):
        return _order_by_four_keys(rows, cols, order)
    t_rows, t_cols = order.tile_extents
    tile_row = rows // t_rows
    tile_col, in_col = np.divmod(cols, t_cols)
    major, minor = (tile_row, tile_col) if order.tile_order == "row-major" else (tile_col, tile_row)
    n_minor = int(minor.max()) + 1
    if (int(major.max()) + 1) * n_minor * t_rows * t_cols >= _INT64_MAX // 2:
        return _order_by_four_keys(rows, cols, order)
    tile = major * n_minor + minor
    return _stable_counting_sort(tile * t_cols + in_col if by_column else tile)


def _stable_counting_sort(keys: np.ndarray) -> np.ndarray:
    """The stable permutation that sorts non-negative integer ``keys``."""
    if (keys[1:] >= keys[:-1]).all():
        return np.arange(keys.size)
    keys = keys - keys.min()  # a sample's rows span a few tiles of a large array
    n_keys = int(keys.max()) + 1
    if n_keys > 4 * keys.size + (1 << 20):  # the buckets would dwarf the keys
        return np.argsort(keys, kind="stable")
    # scipy's CSR to CSC conversion is a counting sort that keeps the order within a column:
    # one row whose column indices are the keys and whose values are the positions.
    one_row = sp.csr_matrix(
        (np.arange(keys.size), keys, np.array([0, keys.size])), shape=(1, n_keys)
    )
    return one_row.tocsc().data


def _order_by_four_keys(rows: np.ndarray, cols: np.ndarray, order: ArrayOrder) -> np.ndarray:
    """`global_order` by a comparison sort, for coordinates in any order."""
    t_rows, t_cols = order.tile_extents
    tile_row, tile_col = rows // t_rows, cols // t_cols
    in_row, in_col = rows % t_rows, cols % t_cols
    row_major_tiles = order.tile_order == "row-major"
    tile_keys = (tile_row, tile_col) if row_major_tiles else (tile_col, tile_row)
    if order.cell_order == "row-major":
        cell_keys, cell_span = (in_row, in_col), t_cols
    else:
        cell_keys, cell_span = (in_col, in_row), t_rows
    n_minor_tiles = int(tile_keys[1].max()) + 1
    n_major_tiles = int(tile_keys[0].max()) + 1
    if n_major_tiles * n_minor_tiles * t_rows * t_cols >= _INT64_MAX // 2:
        # one int64 key would overflow: sort by the four keys (minor last for lexsort)
        return np.lexsort((cell_keys[1], cell_keys[0], tile_keys[1], tile_keys[0]))
    key = (tile_keys[0] * n_minor_tiles + tile_keys[1]) * (t_rows * t_cols)
    key += cell_keys[0] * cell_span + cell_keys[1]
    # Stable (a merge of sorted runs) is 2x faster here than the default quicksort, and the
    # same permutation, keys being unique.
    return np.argsort(key, kind="stable")


def write_matrix(array: soma.SparseNDArray, matrix, first_row: int, col_joinids: np.ndarray) -> int:
    """Write ``matrix`` (cells x genes) into ``array`` at rows ``first_row`` onwards and the
    columns ``col_joinids`` of its genes, in the array's global order when known.

    Parameters
    ----------
    array
        A 2-D SOMA sparse array open for writing.
    matrix
        A scipy sparse matrix or a dense array; its explicit entries are written.
    first_row
        The soma_joinid of its first cell.
    col_joinids
        The soma_joinid of each of its genes.

    Returns
    -------
    int
        The non-zeros (stored entries) written.
    """
    coo = sp.coo_matrix(matrix)
    rows = coo.row.astype(np.int64) + first_row
    cols = np.asarray(col_joinids, dtype=np.int64)[coo.col]
    data = coo.data
    order = array_order(array)
    if order is not None:
        perm = global_order(rows, cols, order)
        rows, cols, data = rows[perm], cols[perm], data[perm]
    table = pa.table(
        {"soma_dim_0": pa.array(rows), "soma_dim_1": pa.array(cols), "soma_data": pa.array(data)}
    )
    if coo.nnz:
        array.write(table, platform_config=_GLOBAL_ORDER_WRITE if order is not None else None)
    return int(coo.nnz)
