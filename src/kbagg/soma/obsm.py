"""Adding a per-cell matrix (an embedding, a QC table) to a SOMA store's obsm."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import tiledbsoma as soma

from kbagg.soma.context import read_context
from kbagg.soma.lock import OBS_ID, Log, StoreError, stderr_log, store_lock

__all__ = ["add_obsm"]


def add_obsm(
    uri: str | Path,
    key: str,
    values,
    obs_ids: Sequence[str],
    *,
    measurement: str = "RNA",
    columns: Sequence[str] | None = None,
    lock_timeout_s: float | None = None,
    log: Log | None = None,
) -> int:
    """Add a per-cell matrix (an embedding, a QC table) to ``obsm[key]`` for the named cells.

    Written as a sparse array ``ms[measurement].obsm[key]`` of shape (cells, columns): rows
    of cells not named stay empty (``to_anndata`` reads them as zeros). Adding to an
    existing key writes (or overwrites) the named cells' rows; the width must match. A
    rebuild of the store starts without obsm: add it again after one.

    Parameters
    ----------
    uri
        The store.
    key
        obsm key, e.g. ``X_umap``.
    values
        Numeric 2-D array (or DataFrame) with one row per entry of ``obs_ids``.
    obs_ids
        The cells, by the store's ``obs_id``; every one must be in the store.
    measurement
        The measurement whose obsm receives the matrix.
    columns
        Column names, kept in the array's metadata (``kbagg_columns``); a DataFrame's own.
    lock_timeout_s
        As for `update_store`: the store's lock is held while writing.
    log
        Called with each log line; defaults to printing to stderr.

    Returns
    -------
    int
        The number of cells written.
    """
    log = log or stderr_log
    if isinstance(values, pd.DataFrame):
        columns = list(map(str, values.columns)) if columns is None else columns
        values = values.to_numpy()
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    ids = pd.Index(list(map(str, obs_ids)))
    if values.ndim != 2 or values.shape[0] != len(ids):
        raise StoreError(
            f"obsm {key!r}: {values.shape[0]} rows of values for {len(ids)} obs_ids"
            if values.ndim == 2
            else f"obsm {key!r}: values must be 2-d, got {values.ndim}-d"
        )
    if values.dtype.kind not in "iuf":
        raise StoreError(f"obsm {key!r}: values must be numeric, got {values.dtype}")
    if not ids.is_unique:
        raise StoreError(f"obsm {key!r}: obs_ids repeat, e.g. {ids[ids.duplicated()][0]}")
    if columns is not None and len(columns) != values.shape[1]:
        raise StoreError(f"obsm {key!r}: {len(columns)} column names for {values.shape[1]}")
    uri = str(uri)
    if not Path(uri).exists():
        raise StoreError(f"{uri}: no store here")
    with store_lock(uri, lock_timeout_s, log):
        with soma.Experiment.open(uri, context=read_context()) as exp:
            if measurement not in exp.ms:
                raise StoreError(f"{uri}: no measurement {measurement!r}")
            table = exp.obs.read(column_names=["soma_joinid", OBS_ID]).concat().to_pandas()
            n_rows = int(exp.obs.domain[0][1]) + 1
        where = pd.Index(table[OBS_ID]).get_indexer(ids)
        unknown = ids[where < 0]
        if len(unknown):
            raise StoreError(
                f"{uri}: {len(unknown)} of {len(ids)} obs_ids are not in the store (e.g. "
                f"{', '.join(unknown[:5])}); its obs_ids look like {table[OBS_ID].iloc[0]}"
            )
        joinids = table["soma_joinid"].to_numpy()[where]
        _write_obsm(uri, measurement, key, values, joinids, n_rows, columns)
    log(f"soma: wrote obsm[{key!r}] ({values.shape[1]} columns) for {len(ids)} cells of {uri}")
    return len(ids)


def _write_obsm(uri, measurement, key, values, joinids, n_rows, columns) -> None:
    n, k = values.shape
    arrow_type = pa.from_numpy_dtype(values.dtype)
    with soma.Experiment.open(uri, "w") as exp:
        ms = exp.ms[measurement]
        obsm = ms["obsm"] if "obsm" in ms else ms.add_new_collection("obsm")
        if key in obsm:
            arr = obsm[key]
            width = arr.shape[1]
            stored = arr.schema.field("soma_data").type
            if width != k or stored != arrow_type:
                raise StoreError(
                    f"{uri}: obsm {key!r} exists with {width} columns of {stored}; these "
                    f"values have {k} of {arrow_type}: choose another key"
                )
        else:
            arr = obsm.add_new_sparse_ndarray(key, type=arrow_type, shape=(n_rows, k))
        coo = pa.Table.from_pydict(
            {
                "soma_dim_0": np.repeat(joinids.astype(np.int64), k),
                "soma_dim_1": np.tile(np.arange(k, dtype=np.int64), n),
                "soma_data": values.reshape(-1),
            }
        )
        arr.write(coo)
        if columns is not None:
            arr.metadata["kbagg_columns"] = json.dumps(list(map(str, columns)))
