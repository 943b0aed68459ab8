"""Blocks of rows of a CSR matrix holding a bounded number of non-zeros each, so the
per-entry temporaries of a scan (EmptyDrops' raw matrix, the ambient estimate's cells) stay
bounded whatever the number of barcodes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["row_blocks"]


def row_blocks(indptr: np.ndarray, block_nnz: int) -> Iterator[tuple[int, int]]:
    """The ``(start, stop)`` row ranges, in order and covering every row, of about
    ``block_nnz`` non-zeros each (a row with more is a block of its own).

    Parameters
    ----------
    indptr
        The CSR matrix's row pointers.
    block_nnz
        Non-zeros per block.
    """
    n_rows = len(indptr) - 1
    start = 0
    while start < n_rows:
        stop = int(np.searchsorted(indptr, indptr[start] + block_nnz, side="right")) - 1
        stop = min(max(stop, start + 1), n_rows)
        yield start, stop
        start = stop
