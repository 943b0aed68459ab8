"""The output side of the concat: sparse matrices written in whole chunks, to h5ad or zarr.

Every 1-d output array (``data``, ``indices``, ``indptr``) is filled one chunk at a time in
memory. A full chunk is handed to a ``Pipeline``: with worker threads it is encoded there
(zlib, ISA-L and zstd release the GIL) and written in order by the calling thread, so HDF5 is only
ever called from one thread. In h5ad files the encoded bytes go straight into the file with
``write_direct_chunk`` (no HDF5 filter pipeline, no chunk cache); the filters declared on the
dataset are the standard ones (shuffle + deflate), so h5py and anndata read the file with
no plugin. zarr chunks are written through zarr's own API from the worker threads.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from isal import isal_zlib

from kbagg.concat.matrix import INDEX_DTYPE, RowChunk
from kbagg.errors import KbaggError

CHUNK_ENTRIES = 1 << 18  # values per stored chunk: 1 MB of float32/int32, 2 MB of int64 indptr
GENE_MAJOR_CHUNK_ENTRIES = 1 << 16  # 256 KB: what reading one gene of a CSC matrix costs
METHODS = {"h5ad": ("none", "gzip", "isal", "lzf"), "zarr": ("none", "gzip", "zstd", "blosc")}
LEVELS = {"gzip": range(1, 10), "isal": range(4), "zstd": range(1, 23), "blosc": range(1, 10)}
DEFAULT_LEVEL = {"gzip": 4, "isal": 1, "zstd": 3, "blosc": 1}
DEFAULT_METHOD = {"h5ad": "none", "zarr": "blosc"}
DEFLATE = ("gzip", "isal")  # both stored as HDF5's standard shuffle + deflate filters


@dataclass(frozen=True)
class Compression:
    """How output chunks are compressed: ``none``; ``gzip`` (shuffle + deflate, levels 1-9,
    encoded by zlib exactly as HDF5 would); ``isal`` (h5ad only: the same standard shuffle +
    deflate filters, encoded by ISA-L, levels 0-3, several times faster than zlib);
    ``lzf`` (shuffle + h5py's LZF, h5ad only); ``zstd`` (levels 1-22, zarr only) or
    ``blosc`` (zarr only: Blosc with zstd inside and a byte shuffle, levels 1-9; several
    times faster than plain zstd on sparse matrix arrays, and smaller)."""

    method: str
    level: int | None = None

    @classmethod
    def parse(cls, text: str | None, fmt: str) -> Compression:
        """``METHOD[:LEVEL]``; None gives the format's default (none for h5ad, blosc for zarr)."""
        if text is None:
            text = DEFAULT_METHOD[fmt]
        method, _, level_text = text.strip().lower().partition(":")
        if method not in METHODS[fmt]:
            choices = ", ".join(METHODS[fmt])
            raise ValueError(f"compression {text!r} is not available for {fmt} (use {choices})")
        if method not in LEVELS:
            if level_text:
                raise ValueError(f"compression {text!r}: {method} takes no level")
            return cls(method)
        try:
            level = int(level_text) if level_text else DEFAULT_LEVEL[method]
        except ValueError:
            level = None
        levels = LEVELS[method]
        if level not in levels:
            raise ValueError(
                f"compression {text!r}: level must be {levels.start}-{levels.stop - 1}"
            )
        return cls(method, level)

    def __str__(self) -> str:
        return self.method if self.level is None else f"{self.method}:{self.level}"

    def h5py_options(self) -> dict:
        if self.method == "gzip":
            return {"compression": "gzip", "compression_opts": self.level, "shuffle": True}
        if self.method == "isal":  # the level HDF5 records is only used by later HDF5 writes
            return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        if self.method == "lzf":
            return {"compression": "lzf", "shuffle": True}
        return {}

    def zarr_compressors(self, zarr_format: int = 3) -> list | None:
        """Codecs for a zarr array: zarr v3 codecs, or numcodecs for a v2 store (anndata
        0.12 writes zarr v2 by default, 0.13 v3; the matrices follow the store). A v2 array
        takes one compressor or None, never a list."""
        if zarr_format == 2:
            import numcodecs

            if self.method == "blosc":
                shuffle = numcodecs.Blosc.SHUFFLE
                return [numcodecs.Blosc(cname="zstd", clevel=self.level, shuffle=shuffle)]
            if self.method == "zstd":
                return [numcodecs.Zstd(level=self.level)]
            if self.method == "gzip":
                return [numcodecs.GZip(level=self.level)]
            return None

        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        if self.method == "blosc":
            return [BloscCodec(cname="zstd", clevel=self.level, shuffle="shuffle")]
        if self.method == "zstd":
            return [ZstdCodec(level=self.level)]
        if self.method == "gzip":
            return [GzipCodec(level=self.level)]
        return []


def check_output_options(fmt: str, compression: str | None, gene_major: bool) -> Compression:
    """The workflow's ``aggregate.format``, ``aggregate.compression`` and
    ``aggregate.gene_major``, checked together at parse time (KbaggError naming the key)."""
    try:
        parsed = Compression.parse(compression, fmt)
    except ValueError as error:
        raise KbaggError(f"config aggregate.compression: {error}") from None
    if gene_major and fmt != "h5ad":
        raise KbaggError(
            "config aggregate.gene_major: the gene-major copy is an h5ad; it needs "
            f"aggregate.format h5ad (not {fmt})"
        )
    return parsed


def shuffle_bytes(values: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter: byte k of every value, for k = 0, 1, ... (``H5Z_filter_shuffle``)."""
    size = values.dtype.itemsize
    if size == 1:
        return values.view(np.uint8)
    return np.ascontiguousarray(values.view(np.uint8).reshape(-1, size).T)


def describe_os_error(error: OSError) -> str:
    """One line for an OSError; HDF5's own messages run over several lines."""
    text = error.strerror or ""
    if error.errno and (not text or "\n" in text or "Driver" in text):
        return f"{os.strerror(error.errno)} (errno {error.errno})"
    return text or (str(error).splitlines() or [type(error).__name__])[0]


class DiskSpace:
    """Refuses a write that would leave less than ``reserve_bytes`` free beside ``path``.

    HDF5 cannot recover from a failed write: the file can no longer be closed, and the
    library crashes (segmentation fault) when it tries again at interpreter exit. So the
    writer checks the free space before each chunk and stops with ENOSPC while HDF5 is
    still healthy, keeping enough room for the file's metadata to be flushed on close.
    """

    def __init__(self, path: Path, reserve_bytes: int = 16 << 20):
        self.folder = Path(path).parent
        self.reserve_bytes = int(reserve_bytes)

    def free_bytes(self) -> int:
        stat = os.statvfs(self.folder)
        return stat.f_bavail * stat.f_frsize

    def claim(self, nbytes: int) -> None:
        free = self.free_bytes()
        if free - nbytes < self.reserve_bytes:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device: {free / 2**20:,.0f} MB free in {self.folder}, "
                f"the next {nbytes / 2**20:,.1f} MB would leave less than "
                f"{self.reserve_bytes / 2**20:,.0f} MB",
            )


class Pipeline:
    """Encodes full chunks on ``threads`` worker threads and writes them in submission order
    from the calling thread; with ``threads <= 1`` everything runs inline.

    At most ``max_pending`` chunks are in flight, which bounds the memory they hold. Input
    tasks (``ordered``) share the same workers.
    """

    def __init__(self, threads: int = 1):
        self.threads = max(1, int(threads))
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.max_pending = 2 * self.threads
        self.pending: deque[tuple[Future, object, int]] = deque()

    def submit(self, array, index: int, values: np.ndarray) -> bool:
        """Store chunk ``index`` of ``array``; True while ``values`` is still in use (the
        caller must not refill it)."""
        if self.pool is None or array.inline:
            self.flush()  # keeps the writes in order
            array.store(index, array.encode(index, values))
            return False
        self.pending.append((self.pool.submit(array.encode, index, values), array, index))
        while len(self.pending) > self.max_pending:
            self._write_oldest()
        return True

    def _write_oldest(self) -> None:
        future, array, index = self.pending.popleft()
        array.store(index, future.result())

    def flush(self) -> None:
        while self.pending:
            self._write_oldest()

    def ordered(self, tasks, lookahead: int):
        """Run callables on the workers, at most ``lookahead`` ahead; yield results in order."""
        if self.pool is None:
            for task in tasks:
                yield task()
            return
        queue: deque[Future] = deque()
        try:
            for task in tasks:
                queue.append(self.pool.submit(task))
                if len(queue) > lookahead:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()

    def close(self) -> None:
        """Drop what is pending (after an error) and stop the workers."""
        for future, _, _ in self.pending:
            future.cancel()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def chunk_length(length: int, chunk_entries: int) -> int:
    """Stored chunk length of a 1-d array: ``chunk_entries``, or the array's length when that
    is shorter (HDF5 and zarr store whole chunks: a 1,000-entry indptr in a 256K-entry chunk
    would take 2 MB)."""
    return max(1, min(int(chunk_entries), int(length)))


class H5Array:
    """A chunked 1-d HDF5 dataset written one whole chunk at a time (``write_direct_chunk``).

    ``none``, ``gzip`` and ``isal`` chunks are encoded here (zlib, like HDF5's deflate filter,
    or ISA-L's deflate, after the shuffle), so HDF5 only copies bytes. ``lzf`` has no Python encoder: those chunks go
    through HDF5's filter pipeline.
    """

    def __init__(
        self, parent: h5py.Group, name: str, length: int, dtype, compression, space, chunk_len
    ):
        self.compression, self.space = compression, space
        self.chunk_len = chunk_length(length, chunk_len)
        self.ds = parent.create_dataset(
            name,
            (int(length),),
            dtype,
            chunks=(self.chunk_len,),
            maxshape=(None,),
            **compression.h5py_options(),
        )
        # Nothing to encode on a worker: the chunk is stored by the calling thread at once.
        self.inline = compression.method not in DEFLATE

    def encode(self, index: int, values: np.ndarray):
        if len(values) < self.chunk_len and self.compression.method != "lzf":
            full = np.zeros(self.chunk_len, dtype=values.dtype)  # HDF5 stores whole chunks
            full[: len(values)] = values
            values = full
        if self.compression.method == "gzip":
            return zlib.compress(shuffle_bytes(values), self.compression.level)
        if self.compression.method == "isal":
            return isal_zlib.compress(shuffle_bytes(values), self.compression.level)
        return values

    def store(self, index: int, payload) -> None:
        start = index * self.chunk_len
        if self.compression.method == "lzf":
            self.space.claim(payload.nbytes)
            self.ds[start : start + len(payload)] = payload
            return
        self.space.claim(len(payload) if isinstance(payload, bytes) else payload.nbytes)
        self.ds.id.write_direct_chunk((start,), payload)

    def finish(self, length: int) -> None:
        if self.ds.shape[0] != length:
            self.ds.resize((length,))


class ZarrArray:
    """A 1-d zarr array; chunks are encoded and written by zarr itself, on the worker threads."""

    inline = False

    def __init__(self, parent, name: str, length: int, dtype, compression, space, chunk_len):
        self.space = space
        self.chunk_len = chunk_length(length, chunk_len)
        self.arr = parent.create_array(
            name,
            shape=(int(length),),
            chunks=(self.chunk_len,),
            dtype=np.dtype(dtype),
            compressors=compression.zarr_compressors(parent.metadata.zarr_format),
            fill_value=0,
        )

    def encode(self, index: int, values: np.ndarray):
        start = index * self.chunk_len
        self.space.claim(values.nbytes)
        self.arr[start : start + len(values)] = values
        return None

    def store(self, index: int, payload) -> None:
        pass

    def finish(self, length: int) -> None:
        if self.arr.shape[0] != length:
            self.arr.resize((length,))


class ChunkedColumn:
    """Values appended in order to one 1-d output array, stored in whole chunks."""

    def __init__(self, array, dtype, pipeline: Pipeline):
        self.array, self.pipeline = array, pipeline
        self.dtype = np.dtype(dtype)
        self.chunk_len = array.chunk_len
        self.buffer = np.empty(self.chunk_len, dtype=self.dtype)
        self.filled = 0  # values in the open chunk
        self.index = 0  # number of the open chunk

    def append(self, values: np.ndarray) -> None:
        pos = 0
        while pos < len(values):
            n = min(self.chunk_len - self.filled, len(values) - pos)
            self.buffer[self.filled : self.filled + n] = values[pos : pos + n]
            self.filled += n
            pos += n
            if self.filled == self.chunk_len:
                self._emit()

    def _emit(self) -> None:
        values = self.buffer[: self.filled]
        if self.pipeline.submit(self.array, self.index, values):
            self.buffer = np.empty(self.chunk_len, dtype=self.dtype)  # the old one is in flight
        self.index += 1
        self.filled = 0

    @property
    def length(self) -> int:
        return self.index * self.chunk_len + self.filled

    def close(self) -> int:
        length = self.length
        if self.filled:
            self._emit()
        return length


class SparseWriter:
    """Appends chunks along the major axis (rows of a CSR, columns of a CSC matrix) to a new
    ``csr_matrix`` / ``csc_matrix`` group of an h5ad (``h5py``) or zarr parent group.

    ``data`` and ``indices`` are sized to an upper bound of the entries (inner joins that
    drop columns cannot know the total without a count pass) and shrunk at the end.
    """

    def __init__(
        self,
        parent,
        name: str,
        shape: tuple[int, int],
        dtype,
        nnz_bound: int,
        *,
        array_type,
        compression: Compression,
        space: DiskSpace,
        pipeline: Pipeline,
        encoding: str = "csr_matrix",
        chunk_entries: int = CHUNK_ENTRIES,
    ):
        self.group = parent.create_group(name)
        self.shape = (int(shape[0]), int(shape[1]))
        self.encoding = encoding
        self.n_major = self.shape[0] if encoding == "csr_matrix" else self.shape[1]
        self.nnz_bound = int(nnz_bound)
        self.pipeline = pipeline

        def column(key, length, dt):
            array = array_type(self.group, key, length, dt, compression, space, chunk_entries)
            return array, ChunkedColumn(array, dt, pipeline)

        self._data_array, self.data = column("data", self.nnz_bound, dtype)
        self._indices_array, self.indices = column("indices", self.nnz_bound, INDEX_DTYPE)
        self._indptr_array, self.indptr = column("indptr", self.n_major + 1, np.int64)
        self.indptr.append(np.zeros(1, dtype=np.int64))
        self.major = 0
        self.pos = 0

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def append(self, chunk: RowChunk) -> None:
        n_major, n = len(chunk.counts), len(chunk.indices)
        if self.pos + n > self.nnz_bound:
            raise RuntimeError("more entries than the inputs declared")
        if self.major + n_major > self.n_major:
            raise RuntimeError(f"more than the {self.n_major} rows or columns declared")
        self.data.append(chunk.data)
        self.indices.append(chunk.indices)
        if n_major:
            self.indptr.append(self.pos + np.cumsum(chunk.counts))
        self.major += n_major
        self.pos += n

    def append_empty(self, n_major: int) -> None:
        """Rows of an input that lacks this matrix (outer join): all implicit zeros."""
        if n_major:
            self.indptr.append(np.full(n_major, self.pos, dtype=np.int64))
            self.major += n_major

    def close(self) -> None:
        if self.major != self.n_major:
            raise RuntimeError(f"wrote {self.major} of {self.n_major} rows or columns")
        lengths = [c.close() for c in (self.data, self.indices, self.indptr)]
        self.pipeline.flush()
        arrays = (self._data_array, self._indices_array, self._indptr_array)
        for array, length in zip(arrays, lengths, strict=True):
            array.finish(length)
        self.group.attrs.update(
            {
                "encoding-type": self.encoding,
                "encoding-version": "0.1.0",
                "shape": list(self.shape)
                if isinstance(self._data_array, ZarrArray)
                else np.array(self.shape, dtype=np.int64),
            }
        )
