"""Memory-bounded on-disk concatenation of h5ad files along cells (obs).

The result equals ``anndata.concat({name: read_h5ad(path)}, join=..., label=...,
index_unique=..., merge="same")`` value for value (see docs_fragments/concat.md for the few
documented deviations), but matrices are streamed in row chunks, so memory stays bounded by
``chunk_entries`` plus the obs/var tables however large or numerous the inputs are.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from natsort import natsorted

from kbagg.aggregate.annot import (
    CoalescedVar,
    GeneAxis,
    SameVar,
    obs_metadata_columns,
    ordered_intersection,
    ordered_union,
    read_obs_metadata,
)
from kbagg.aggregate.inputs import InputError, InputScan, open_input, scan_input
from kbagg.aggregate.matrix import (
    ColumnMap,
    CsrWriter,
    DiskSpace,
    describe_os_error,
    iter_csc,
    iter_csr,
    iter_dense,
)
from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError

__all__ = ["DEFAULT_CHUNK_ENTRIES", "ConcatError", "concat_on_disk"]

# Stored entries (non-zeros) per chunk: 2**21 entries are 16 MB of float32 values + int32
# column indices (~64 MB peak working set in the worst path); larger chunks are no faster,
# as the benchmark shows.
DEFAULT_CHUNK_ENTRIES = 1 << 21


class ConcatError(KbaggError):
    """An expected failure (bad input, bad sample table, duplicate names): one-line message."""


@dataclass
class _Plan:
    scans: list[InputScan]
    axis: GeneAxis
    annotations: ad.AnnData  # obs, var and obsm of the result; no matrices
    keys: list[str]  # "X" and "layers/<name>", in output order


def concat_on_disk(
    inputs: Mapping[str, str | Path],
    output: str | Path,
    *,
    join: str = "inner",
    label: str | None = "sample",
    index_unique: str | None = "-",
    obs_metadata: str | Path | pd.DataFrame | None = None,
    chunk_entries: int = DEFAULT_CHUNK_ENTRIES,
    progress: bool = True,
    uns: Mapping | None = None,
) -> Path:
    """Concatenate h5ad files (sample name -> path) into ``output`` (written atomically).

    ``index_unique`` of None or "" keeps the barcodes as they are; ``obs_metadata`` is a
    TSV path or DataFrame whose ``label`` (else ``sample``) column names the samples and
    whose other columns become categorical obs columns. ``uns`` (nested dicts of strings,
    numbers and arrays) is written as the output's ``uns``; anndata.concat's default keeps
    none.
    """
    if join not in ("inner", "outer"):
        raise ValueError(f"join must be 'inner' or 'outer', got {join!r}")
    if not inputs:
        raise ConcatError("no input files given")
    if chunk_entries < 1:
        raise ValueError("chunk_entries must be at least 1")
    items = [(str(name), Path(path)) for name, path in inputs.items()]
    if dupes := _duplicates(name for name, _ in items):
        raise ConcatError("duplicate sample names: " + ", ".join(dupes))
    output = Path(output)
    _refuse_output_among_inputs(output, items)
    try:
        meta = read_obs_metadata(obs_metadata, label) if obs_metadata is not None else None
    except (OSError, ValueError) as e:
        raise ConcatError(str(e)) from e
    with atomic_output(output) as tmp:
        try:
            plan = _plan(items, join, label, index_unique or None, meta)
            plan.annotations.uns = dict(uns or {})
            space = DiskSpace(tmp)
            space.claim(_annotation_bytes(plan.annotations))
            _write_annotations(tmp, plan.annotations)
            del plan.annotations  # obs/var are on disk; keep only what the matrices need
            _write_matrices(tmp, plan, chunk_entries, progress, space)
        except InputError as e:
            raise ConcatError(str(e)) from e
        except OSError as e:  # the output side: disk full, quota, I/O error
            raise ConcatError(f"{output}: cannot write the output: {describe_os_error(e)}") from e
    return output


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
    annotations = ad.AnnData(obs=obs, var=var, obsm=dict(cells.obsm))
    return _Plan(scans, axis, annotations, ["X"] + [f"layers/{k}" for k in layers])


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


def _write_annotations(tmp: Path, annotations: ad.AnnData) -> None:
    """obs, var, obsm (and empty layers/uns groups) via anndata's own writer."""
    annotations.strings_to_categoricals()  # what write_h5ad does anyway
    for df in (annotations.obs, annotations.var):
        _categorize_strings_with_missing(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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


def _write_matrices(tmp: Path, plan: _Plan, budget: int, progress: bool, space: DiskSpace) -> None:
    scans, n_out = plan.scans, len(plan.axis.merged)
    n_rows = sum(s.n_obs for s in scans)
    shared: dict[int, ColumnMap] = {}  # inputs with the same gene list share one lookup
    maps = []
    for lut in plan.axis.column_maps():
        if id(lut) not in shared:
            shared[id(lut)] = ColumnMap(lut, n_out)
        maps.append(shared[id(lut)])
    with h5py.File(tmp, "r+") as out:
        writers = {
            key: _writer(
                out, key, [s.matrices.get(key) for s in scans], maps, (n_rows, n_out), space
            )
            for key in plan.keys
        }
        with _progress_bar(progress, n_rows * len(writers)) as bar:
            for scan, cmap in zip(scans, maps, strict=True):
                _stream_input(scan, cmap, writers, budget, tmp, bar)
        for w in writers.values():
            w.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _progress_bar(progress: bool, total: int):
    if not progress:
        return contextlib.nullcontext(_NoBar())
    from tqdm import tqdm  # only when shown: importing it costs ~40 ms

    return tqdm(total=total, unit="row", unit_scale=True, desc="concat", file=sys.stderr)


def _writer(out: h5py.File, key: str, sources, maps, shape, space: DiskSpace) -> CsrWriter:
    present = [(s, m) for s, m in zip(sources, maps, strict=True) if s is not None]
    dtype = np.result_type(*[s.dtype for s, _ in present])
    nnz = sum(s.nnz for s, _ in present)
    parent, name = (out, "X") if key == "X" else (out["layers"], key.removeprefix("layers/"))
    return CsrWriter(parent, name, shape, dtype, nnz, space)


def _stream_input(scan: InputScan, cmap: ColumnMap, writers, budget, tmp: Path, bar) -> None:
    with open_input(scan.path) as f:
        for key, writer in writers.items():
            src = scan.matrices.get(key)
            if src is None:
                writer.append_empty_rows(scan.n_obs)
                bar.update(scan.n_obs)
                continue
            dtype = writer.data.dtype
            elem = f[key]
            try:
                if src.fmt == "csr":
                    chunks = iter_csr(elem, src, cmap, budget, dtype)
                elif src.fmt == "csc":
                    chunks = iter_csc(elem, src, cmap, budget, dtype, Path(f"{tmp}.csc"))
                else:
                    chunks = iter_dense(elem, src, cmap, budget, dtype)
                for chunk in chunks:
                    writer.append(chunk)
                    bar.update(len(chunk.counts))
            except (OSError, KeyError, ValueError) as e:
                raise InputError(f"{scan.path}: cannot read {key} ({e})") from e
