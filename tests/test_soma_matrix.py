"""kbagg.soma.matrix: a sample's matrix written in the X array's own global order (TileDB then
skips its sort); the order matches TileDB's definition, TileDB refuses a write in any other
order, and the values read back are the matrix's."""

# ruff: noqa: E402  (the module is skipped, before importing it, where tiledbsoma is absent)

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

soma = pytest.importorskip("tiledbsoma", reason="the SOMA store needs tiledbsoma (extra 'soma')")

from kbagg.soma import read_context
from kbagg.soma.layouts import COL_LAYOUT, GENE_QUERY_LAYOUT, ROW_LAYOUT
from kbagg.soma.matrix import ArrayOrder, array_order, global_order, write_matrix

ORDERS = ("row-major", "column-major")


def by_definition(rows, cols, order: ArrayOrder) -> list[tuple[int, int]]:
    """TileDB's global order spelt out: tiles in tile order, cells within a tile in cell order."""
    t_rows, t_cols = order.tile_extents

    def key(cell):
        r, c = cell
        tile = (r // t_rows, c // t_cols)
        within = (r, c)
        if order.tile_order == "column-major":
            tile = tile[::-1]
        if order.cell_order == "column-major":
            within = within[::-1]
        return (*tile, *within)

    return sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=key)


def arranged(arrangement: str) -> tuple[np.ndarray, np.ndarray]:
    """2,000 distinct coordinates: in random order; row by row with each row's columns
    ascending (a CSR matrix's order); row by row with columns shuffled; or row by row with the
    rows spread a million apart (a sample's rows in a large array: many tiles between them)."""
    rng = np.random.default_rng(7)
    flat = rng.choice(5000 * 300, 2000, replace=False)
    if arrangement != "random":
        flat.sort()
    rows, cols = flat // 300 + 11, flat % 300
    if arrangement == "columns shuffled":
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True])
        for a, b in itertools.pairwise(starts):
            cols[a:b] = rng.permutation(cols[a:b])
    if arrangement == "rows spread":
        rows = rows * 1_000_003
    return rows, cols


@pytest.mark.parametrize(("tile_order", "cell_order"), list(itertools.product(ORDERS, ORDERS)))
@pytest.mark.parametrize("extents", [(4, 3), (2048, 64), (1 << 40, 1 << 30)])
@pytest.mark.parametrize("arrangement", ["random", "row by row", "columns shuffled", "rows spread"])
def test_global_order_is_tiledbs_definition(tile_order, cell_order, extents, arrangement):
    # (1 << 40, 1 << 30): one int64 key would overflow, so the four keys are sorted instead
    rows, cols = arranged(arrangement)
    order = ArrayOrder(extents, tile_order, cell_order)
    perm = global_order(rows, cols, order)
    got = list(zip(rows[perm].tolist(), cols[perm].tolist(), strict=True))
    assert got == by_definition(rows, cols, order)


def as_csc(table: pa.Table, shape: tuple[int, int], first_row: int = 0) -> sp.csc_matrix:
    """The SOMA coordinates and values in `table` as a matrix of `shape`, its rows counted
    from `first_row`."""
    rows = table["soma_dim_0"].to_numpy() - first_row
    values = table["soma_data"].to_numpy()
    return sp.coo_matrix((values, (rows, table["soma_dim_1"].to_numpy())), shape=shape).tocsc()


def matrix(n_cells=600, n_genes=300, seed=3) -> sp.csr_matrix:
    m = sp.random(n_cells, n_genes, density=0.05, format="csr", random_state=seed, dtype=np.float32)
    m.data = np.ceil(m.data * 20)
    return m


@pytest.mark.parametrize(
    "layout",
    [GENE_QUERY_LAYOUT, ROW_LAYOUT, COL_LAYOUT, None],
    ids=["kbagg", "row", "col", "tiledbsoma"],
)
def test_write_matrix_in_global_order_reads_back_equal(tmp_path, layout):
    uri = str(tmp_path / "X")
    soma.SparseNDArray.create(
        uri, type=pa.float32(), shape=(5000, 400), platform_config=layout
    ).close()
    m = matrix()
    genes = np.random.default_rng(0).permutation(400)[:300]  # the sample's genes' joinids
    with soma.SparseNDArray.open(uri, "w") as arr:
        assert array_order(arr) is not None  # a global-order write, not TileDB's sort
        assert write_matrix(arr, m, 2100, genes) == m.nnz
    with soma.SparseNDArray.open(uri, context=read_context()) as arr:
        table = arr.read().tables().concat()
    back = as_csc(table, (600, 400), first_row=2100)[:, genes]
    np.testing.assert_array_equal(back.toarray(), m.toarray())


def test_tiledb_refuses_a_write_not_in_global_order(tmp_path):
    """What makes the global-order write safe: a wrong order is an error, not a wrong store."""
    uri = str(tmp_path / "X")
    soma.SparseNDArray.create(
        uri, type=pa.float32(), shape=(5000, 400), platform_config=GENE_QUERY_LAYOUT
    ).close()
    coo = matrix().tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    wrong = np.lexsort((cols, rows))  # row by row: kbagg's layout orders cells gene by gene
    table = pa.table(
        {
            "soma_dim_0": pa.array(rows[wrong]),
            "soma_dim_1": pa.array(cols[wrong]),
            "soma_data": pa.array(coo.data[wrong]),
        }
    )
    with soma.SparseNDArray.open(uri, "w") as arr, pytest.raises(Exception, match="order"):
        arr.write(table, platform_config={"tiledb": {"write": {"sort_coords": False}}})


def _vfs_bytes_read(read) -> tuple[object, int]:
    """``read()``'s result and the bytes TileDB's VFS read from files for it."""
    soma.tiledbsoma_stats_enable()
    soma.tiledbsoma_stats_reset()
    try:
        result = read()
        counters = [s.get("counters", {}) for s in soma.tiledbsoma_stats_as_py()]
    finally:
        soma.tiledbsoma_stats_disable()
    return result, sum(c.get("Context.VFS.read_byte_num", 0) for c in counters)


def test_scattered_genes_read_little_more_than_their_tiles_with_read_context(tmp_path):
    """`read_context` keeps TileDB from batching a scattered read into whole files: 10 genes
    of a gene-major array of 20,000 cells read well under a tenth of the array's bytes (with
    TileDB's default 20 MB batches, nearly all of them), and those genes' values."""
    uri = str(tmp_path / "X")
    soma.SparseNDArray.create(
        uri, type=pa.float32(), shape=(20_000, 2_000), platform_config=COL_LAYOUT
    ).close()
    m = matrix(20_000, 2_000, seed=5)
    with soma.SparseNDArray.open(uri, "w") as arr:
        write_matrix(arr, m, 0, np.arange(2_000))
    on_disk = sum(f.stat().st_size for f in (tmp_path / "X").rglob("*.tdb"))
    genes = np.sort(np.random.default_rng(2).choice(2_000, 10, replace=False))
    with soma.SparseNDArray.open(uri, context=read_context()) as arr:
        table, read_bytes = _vfs_bytes_read(
            lambda: arr.read((slice(None), genes)).tables().concat()
        )
    assert read_bytes < on_disk / 10, (read_bytes, on_disk)
    back = as_csc(table, m.shape)
    np.testing.assert_array_equal(back[:, genes].toarray(), m[:, genes].toarray())
