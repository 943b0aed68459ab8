"""A gene-major (CSC) copy of an aggregate h5ad, written with bounded memory.

Backed anndata reads a gene's values from a CSC matrix as one contiguous slice, so
``read_h5ad(path, backed="r")[:, genes]`` touches only those genes; from the CSR aggregate it
would read every cell. The copy has the same obs, var, obsm, uns..., copied verbatim by
HDF5, and X and every layer as ``csc_matrix`` with the same values and dtype.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from kbagg.atomic import atomic_output
from kbagg.concat.inputs import InputError, open_input, raw_fd
from kbagg.concat.matrix import (
    BucketTranspose,
    RowChunk,
    Scratch,
    SliceReader,
    describe_matrix,
    plan_chunks,
)
from kbagg.concat.options import DEFAULT_CHUNK_ENTRIES
from kbagg.concat.output import (
    GENE_MAJOR_CHUNK_ENTRIES,
    Compression,
    DiskSpace,
    H5Array,
    Pipeline,
    SparseWriter,
    describe_os_error,
)
from kbagg.errors import KbaggError


class GeneMajorError(KbaggError):
    """The aggregate cannot be read, or the copy cannot be written; the message names it."""


def write_gene_major(
    aggregate: str | Path,
    output: str | Path,
    *,
    chunk_entries: int = DEFAULT_CHUNK_ENTRIES,
    compression: str | None = None,
    threads: int = 1,
    progress: bool = False,
) -> Path:
    """Write ``aggregate`` (an h5ad) again with X and layers as CSC (written atomically).

    Parameters
    ----------
    aggregate
        The h5ad to copy; its matrices may be CSR, CSC or dense.
    output
        The gene-major h5ad to write.
    chunk_entries
        Stored entries (non-zeros) held in memory at once. Each matrix goes through an
        on-disk bucket transpose (a scratch file of 12 bytes per float32 entry beside
        ``output``, deleted at the end).
    compression
        ``"none"`` (default), ``"gzip[:LEVEL]"``, ``"isal[:LEVEL]"`` or ``"lzf"``, as for
        ``concat_on_disk``.
    threads
        Worker threads that convert and compress blocks (1: all on the calling thread).
    progress
        Show a tqdm progress bar on stderr.

    Returns
    -------
    The output path.
    """
    aggregate, output = Path(aggregate), Path(output)
    if chunk_entries < 1:
        raise ValueError("chunk_entries must be at least 1")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    if output.resolve() == aggregate.resolve():
        raise GeneMajorError(f"{output}: the gene-major copy cannot replace its source")
    try:
        codec = Compression.parse(compression, "h5ad")
    except ValueError as e:
        raise GeneMajorError(f"{output}: {e}") from e
    budget = chunk_entries  # blocks of half of it: one converted while the next is read
    with open_input_errors(aggregate), open_input(aggregate) as src, raw_fd(aggregate) as fd:
        keys = ["X"] + [f"layers/{k}" for k in src.get("layers", ())]
        sources = {key: describe_matrix(src[key]) for key in keys}
        with atomic_output(output) as tmp:
            try:
                space = DiskSpace(tmp)
                with h5py.File(tmp, "w") as out:
                    _copy_annotations(src, out, space)
                    pipeline = Pipeline(threads)
                    scratch = Scratch(Path(f"{tmp}.transpose"))
                    try:
                        bar_total = sum(s.shape[1] for s in sources.values())
                        with _progress_bar(progress, bar_total) as bar:
                            for key, source in sources.items():
                                parent = out if key == "X" else out["layers"]
                                name = key.removeprefix("layers/")
                                writer = SparseWriter(
                                    parent,
                                    name,
                                    source.shape,
                                    source.dtype,
                                    source.nnz,
                                    array_type=H5Array,
                                    compression=codec,
                                    space=space,
                                    pipeline=pipeline,
                                    encoding="csc_matrix",
                                    chunk_entries=GENE_MAJOR_CHUNK_ENTRIES,
                                )
                                blocks = _gene_blocks(src[key], source, budget, scratch, space, fd)
                                for chunk in pipeline.ordered(blocks, lookahead=1):
                                    writer.append(chunk)
                                    bar.update(len(chunk.counts))
                                writer.close()
                    finally:
                        pipeline.close()
                        scratch.close()
            except OSError as e:
                raise GeneMajorError(
                    f"{output}: cannot write the gene-major copy: {describe_os_error(e)}"
                ) from e
    return output


@contextlib.contextmanager
def open_input_errors(path: Path) -> Iterator[None]:
    """Reading problems of the aggregate become one-line errors naming it."""
    try:
        yield
    except InputError as e:
        raise GeneMajorError(str(e)) from e
    except (KeyError, ValueError) as e:
        raise GeneMajorError(f"{path}: cannot read the aggregate ({e})") from e


def _copy_annotations(src: h5py.File, out: h5py.File, space: DiskSpace) -> None:
    """Everything but the matrices, copied object by object by HDF5 (no decoding)."""
    out.attrs.update(dict(src.attrs))
    for key in src:
        if key in ("X", "layers"):
            continue
        space.claim(_stored_bytes(src[key]))
        src.copy(src[key], out, name=key)
    layers = out.create_group("layers")
    layers.attrs.update(dict(src["layers"].attrs) if "layers" in src else {})
    if "encoding-type" not in layers.attrs:
        layers.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})


def _stored_bytes(obj) -> int:
    if isinstance(obj, h5py.Dataset):
        return int(obj.id.get_storage_size())
    return sum(_stored_bytes(child) for child in obj.values())


def _gene_blocks(elem, source, budget: int, scratch: Scratch, space: DiskSpace, fd):
    """Tasks returning consecutive gene blocks of one matrix in CSC form (genes as majors)."""
    if source.fmt == "csc":  # already gene-major: stream the columns as they are
        yield from _csc_columns(elem, budget, fd)
        return
    rows = _dense_rows(elem, source) if source.fmt == "dense" else _csr_rows(elem, fd)
    transpose = BucketTranspose(
        rows, source.shape[1], None, source.shape[0], budget, source.dtype, sorted_major=True
    )
    yield from transpose.tasks(scratch, space.claim)


def _csr_rows(grp: h5py.Group, fd):
    indptr = grp["indptr"][:].astype(np.int64)
    read_indices = SliceReader(grp["indices"], fd, np.int32)
    read_data = SliceReader(grp["data"], fd, grp["data"].dtype)

    def rows(step: int, with_values: bool) -> Iterator[tuple[int, RowChunk]]:
        for r0, r1 in plan_chunks(indptr, step):
            a, b = int(indptr[r0]), int(indptr[r1])
            data = read_data(a, b) if with_values else None
            yield r0, RowChunk(np.diff(indptr[r0 : r1 + 1]), read_indices(a, b), data)

    return rows


def _dense_rows(ds: h5py.Dataset, source):
    n_rows, n_cols = source.shape

    def rows(step: int, with_values: bool) -> Iterator[tuple[int, RowChunk]]:
        per_block = max(1, step // max(n_cols, 1))
        for r0 in range(0, n_rows, per_block):
            block = ds[r0 : min(r0 + per_block, n_rows)]
            r, c = np.nonzero(block)
            counts = np.bincount(r, minlength=block.shape[0]).astype(np.int64)
            yield r0, RowChunk(counts, c.astype(np.int32), block[r, c] if with_values else None)

    return rows


def _csc_columns(grp: h5py.Group, budget: int, fd):
    from kbagg.concat.matrix import canonical_chunk

    indptr = grp["indptr"][:].astype(np.int64)
    n_rows = int(grp.attrs["shape"][0])
    read_indices = SliceReader(grp["indices"], fd, np.int32)
    read_data = SliceReader(grp["data"], fd, grp["data"].dtype)
    for c0, c1 in plan_chunks(indptr, budget):
        a, b = int(indptr[c0]), int(indptr[c1])
        counts = np.diff(indptr[c0 : c1 + 1])
        indices, data = read_indices(a, b), read_data(a, b)
        yield lambda counts=counts, indices=indices, data=data: canonical_chunk(
            counts, indices, data, n_rows
        )


def _progress_bar(progress: bool, total: int):
    if not progress:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm

    return tqdm(total=total, unit="gene", unit_scale=True, desc="gene-major", file=sys.stderr)


class _NoBar:
    def update(self, n: int) -> None:
        pass
