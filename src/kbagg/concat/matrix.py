"""Memory-bounded streaming of one input matrix into CSR row chunks in output-column space.

Every reader yields *tasks*: callables that return a ``RowChunk``. A task may run on a worker
thread (it reads its own slice, with ``pread`` where the input is stored contiguously, or
through h5py, which serialises HDF5 calls itself), and the chunks it returns cover the
input's rows in order, already remapped to the output columns (columns absent from the
output dropped) and in canonical CSR form (indices sorted within each row, no duplicates).
No task holds more than about ``budget`` stored entries (a single row larger than the
budget is still read whole).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

INDEX_DTYPE = np.int32  # output columns always fit: a gene axis is far below 2**31
# Entries per task at most: 1-2 MB per array, so a task's remap and counting sorts work in
# the CPU's L2 cache (a 2M-entry sort took twice as long per entry as 256K-entry ones).
TASK_ENTRIES = 1 << 18


@dataclass(frozen=True)
class MatrixSource:
    """How one input matrix (X or a layer) is stored on disk."""

    fmt: str  # "csr", "csc" or "dense"
    dtype: np.dtype
    shape: tuple[int, int]
    nnz: int  # stored entries; for dense, the number of elements (an upper bound)


def describe_matrix(elem: h5py.Group | h5py.Dataset) -> MatrixSource:
    """Inspect an h5ad matrix element without reading its values."""
    if isinstance(elem, h5py.Dataset):
        if elem.ndim != 2:
            raise ValueError(f"{elem.name} is a {elem.ndim}-d dataset, expected a 2-d matrix")
        return MatrixSource("dense", elem.dtype, tuple(elem.shape), int(elem.size))
    attrs = elem.attrs
    enc = attrs.get("encoding-type", attrs.get("h5sparse_format", ""))
    if isinstance(enc, bytes):
        enc = enc.decode()
    fmt = {"csr_matrix": "csr", "csr": "csr", "csc_matrix": "csc", "csc": "csc"}.get(enc)
    if fmt is None:
        raise ValueError(f"{elem.name} has unsupported encoding {enc!r}")
    shape = tuple(int(s) for s in attrs.get("shape", attrs.get("h5sparse_shape")))
    return MatrixSource(fmt, elem["data"].dtype, shape, int(elem["data"].shape[0]))


class ColumnMap:
    """Where each input column goes in the output (``lut[c] == -1``: not in the output).

    The remap picks the cheapest correct path once per input:

    * ``identity``: the input's genes are the output's, in order: no remap at all.
    * ``monotone``: the kept columns keep their relative order (``lut`` increases over
      them), so sorted rows stay sorted. Without dropped columns that is one lookup
      (``np.take``) per entry; with them, scipy's column selection (a slice when the dropped
      columns all come after the kept ones, ``cut``, as for an inner join of inputs that
      share a reference).
    * otherwise every chunk is re-sorted by a linear counting sort (``sort_rows``), which
      also drops the entries.
    """

    def __init__(self, lut: np.ndarray, n_out: int):
        self.lut = np.asarray(lut, dtype=INDEX_DTYPE)
        self.n_out = int(n_out)
        kept = self.lut >= 0
        self.drops = not bool(kept.all())
        cols = np.arange(len(self.lut), dtype=INDEX_DTYPE)
        kept_in_place = bool(np.all(~kept | (self.lut == cols)))
        self.identity = kept_in_place and not self.drops and len(self.lut) == self.n_out
        n_kept = int(kept.sum())
        # Dropped columns all come after the kept ones: "keep" is just "index < cut".
        self.cut = n_kept if kept_in_place and bool(kept[:n_kept].all()) else None
        self.monotone = bool(np.all(np.diff(self.lut[kept]) > 0))
        # For sort_rows: dropped columns go to the extra column n_out.
        self.sort_lut = np.where(kept, self.lut, self.n_out).astype(INDEX_DTYPE)
        # For a monotone map: the kept columns, their targets, and whether those are 0, 1, ...
        self.kept_columns = np.flatnonzero(kept).astype(INDEX_DTYPE)
        self.kept_targets = self.lut[self.kept_columns]
        self.kept_compact = bool(np.array_equal(self.kept_targets, np.arange(n_kept)))

    def kept_by_output_position(self) -> tuple[np.ndarray, np.ndarray]:
        """(input columns, output columns) of kept columns, ordered by output column."""
        src = np.flatnonzero(self.lut >= 0)
        order = np.argsort(self.lut[src], kind="stable")
        return src[order], self.lut[src[order]]


@dataclass
class RowChunk:
    """Consecutive output rows in CSR form: per-row entry counts, column indices, values."""

    counts: np.ndarray
    indices: np.ndarray
    data: np.ndarray


Task = Callable[[], RowChunk]


def plan_chunks(indptr: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split ``len(indptr) - 1`` rows into consecutive ranges of at most ``budget`` entries."""
    n = len(indptr) - 1
    bounds, start = [], 0
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + budget, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        bounds.append((start, stop))
        start = stop
    return bounds


def _indptr(counts: np.ndarray) -> np.ndarray:
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def canonical_chunk(
    counts: np.ndarray, indices: np.ndarray, data: np.ndarray, n_cols: int
) -> RowChunk:
    """Sort indices within rows and sum duplicates, only when they are not already canonical."""
    if _rows_strictly_increasing(counts, indices):
        return RowChunk(counts, indices, data)
    return sort_rows(counts, indices, data, n_cols)


def sort_rows(counts: np.ndarray, indices: np.ndarray, data: np.ndarray, n_cols: int) -> RowChunk:
    """Canonical CSR of any row chunk in linear time: a stable counting sort by column, then
    by row (scipy's CSR -> CSC -> CSR conversions, in C), instead of a comparison sort of
    every row. Entries in column ``n_cols`` (a remap's "dropped") are left out between the
    two sorts, at no cost. Duplicates (non-canonical input) end up adjacent and are summed."""
    indptr = np.zeros(len(counts) + 1, dtype=_index_dtype(indices.size))
    np.cumsum(counts, out=indptr[1:])
    m = sp.csr_matrix((data, indices, indptr), shape=(len(counts), n_cols + 1)).tocsc()
    # Columns 0..n_cols-1 only: the dropped column's entries are simply not converted.
    m = sp.csc_matrix((m.data, m.indices, m.indptr[: n_cols + 1]), shape=(len(counts), n_cols))
    m = m.tocsr()  # scipy flags the result sorted
    m.sum_duplicates()  # a linear check; sums adjacent duplicates if there are any
    return RowChunk(np.diff(m.indptr).astype(np.int64), m.indices.astype(INDEX_DTYPE), m.data)


def _index_dtype(n: int):
    """int32 while it can hold ``n``: scipy would otherwise widen the indices to int64."""
    return np.int32 if n < 2**31 else np.int64


def _rows_strictly_increasing(counts: np.ndarray, indices: np.ndarray) -> bool:
    if indices.size < 2:
        return True
    ok = np.less(indices[:-1], indices[1:])
    if ok.all():
        return True
    row_starts = np.cumsum(counts)[:-1]
    # A decrease across a row boundary is fine.
    boundaries = row_starts[(row_starts > 0) & (row_starts < indices.size)] - 1
    ok[boundaries] = True
    return bool(ok.all())


def _remap(cmap: ColumnMap, counts: np.ndarray, indices: np.ndarray, data: np.ndarray) -> RowChunk:
    """Translate input columns to output columns, dropping the ones the output lacks."""
    _check_range(indices, len(cmap.lut))
    if cmap.identity:
        return canonical_chunk(counts, indices, data, cmap.n_out)
    if not cmap.monotone:  # re-sorted anyway: the sort drops the entries too
        return sort_rows(counts, _lookup(cmap.sort_lut, indices), data, cmap.n_out)
    if not cmap.drops:  # a lookup that keeps the order of every row
        return canonical_chunk(counts, _lookup(cmap.lut, indices), data, cmap.n_out)
    # Kept columns in their order: scipy's column selection (two linear passes in C) keeps
    # the order of every row; it numbers the kept columns 0, 1, ...
    indptr = np.zeros(len(counts) + 1, dtype=_index_dtype(indices.size))
    np.cumsum(counts, out=indptr[1:])
    m = sp.csr_matrix((data, indices, indptr), shape=(len(counts), len(cmap.lut)))
    if cmap.cut is not None:
        m = m[:, : cmap.cut]
        new = m.indices
    else:
        m = m[:, cmap.kept_columns]
        new = m.indices if cmap.kept_compact else _lookup(cmap.kept_targets, m.indices)
    return canonical_chunk(
        np.diff(m.indptr).astype(np.int64), new.astype(INDEX_DTYPE, copy=False), m.data, cmap.n_out
    )


def _check_range(indices: np.ndarray, n_cols: int) -> None:
    """ValueError when a column index is outside the input's genes (a corrupt file)."""
    if indices.size and not (int(indices.min()) >= 0 and int(indices.max()) < n_cols):
        raise ValueError(f"column indices outside 0-{n_cols - 1}")


def _lookup(table: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``table[indices]`` for indices already checked to be in range: numpy's ``wrap`` mode
    skips the per-entry bounds check (twice as fast as the default)."""
    return np.take(table, indices, mode="wrap")


class SliceReader:
    """Reads ``[a, b)`` of a 1-d dataset into a new array of ``dtype``.

    A contiguous, unfiltered, little-endian dataset is read with ``os.pread`` at its offset
    in the file: no HDF5 call, so worker threads read while the main thread writes through
    HDF5. Anything else (chunked, compressed) is read through h5py.
    """

    def __init__(self, ds: h5py.Dataset, fd: int | None, dtype):
        self.ds, self.dtype = ds, np.dtype(dtype)
        self.stored = ds.dtype
        self.fd, self.offset = None, None
        dcpl = ds.id.get_create_plist()
        contiguous = dcpl.get_layout() == h5py.h5d.CONTIGUOUS and dcpl.get_nfilters() == 0
        if fd is not None and contiguous and self.stored.isnative and ds.external is None:
            offset = ds.id.get_offset()
            if offset is not None or ds.shape[0] == 0:
                self.fd, self.offset = fd, offset or 0

    def __call__(self, a: int, b: int) -> np.ndarray:
        if self.fd is None:
            out = np.empty(b - a, dtype=self.dtype)
            if b > a:  # HDF5 converts dtypes while reading: no extra copy
                self.ds.read_direct(out, np.s_[a:b])
            return out
        raw = np.empty(b - a, dtype=self.stored)
        view = memoryview(raw).cast("B")
        pos, start = 0, self.offset + a * self.stored.itemsize
        while pos < len(view):
            n = os.preadv(self.fd, [view[pos:]], start + pos)
            if n == 0:
                raise OSError(f"{self.ds.file.filename}: unexpected end of file")
            pos += n
        return raw.astype(self.dtype, copy=False)


def iter_csr(
    grp: h5py.Group, src: MatrixSource, cmap: ColumnMap, budget: int, out_dtype, fd=None
) -> Iterator[Task]:
    indptr = grp["indptr"][:].astype(np.int64)
    read_data = SliceReader(grp["data"], fd, out_dtype)
    read_indices = SliceReader(grp["indices"], fd, INDEX_DTYPE)
    for r0, r1 in plan_chunks(indptr, min(budget, TASK_ENTRIES)):
        a, b = int(indptr[r0]), int(indptr[r1])
        counts = np.diff(indptr[r0 : r1 + 1])
        yield partial(_csr_task, read_data, read_indices, a, b, counts, cmap)


def _csr_task(read_data, read_indices, a, b, counts, cmap) -> RowChunk:
    return _remap(cmap, counts, read_indices(a, b), read_data(a, b))


def iter_dense(
    ds: h5py.Dataset, src: MatrixSource, cmap: ColumnMap, budget: int, out_dtype
) -> Iterator[Task]:
    n_rows, n_cols = src.shape
    rows_per_chunk = max(1, budget // max(n_cols, 1))
    for r0 in range(0, n_rows, rows_per_chunk):
        yield partial(_dense_task, ds, r0, min(r0 + rows_per_chunk, n_rows), cmap, out_dtype)


def _dense_task(ds, r0, r1, cmap, out_dtype) -> RowChunk:
    block = ds[r0:r1]
    if not cmap.identity:
        src_cols, dst_cols = cmap.kept_by_output_position()
        block = block[:, src_cols]
    rows, cols = np.nonzero(block)  # row-major, so columns come out sorted per row
    data = block[rows, cols].astype(out_dtype, copy=False)
    indices = (cols if cmap.identity else dst_cols[cols]).astype(INDEX_DTYPE)
    counts = np.bincount(rows, minlength=block.shape[0]).astype(np.int64)
    return RowChunk(counts, indices, data)


def iter_csc(
    grp: h5py.Group,
    src: MatrixSource,
    cmap: ColumnMap,
    budget: int,
    out_dtype,
    scratch: Scratch,
    claim: Callable[[int], None] | None = None,
    fd: int | None = None,
) -> Iterator[Task]:
    """CSC input: in memory when small, else an on-disk bucket transpose."""
    if src.nnz <= budget:
        yield partial(_small_csc_task, grp, src, cmap, out_dtype)
        return
    col_indptr = grp["indptr"][:].astype(np.int64)
    read_rows = SliceReader(grp["indices"], fd, INDEX_DTYPE)
    read_data = SliceReader(grp["data"], fd, out_dtype)

    def columns(step: int, with_values: bool) -> Iterator[tuple[int, RowChunk]]:
        for c0, c1 in plan_chunks(col_indptr, step):
            a, b = int(col_indptr[c0]), int(col_indptr[c1])
            data = read_data(a, b) if with_values else None
            yield c0, RowChunk(np.diff(col_indptr[c0 : c1 + 1]), read_rows(a, b), data)

    transpose = BucketTranspose(
        columns, src.shape[0], cmap.lut, cmap.n_out, budget, out_dtype, cmap.monotone
    )
    yield from transpose.tasks(scratch, claim)


def _small_csc_task(grp, src, cmap, out_dtype) -> RowChunk:
    m = sp.csc_matrix(
        (grp["data"][:], grp["indices"][:], grp["indptr"][:]), shape=src.shape
    ).astype(out_dtype, copy=False)
    src_cols, dst_cols = cmap.kept_by_output_position()
    m = m[:, src_cols].tocsr()
    m.sum_duplicates()
    # Output columns of kept input columns increase with their position in src_cols.
    indices = dst_cols[m.indices].astype(INDEX_DTYPE)
    return RowChunk(np.diff(m.indptr).astype(np.int64), indices, m.data)


class BucketTranspose:
    """A compressed matrix along its other axis, with memory bounded by ``budget``.

    The source is read as chunks of its major axis (``columns(step, with_values)`` yields
    ``(major0, RowChunk)``: the entries of consecutive majors, each a minor index and, when
    asked for, a value). The result comes out in canonical chunks of the minor axis, each
    entry carrying ``major_map[major]`` as its index (-1: dropped). It is used for CSC inputs
    (majors are input columns, mapped to output columns) and for the gene-major copy of an
    aggregate (majors are cells, kept as they are).

    Pass 1 counts kept entries per minor and cuts the minors into blocks of at most half the
    budget (a block and its conversion take about 24 bytes per entry). Pass 2 appends each
    entry (minor, mapped major, value) to its block's region of a scratch file: a table
    gives each minor's block, and a stable counting sort (numpy's radix sort of the 8- or
    16-bit block numbers) groups a source chunk by block. Each block is then read back and
    turned into CSR (``tasks``) by one counting sort by minor when the mapped majors grow
    with the source order (``sorted_major``: entries then reach a block sorted within each
    minor), else by two; both linear. Source chunks are a quarter of the budget because
    pass 2 keeps several per-entry arrays alive at once.
    """

    def __init__(
        self,
        columns: Callable[[int, bool], Iterable[tuple[int, RowChunk]]],
        n_minor: int,
        major_map: np.ndarray | None,
        n_mapped: int,
        budget: int,
        out_dtype,
        sorted_major: bool,
    ):
        self.columns = columns
        self.n_minor, self.n_mapped = int(n_minor), int(n_mapped)
        self.major_map = major_map
        self.dtype = np.dtype(out_dtype)
        self.block_budget = max(1, int(budget) // 2)
        self.step = max(1, int(budget) // 4)
        self.sorted_major = sorted_major

    def _mapped(self, major0: int, chunk: RowChunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Minor indices, mapped majors and values of a source chunk's kept entries."""
        majors = np.arange(major0, major0 + len(chunk.counts), dtype=INDEX_DTYPE)
        if self.major_map is not None:
            majors = self.major_map[majors]
        mapped = np.repeat(majors, chunk.counts)
        minors, data = chunk.indices, chunk.data
        if self.major_map is not None:
            keep = mapped >= 0
            if not keep.all():
                mapped, minors = mapped[keep], minors[keep]
                data = data[keep] if data is not None else None
        return minors.astype(INDEX_DTYPE, copy=False), mapped, data

    def _minor_counts(self) -> np.ndarray:
        counts = np.zeros(self.n_minor, dtype=np.int64)
        for major0, chunk in self.columns(self.step, False):
            minors, _, _ = self._mapped(major0, chunk)
            _check_range(minors, self.n_minor)
            counts += np.bincount(minors, minlength=self.n_minor)
        return counts

    def tasks(
        self, scratch: Scratch, claim: Callable[[int], None] | None
    ) -> Iterator[Callable[[], RowChunk]]:
        """Tasks that each return one block of the transpose, in minor order."""
        counts = self._minor_counts()
        minor_ptr = _indptr(counts)
        blocks = plan_chunks(minor_ptr, self.block_budget)
        regions = ScratchRegions(int(minor_ptr[-1]), self.dtype)
        fh = scratch.file()
        self._scatter(fh, regions, minor_ptr, blocks, claim)
        for r0, r1 in blocks:
            a, b = int(minor_ptr[r0]), int(minor_ptr[r1])
            minors, mapped, data = regions.read(fh, a, b - a)
            yield partial(
                _block_to_csr, minors - r0, mapped, data, r1 - r0, self.n_mapped, self.sorted_major
            )

    def _scatter(self, fh, regions, minor_ptr, blocks, claim) -> None:
        n_blocks = len(blocks)
        starts = np.array([r0 for r0, _ in blocks], dtype=np.int64)
        cursor = minor_ptr[starts].copy()
        # Block of each minor; 8 or 16 bits, so that numpy's stable argsort is a radix sort.
        block_dtype = np.uint8 if n_blocks <= 256 else np.uint16 if n_blocks <= 65536 else np.int64
        sizes = np.diff(np.append(starts, self.n_minor))
        block_of_minor = np.repeat(np.arange(n_blocks, dtype=block_dtype), sizes)
        for major0, chunk in self.columns(self.step, True):
            minors, mapped, data = self._mapped(major0, chunk)
            if claim is not None:
                claim(minors.size * (8 + self.dtype.itemsize))
            if n_blocks == 1:
                edges = np.array([0, minors.size])
            else:
                block_of = _lookup(block_of_minor, minors)
                order = np.argsort(block_of, kind="stable")  # keeps source order in a block
                minors, mapped, data = minors[order], mapped[order], data[order]
                edges = _indptr(np.bincount(block_of, minlength=n_blocks))
            for blk in np.flatnonzero(np.diff(edges)):
                s, e = edges[blk], edges[blk + 1]
                regions.write(fh, int(cursor[blk]), minors[s:e], mapped[s:e], data[s:e])
                cursor[blk] += e - s


def _block_to_csr(minors, mapped, data, n_rows: int, n_cols: int, sorted_major: bool) -> RowChunk:
    """(row, column, value) triples -> canonical CSR in linear time. COO -> CSR is a stable
    counting sort by row: enough when each row's columns arrive in order. Otherwise COO ->
    CSC -> CSR sorts by column first. Duplicates (a non-canonical source) are summed."""
    if sorted_major:
        m = sp.coo_matrix((data, (minors, mapped)), shape=(n_rows, n_cols)).tocsr()
    else:
        m = sp.csc_matrix((data, (minors, mapped)), shape=(n_rows, n_cols)).tocsr()
    m.sum_duplicates()  # a linear check; sorts and sums only a non-canonical source's rows
    return RowChunk(np.diff(m.indptr).astype(np.int64), m.indices.astype(INDEX_DTYPE), m.data)


class Scratch:
    """One scratch file beside the output, reused by every transpose of a run (rewriting it
    in place is cheaper than truncating and growing it again), deleted by ``close``."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def file(self):
        if self._fh is None:
            self._fh = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)


class ScratchRegions:
    """Three parallel arrays (minor indices, mapped majors, values) back to back in one file."""

    def __init__(self, n: int, dtype: np.dtype):
        self.n, self.dtype = n, dtype
        self.col_base = n * np.dtype(INDEX_DTYPE).itemsize
        self.data_base = 2 * self.col_base

    def write(self, fh, pos: int, rows, cols, data) -> None:
        isz = np.dtype(INDEX_DTYPE).itemsize
        for base, arr, size in (
            (0, rows, isz),
            (self.col_base, cols, isz),
            (self.data_base, data, self.dtype.itemsize),
        ):
            fh.seek(base + pos * size)
            fh.write(np.ascontiguousarray(arr).data)

    def read(self, fh, pos: int, n: int) -> list[np.ndarray]:
        out = []
        for base, dtype in (
            (0, INDEX_DTYPE),
            (self.col_base, INDEX_DTYPE),
            (self.data_base, self.dtype),
        ):
            arr = np.empty(n, dtype=dtype)
            fh.seek(base + pos * np.dtype(dtype).itemsize)
            fh.readinto(memoryview(arr).cast("B"))
            out.append(arr)
        return out
