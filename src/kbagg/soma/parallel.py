"""A SOMA store built by parallel writers: reserve once, write each sample in its own job,
finish once.

1. ``update_store(..., reserve=True)`` (under the store's lock) registers the new samples,
   writes their obs rows and the new var rows, resizes the X arrays, and journals each new
   sample as *reserved* with its ``soma_joinid`` range.
2. `write_sample` (no lock; one job per sample, any number at once) writes one reserved
   sample's X layers at its joinids. It first deletes whatever its range holds, so a rerun of
   a killed writer starts clean; the ranges are disjoint, so this is safe beside other
   writers. It never writes the experiment's metadata. It returns the non-zero count per
   layer (the marker a workflow job writes).
3. `finish_store` (under the lock) checks that every reserved sample's range holds the
   non-zeros its marker names, journals it as committed, and consolidates.

In a store of layout ``two_arrays`` (`kbagg.soma.layouts`) a layer is two arrays: the reserve
creates both, `write_sample` writes both and `finish_store` checks both against the marker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tiledbsoma as soma

from kbagg.atomic import atomic_output
from kbagg.schema import schema_default
from kbagg.soma.context import read_context
from kbagg.soma.fragments import consolidate, fragment_counts, schema_counts
from kbagg.soma.journal import Journal, read_journal, write_journal
from kbagg.soma.layouts import check_layout, layer_arrays
from kbagg.soma.lock import VAR_ID, Log, StoreError, stderr_log, store_lock
from kbagg.soma.matrix import write_matrix
from kbagg.soma.samples import load_matrices, read_samples

__all__ = ["finish_store", "reserved_samples", "write_sample"]


def _path(uri: str | Path) -> Path:
    return Path(str(uri).removeprefix("file://")).absolute()


def reserved_samples(uri: str | Path) -> dict[str, list[int]]:
    """The samples of the store at ``uri`` still reserved (not committed): name -> joinid
    range [first, end).

    Parameters
    ----------
    uri
        The store.
    """
    journal = read_journal(str(_path(uri)))
    if journal is None:
        return {}
    return {n: e.obs_joinids for n, e in journal.samples.items() if e.state == "reserved"}


def _check_layout(uri: str, journal: Journal, layout: str | None) -> str:
    """The store's layout (its journal's); StoreError if ``layout`` is given and differs."""
    if layout is not None and check_layout(layout) != journal.layout:
        raise StoreError(
            f"{uri}: the store was reserved with layout {journal.layout!r}, not {layout!r}; "
            "reserve again (update_store) with the layout wanted"
        )
    return journal.layout


def _range_nnz(array: soma.SparseNDArray, start: int, end: int) -> int:
    if end <= start:
        return 0
    return sum(t.num_rows for t in array.read((slice(start, end - 1),)).tables())


def write_sample(
    uri: str | Path,
    sample: str,
    *,
    marker_path: str | Path | None = None,
    measurement: str | None = None,
    layout: str | None = None,
    log: Log | None = None,
) -> dict[str, int]:
    """Write the X layers of one reserved sample at its reserved joinids (no lock).

    Idempotent: the sample's joinid range is emptied in every X array before it is written,
    so a rerun after a killed writer leaves exactly one copy.

    Parameters
    ----------
    uri
        The store, reserved by ``update_store(..., reserve=True)``.
    sample
        The sample's name, as journaled; its h5ad is the path the journal names.
    marker_path
        JSON written (atomically) when done: the sample, its joinid range and the non-zero
        count per layer (what `finish_store` checks).
    measurement
        The measurement holding X; None: the journal's.
    layout
        The store layout the caller expects (``aggregate.soma.layout``); None: the journal's.
        Each layer is written to every array of the layout (`kbagg.soma.layouts`); a layout
        other than the journal's is a StoreError.
    log
        Called with each log line; defaults to printing to stderr.

    Returns
    -------
    dict
        Layer name -> non-zeros written (to each of its arrays).
    """
    log = log or stderr_log
    uri = str(_path(uri))
    journal = read_journal(uri)
    entry = journal.samples.get(sample) if journal else None
    if entry is None:
        raise StoreError(f"{uri}: sample {sample} is not in the store's journal; reserve it first")
    if entry.state != "reserved":
        raise StoreError(f"{uri}: sample {sample} is {entry.state}, not reserved; nothing to write")
    measurement = measurement or journal.measurement
    layout = _check_layout(uri, journal, layout)
    start, end = entry.obs_joinids
    (found,) = read_samples(
        {sample: entry.path},
        {sample: entry.sha256},
        None,
        journal.label,
        journal.index_unique,
        entry.run,
    )
    if len(found.obs) != end - start:
        raise StoreError(
            f"{entry.path}: sample {sample} has {len(found.obs)} cells, the store reserved "
            f"{end - start}"
        )
    with soma.Experiment.open(uri, context=read_context()) as exp:
        ms = exp.ms[measurement]
        var = ms.var.read(column_names=["soma_joinid", VAR_ID]).concat().to_pandas()
        arrays = {name: ms.X[name].uri for name in ms.X}
        dtypes = {
            name: np.dtype(ms.X[name].schema.field("soma_data").type.to_pandas_dtype())
            for name in ms.X
        }
    missing = [a for layer in found.layers for a in layer_arrays(layer, layout) if a not in arrays]
    if missing:
        raise StoreError(f"{uri}: no X layer {', '.join(missing)} for sample {sample}")
    cols = var.set_index(VAR_ID)["soma_joinid"].reindex(found.var.index)
    if cols.isna().any():
        gene = cols.index[cols.isna()][0]
        raise StoreError(f"{uri}: gene {gene} of sample {sample} is not in var; reserve again")
    cols = cols.to_numpy(dtype=np.int64)
    # Empty the range first: what a killed writer of this sample left is removed.
    for name in arrays.values():
        with soma.SparseNDArray.open(name, "d") as arr:
            if end > start:
                arr.delete_cells((slice(start, end - 1),))
    time.sleep(0.005)  # a write in the same millisecond as the delete would be deleted too
    nnz = {}
    for layer, matrix in load_matrices(found, dtypes).items():
        for name in layer_arrays(layer, layout):
            with soma.SparseNDArray.open(arrays[name], "w") as arr:
                nnz[layer] = write_matrix(arr, matrix, start, cols)
    log(f"soma: wrote sample {sample} ({end - start} cells, {nnz.get('counts', 0)} non-zeros)")
    if marker_path is not None:
        with atomic_output(marker_path) as tmp:
            record = {"sample": sample, "obs_joinids": [start, end], "nnz": nnz}
            Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    return nnz


def finish_store(
    uri: str | Path,
    markers: Mapping[str, Mapping[str, int] | str | Path],
    *,
    manifest_path: str | Path | None = None,
    lock_timeout_s: float | None = None,
    max_fragments: int | None = schema_default("aggregate", "soma", "max_fragments"),
    layout: str | None = None,
    log: Log | None = None,
) -> dict:
    """Commit the reserved samples whose X layers were written: check each range's non-zeros
    against its writer's marker, journal it as committed, then consolidate (under the lock).

    Parameters
    ----------
    uri
        The store.
    markers
        Sample name -> its `write_sample` result (layer -> non-zeros) or marker file. Every
        reserved sample must be named.
    manifest_path
        JSON written (atomically) when done: the samples committed and the fragment counts.
    lock_timeout_s
        Seconds to wait for the lock; None waits indefinitely.
    max_fragments
        Consolidate arrays holding more fragments than this (see ``update_store``); None
        never consolidates.
    layout
        The store layout the caller expects; None: the journal's. Every array of each layer
        (both of layout ``two_arrays``) must hold the marker's non-zeros; a layout other
        than the journal's is a StoreError.
    log
        Called with each log line; defaults to printing to stderr.

    Returns
    -------
    dict
        The manifest.
    """
    log = log or stderr_log
    path = _path(uri)
    uri = str(path)
    with store_lock(path, lock_timeout_s, log):
        journal: Journal | None = read_journal(uri)
        if journal is None:
            raise StoreError(f"{uri}: no kbagg journal; nothing to finish")
        layout = _check_layout(uri, journal, layout)
        reserved = {n: e for n, e in journal.samples.items() if e.state == "reserved"}
        unwritten = [n for n in reserved if n not in markers]
        if unwritten:
            raise StoreError(f"{uri}: sample {unwritten[0]} is reserved but has no writer marker")
        with soma.Experiment.open(uri, context=read_context()) as exp:
            X = exp.ms[journal.measurement].X
            for name, entry in reserved.items():
                marker = markers[name]
                if not isinstance(marker, Mapping):
                    marker = json.loads(Path(marker).read_text())["nnz"]
                start, end = entry.obs_joinids
                for layer, want in marker.items():
                    for array in layer_arrays(layer, layout):
                        got = _range_nnz(X[array], start, end) if array in X else 0
                        if got != want:
                            raise StoreError(
                                f"{uri}: sample {name} layer {array} holds {got} non-zeros, "
                                f"its writer wrote {want}; run its write again"
                            )
        for entry in reserved.values():
            entry.state = "committed"
        if reserved:
            write_journal(uri, journal)
        log(f"soma: committed {len(reserved)} sample(s) in {uri}")
        consolidated = consolidate(path, max_fragments, log)
        manifest = {
            "store": uri,
            "committed": sorted(reserved),
            "consolidated": consolidated,
            "fragments": fragment_counts(path),
            "schemas": schema_counts(path),
        }
        if manifest_path is not None:
            with atomic_output(manifest_path) as tmp:
                Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
