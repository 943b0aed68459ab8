"""Memory-bounded on-disk concatenation of h5ad files along cells (obs).

The result equals ``anndata.concat({name: read_h5ad(path)}, join=..., label=...,
index_unique=..., merge="same")`` value for value (see README, "Aggregate", for the few
documented deviations), but matrices are streamed in row chunks, so memory stays bounded by
``chunk_entries`` plus the obs/var tables however large or numerous the inputs are. The
output is an h5ad or a zarr store, optionally compressed on worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from natsort import natsorted

from kbagg.atomic import atomic_output
from kbagg.concat.annot import (
    CoalescedVar,
    GeneAxis,
    SameVar,
    obs_metadata_columns,
    ordered_intersection,
    ordered_union,
    read_obs_metadata,
)
from kbagg.concat.inputs import InputError, InputScan, open_input, raw_fd, scan_input
from kbagg.concat.matrix import ColumnMap, Scratch, iter_csc, iter_csr, iter_dense
from kbagg.concat.options import DEFAULT_CHUNK_ENTRIES, ConcatOptions
from kbagg.concat.output import (
    Compression,
    DiskSpace,
    H5Array,
    Pipeline,
    SparseWriter,
    ZarrArray,
    describe_os_error,
)
from kbagg.errors import KbaggError

__all__ = [
    "DEFAULT_CHUNK_ENTRIES",
    "FORMATS",
    "ConcatError",
    "ConcatOptions",
    "DroppedLayersWarning",
    "concat_on_disk",
    "output_format",
]

FORMATS = ("h5ad", "zarr")


class ConcatError(KbaggError):
    """An expected failure (bad input, bad sample table, duplicate names): one-line message."""


class DroppedLayersWarning(UserWarning):
    """An inner join drops a layer that only some inputs have (as ``anndata.concat`` does)."""


@dataclass
class _Plan:
    scans: list[InputScan]
    axis: GeneAxis
    annotations: ad.AnnData  # obs, var and obsm of the result; no matrices
    keys: list[str]  # "X" and "layers/<name>", in output order


def concat_on_disk(
    inputs: Mapping[str, str | Path],
    output: str | Path,
    options: ConcatOptions | None = None,
    *,
    progress: bool = True,
    uns: Mapping | None = None,
    format: str | None = None,  # noqa: A002 - the natural name, as in anndata
    compression: str | None = None,
    threads: int = 1,
    gene_major_output: str | Path | None = None,
    **concat,
) -> Path:
    """Concatenate h5ad files (sample name -> path) into ``output`` (written atomically).

    Parameters
    ----------
    inputs
        Sample name -> input h5ad path, in output order.
    output
        The h5ad file or zarr store to write; it appears only once complete.
    options
        Join, label, obs names, obs metadata and chunk budget (`ConcatOptions`; None: the
        config schema's defaults).
    progress
        Show a tqdm progress bar on stderr.
    uns
        Nested dicts of strings, numbers and arrays written as the output's ``uns``
        (anndata.concat's default keeps none).
    format
        ``"h5ad"`` or ``"zarr"``; None: zarr when ``output`` ends in ``.zarr``, else h5ad.
    compression
        h5ad: ``"none"``, ``"gzip[:LEVEL]"`` (shuffle + deflate by zlib, level 1-9,
        default 4), ``"isal[:LEVEL]"`` (the same standard filters encoded by ISA-L, level
        0-3, default 1) or ``"lzf"``. zarr: ``"blosc[:LEVEL]"`` (Blosc: zstd after a byte
        shuffle, level 1-9, default 1), ``"zstd[:LEVEL]"`` (default 3), ``"gzip[:LEVEL]"`` or
        ``"none"``. None: ``"none"`` for h5ad, ``"blosc"`` for zarr.
    threads
        Worker threads that remap, sort and compress chunks while the calling thread reads
        and writes (1: everything on the calling thread).
    gene_major_output
        Also write the same content with X and layers as CSC (gene-major) h5ad to this path
        (see ``write_gene_major``).
    **concat
        Fields of `ConcatOptions` (``join``, ``label``, ``index_unique``, ``obs_metadata``,
        ``chunk_entries``) that replace those of ``options``.

    Returns
    -------
    The output path.

    Warns
    -----
    DroppedLayersWarning
        With ``join="inner"``, once per layer that only some inputs have (the join drops
        it, as ``anndata.concat`` does), naming the layer and the samples with and without it.
    """
    options = ConcatOptions.given(options, **concat)
    label, chunk_entries = options.label, options.chunk_entries
    if not inputs:
        raise ConcatError("no input files given")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    items = [(str(name), Path(path)) for name, path in inputs.items()]
    if dupes := _duplicates(name for name, _ in items):
        raise ConcatError("duplicate sample names: " + ", ".join(dupes))
    output = Path(output)
    fmt = output_format(output, format)
    try:
        codec = Compression.parse(compression, fmt)
    except ValueError as e:
        raise ConcatError(f"{output}: {e}") from e
    _refuse_output_among_inputs(output, items)
    if gene_major_output is not None:
        _refuse_output_among_inputs(Path(gene_major_output), items + [("output", output)])
    try:
        meta = (
            read_obs_metadata(options.obs_metadata, label)
            if options.obs_metadata is not None
            else None
        )
    except (OSError, ValueError) as e:
        raise ConcatError(str(e)) from e
    with atomic_output(output) as tmp:
        try:
            plan = _plan(items, options.join, label, options.index_unique, meta)
            plan.annotations.uns = dict(uns or {})
            space = DiskSpace(tmp)
            space.claim(_annotation_bytes(plan.annotations))
            _write_annotations(tmp, plan.annotations, fmt)
            del plan.annotations  # obs/var are on disk; keep only what the matrices need
            with _open_output(tmp, fmt) as out:
                _write_matrices(out, tmp, fmt, plan, chunk_entries, progress, space, codec, threads)
        except InputError as e:
            raise ConcatError(str(e)) from e
        except OSError as e:  # the output side: disk full, quota, I/O error
            raise ConcatError(f"{output}: cannot write the output: {describe_os_error(e)}") from e
    if gene_major_output is not None:
        from kbagg.concat.gene_major import write_gene_major

        if fmt != "h5ad":
            raise ConcatError(f"{gene_major_output}: the gene-major copy is made from an h5ad")
        write_gene_major(
            output,
            gene_major_output,
            chunk_entries=chunk_entries,
            compression=compression,
            threads=threads,
            progress=progress,
        )
    return output


def output_format(output: Path, format: str | None) -> str:  # noqa: A002
    """The output format: ``format`` if given, else zarr for a ``.zarr`` path, else h5ad."""
    if format is None:
        return "zarr" if Path(output).suffix.lower() == ".zarr" else "h5ad"
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return format


@contextlib.contextmanager
def _open_output(tmp: Path, fmt: str) -> Iterator:
    """The output written so far (obs, var...), open for adding the matrices."""
    if fmt == "zarr":
        import zarr

        yield zarr.open_group(tmp, mode="r+")
        # anndata reads the consolidated metadata in the root: it must list the matrices.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not part of the zarr v3 spec": anndata uses it
            zarr.consolidate_metadata(tmp)
    else:
        with h5py.File(tmp, "r+") as f:
            yield f


def _annotation_bytes(annotations: ad.AnnData) -> int:
    """An upper bound of what obs, var and obsm take on disk (their size in memory, twice)."""
    frames = (
        annotations.obs.memory_usage(deep=True).sum()
        + annotations.var.memory_usage(deep=True).sum()
    )
    arrays = sum(getattr(v, "nbytes", 0) for v in annotations.obsm.values())
    return 2 * int(frames + arrays)


def _refuse_output_among_inputs(output: Path, items: list[tuple[str, Path]]) -> None:
    """The output must not be an input (same path, or the same file under another name):
    renaming the result over it would destroy the input."""
    out_stat = output.stat() if output.exists() else None
    for name, path in items:
        same = output.resolve() == path.resolve()
        if not same and out_stat is not None and path.exists():
            in_stat = path.stat()
            same = (in_stat.st_dev, in_stat.st_ino) == (out_stat.st_dev, out_stat.st_ino)
        if same:
            raise ConcatError(
                f"{output}: the output is also input '{name}' ({path}); writing it would "
                "replace that input; choose another output path"
            )


def _plan(items, join, label, index_unique, meta) -> _Plan:
    """The metadata pass: one visit per input, matrices untouched."""
    axis = GeneAxis(join)
    var_merge = SameVar(axis) if join == "inner" else CoalescedVar(axis)
    scans, skeletons = [], {}
    for name, path in items:
        with open_input(path) as f:
            scan, annot = scan_input(name, path, f)
        try:
            codes = axis.add(annot.var.index)
        except ValueError as e:  # duplicate var names
            raise InputError(f"{path}: {e}") from e
        var_merge.add(annot.var, codes)
        scans.append(scan)
        skeletons[name] = ad.AnnData(obs=annot.obs, obsm=annot.obsm)
    var = var_merge.result(axis.merged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-unique obs names are reported below, clearly
        cells = ad.concat(skeletons, join=join, label=label, index_unique=index_unique, merge=None)
    _check_unique_obs_names(cells.obs_names, index_unique)
    obs = cells.obs
    if meta is not None:
        table, where = meta
        try:
            extra = obs_metadata_columns(
                table, where, [s.name for s in scans], [s.n_obs for s in scans], obs.columns
            )
        except ValueError as e:
            raise ConcatError(str(e)) from e
        obs = obs.assign(**extra)
    layer_lists = [s.layer_keys for s in scans]
    layers = ordered_intersection(layer_lists) if join == "inner" else ordered_union(layer_lists)
    for layer in ordered_union(layer_lists):
        if layer not in layers:
            warnings.warn(_dropped_layer_message(layer, scans), DroppedLayersWarning, stacklevel=3)
    annotations = ad.AnnData(obs=obs, var=var, obsm=dict(cells.obsm))
    return _Plan(scans, axis, annotations, ["X"] + [f"layers/{k}" for k in layers])


def _dropped_layer_message(layer: str, scans: list[InputScan]) -> str:
    having = [s.name for s in scans if layer in s.layer_keys]
    missing = [s.name for s in scans if layer not in s.layer_keys]
    return (
        f"layer '{layer}' is in {len(having)} of {len(scans)} samples ({_some(having)}) but "
        f"not in {_some(missing)}: the inner join drops it (join 'outer' keeps it, filled with "
        "zeros)"
    )


def _some(names: list[str], shown: int = 3) -> str:
    text = ", ".join(f"'{n}'" for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _duplicates(names) -> list[str]:
    s = pd.Series(list(names))
    return s[s.duplicated()].unique().tolist()


def _check_unique_obs_names(names: pd.Index, index_unique: str | None) -> None:
    if names.is_unique:
        return
    dupes = names[names.duplicated()].unique()
    example = ", ".join(map(str, dupes[:3]))
    hint = (
        "pass --index-unique SEP (e.g. '-') to append the sample name to each barcode"
        if index_unique is None
        else "an input already has duplicate barcodes"
    )
    raise ConcatError(f"{len(dupes)} duplicate obs names in the result (e.g. {example}); {hint}")


def _write_annotations(tmp: Path, annotations: ad.AnnData, fmt: str) -> None:
    """obs, var, obsm (and empty layers/uns groups) via anndata's own writer."""
    annotations.strings_to_categoricals()  # what write_h5ad does anyway
    for df in (annotations.obs, annotations.var):
        _categorize_strings_with_missing(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "zarr":
            annotations.write_zarr(tmp)
        else:
            annotations.write_h5ad(tmp)


def _categorize_strings_with_missing(df: pd.DataFrame) -> None:
    """Object columns of strings and NaN (an outer join of a string column that some inputs
    lack) cannot be written by anndata; store them as categoricals, as it would if there
    were repeated values."""
    for col in df.columns:
        values = df[col]
        if values.dtype != object or not values.isna().any():
            continue
        present = values[values.notna()]
        if all(isinstance(v, str) for v in present):
            df[col] = pd.Categorical(values, categories=natsorted(present.unique()))


def _write_matrices(
    out, tmp: Path, fmt, plan: _Plan, budget: int, progress, space, codec, threads: int
) -> None:
    scans, n_out = plan.scans, len(plan.axis.merged)
    n_rows = sum(s.n_obs for s in scans)
    shared: dict[int, ColumnMap] = {}  # inputs with the same gene list share one lookup
    maps = []
    for lut in plan.axis.column_maps():
        if id(lut) not in shared:
            shared[id(lut)] = ColumnMap(lut, n_out)
        maps.append(shared[id(lut)])
    pipeline = Pipeline(threads)
    array_type = ZarrArray if fmt == "zarr" else H5Array
    scratch = Scratch(Path(f"{tmp}.csc"))  # for CSC inputs, created on first use
    try:
        writers = {}
        for key in plan.keys:
            sources = [s.matrices.get(key) for s in scans]
            present = [s for s in sources if s is not None]
            parent, name = (out, "X") if key == "X" else (out["layers"], key[len("layers/") :])
            writers[key] = SparseWriter(
                parent,
                name,
                (n_rows, n_out),
                np.result_type(*[s.dtype for s in present]),
                sum(s.nnz for s in present),
                array_type=array_type,
                compression=codec,
                space=space,
                pipeline=pipeline,
            )
        with _progress_bar(progress, n_rows * len(writers)) as bar:
            for scan, cmap in zip(scans, maps, strict=True):
                _stream_input(scan, cmap, writers, budget, scratch, bar, pipeline, space)
        for w in writers.values():
            w.close()
    finally:
        pipeline.close()
        scratch.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _progress_bar(progress: bool, total: int):
    if not progress:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm  # only when shown: importing it costs ~40 ms

    return tqdm(total=total, unit="row", unit_scale=True, desc="concat", file=sys.stderr)


def _stream_input(
    scan: InputScan, cmap: ColumnMap, writers, budget, scratch, bar, pipeline, space
) -> None:
    # CSR and dense tasks share the budget: two queued or running per worker (so that a
    # worker finishing one finds the next while the calling thread writes; with one, the
    # shuffled layout took 6-15% longer at 2 threads) plus the one being written.
    threads = pipeline.threads
    ahead = 2 * threads
    task_budget = max(1, budget // (ahead + 1)) if threads > 1 else budget
    with open_input(scan.path) as f, raw_fd(scan.path) as fd:
        for key, writer in writers.items():
            src = scan.matrices.get(key)
            if src is None:
                writer.append_empty(scan.n_obs)
                bar.update(scan.n_obs)
                continue
            dtype, lookahead = writer.dtype, ahead
            if src.fmt == "csr":
                tasks = iter_csr(f[key], src, cmap, task_budget, dtype, fd)
            elif src.fmt == "csc":
                # Blocks of half the budget, one converted while the next is read.
                tasks = iter_csc(f[key], src, cmap, budget, dtype, scratch, space.claim, fd)
                lookahead = 1
            else:
                tasks = iter_dense(f[key], src, cmap, task_budget, dtype)
            chunks = pipeline.ordered(tasks, lookahead)
            for chunk in _read_errors_named(chunks, scan, key):
                writer.append(chunk)  # errors here are the output's
                bar.update(len(chunk.counts))


def _read_errors_named(chunks: Iterator, scan: InputScan, key: str) -> Iterator:
    """The chunks; a failure to read one becomes an InputError naming the file and matrix.
    A full disk (the CSC scratch file) stays an output error."""
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except (OSError, KeyError, ValueError) as e:
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            raise InputError(f"{scan.path}: cannot read {key} ({e})") from e
        yield chunk
