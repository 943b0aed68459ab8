"""The samples as the SOMA store will hold them, their matrices (`load_matrices`), and the
column types it compares.

Each input's obs and var are read without its matrices and given the aggregate's shape:
obs_ids ``<barcode><index_unique><sample>``, the label and sample-table columns as
categoricals (categories over the whole sample set, as in the h5ad aggregate), the run
column; var indexed by ``gene_id``. Column types are compared as tiledbsoma.io would store
them, a categorical and a plain column of the same values counting as one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from anndata.io import read_elem
from tiledbsoma.io import conversions

from kbagg.checksum import sha256
from kbagg.concat.annot import read_obs_metadata
from kbagg.concat.inputs import open_input, scan_input
from kbagg.soma.lock import COUNTS_LAYER, OBS_ID, RUN_COLUMN, VAR_ID, StoreError


@dataclass
class Sample:
    """One input as the store will hold it; matrices are read only when it is written."""

    name: str
    path: Path
    sha256: str
    metadata: dict[str, str | None]
    obs: pd.DataFrame  # index obs_id; input columns, label, sample-table columns, run
    var: pd.DataFrame  # index gene_id
    layers: dict[str, str]  # store layer name -> h5ad key ("X" or "layers/<name>")
    dtypes: dict[str, np.dtype] = field(default_factory=dict)  # store layer -> input dtype

    @property
    def fingerprint(self) -> dict:
        return {"sha256": self.sha256, "metadata": self.metadata}


def read_samples(
    samples: Mapping[str, str | Path],
    checksums: Mapping[str, str] | None,
    obs_metadata,
    label: str,
    index_unique: str | None,
    run_id: str,
) -> list[Sample]:
    """obs/var of every input as the store will hold them (no matrix is read)."""
    names = [str(n) for n in samples]
    meta = None
    if obs_metadata is not None:
        try:
            meta, where = read_obs_metadata(obs_metadata, label)
        except (OSError, ValueError) as e:
            raise StoreError(str(e)) from e
        missing = [n for n in names if n not in meta.index]
        if missing:
            raise StoreError(f"{where}: no row for sample(s) {', '.join(missing)}")
        meta = meta.loc[names]
        # Categories over the whole set, as the aggregate has them (sorted, like pandas).
        categories = {c: pd.Categorical(meta[c].to_numpy()).categories for c in meta.columns}
    out = []
    for name, path in zip(names, samples.values(), strict=True):
        path = Path(path)
        with open_input(path) as f:
            scan, annot = scan_input(name, path, f)
        obs, var = annot.obs.copy(), annot.var.copy()
        for reserved in (label, RUN_COLUMN, OBS_ID):
            if reserved in obs.columns:
                raise StoreError(f"{path}: obs already has a column {reserved!r}")
        if index_unique:
            obs.index = obs.index.astype(str) + index_unique + name
        obs.index = pd.Index(obs.index.astype(str), name=OBS_ID)
        obs[label] = pd.Categorical([name] * len(obs), categories=names)
        row: dict[str, str | None] = {}
        if meta is not None:
            for col in meta.columns:
                if col in obs.columns:
                    raise StoreError(f"{path}: sample-table column {col!r} already exists in obs")
                value = meta.at[name, col]
                row[str(col)] = None if pd.isna(value) else str(value)
                obs[col] = pd.Categorical([value] * len(obs), categories=categories[col])
        obs[RUN_COLUMN] = pd.Categorical([run_id] * len(obs))
        if VAR_ID in var.columns:
            raise StoreError(f"{path}: var has a column {VAR_ID!r} besides its index")
        var.index = pd.Index(var.index.astype(str), name=VAR_ID)
        layers = {COUNTS_LAYER: "X"}
        for key in scan.matrices:
            if key != "X":
                layer = key.removeprefix("layers/")
                if layer == COUNTS_LAYER:
                    raise StoreError(f"{path}: a layer named {COUNTS_LAYER!r} clashes with X")
                layers[layer] = key
        dtypes = {layer: scan.matrices[key].dtype for layer, key in layers.items()}
        digest = (checksums or {}).get(name) or sha256(path)
        out.append(Sample(name, path, digest, row, obs, var, layers, dtypes))
    return out


def load_matrices(sample: Sample, dtypes: Mapping[str, np.dtype]) -> dict:
    """The sample's matrices, read from its h5ad as the store's layers hold them.

    Parameters
    ----------
    sample
        The sample (`read_samples`).
    dtypes
        Store layer -> the dtype its array holds; each matrix is cast to it.

    Returns
    -------
    dict
        Store layer -> matrix (sparse matrices with one index dtype for indices and indptr).
    """
    out = {}
    with h5py.File(sample.path, "r") as f:
        for layer, key in sample.layers.items():
            matrix = read_elem(f[key])
            target = dtypes[layer]
            if matrix.dtype != target:
                matrix = matrix.astype(target)
            if sp.issparse(matrix) and matrix.indices.dtype != matrix.indptr.dtype:
                # h5ad files often pair int32 indices with int64 indptr; scipy then slices
                # (tiledbsoma's chunking) 3x slower and cannot make COO of it at all.
                matrix.indices = matrix.indices.astype(matrix.indptr.dtype)
            out[layer] = matrix
    return out


def _arrow_schema(df: pd.DataFrame, id_name: str) -> pa.Schema:
    """The schema tiledbsoma.io gives this dataframe when it ingests it."""
    prepared = conversions.obs_or_var_to_tiledb_supported_array_type(df)
    prepared.index = df.index
    return conversions.df_to_arrow_schema(prepared, id_name)


def _kind(arrow_type: pa.DataType) -> str:
    """A column's value type, whether stored as a dictionary (categorical) or not."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    text = str(arrow_type)
    return {"large_string": "string", "large_binary": "binary", "large_utf8": "string"}.get(
        text, text
    )


def column_kinds(schema: pa.Schema) -> dict[str, str]:
    return {f.name: _kind(f.type) for f in schema if f.name != "soma_joinid"}


def union_kinds(frames: list[tuple[str, pd.DataFrame]], id_name: str, axis: str) -> dict:
    """Column -> kind over all samples; StoreError when two samples disagree on a type."""
    kinds: dict[str, tuple[str, str]] = {}
    for name, df in frames:
        for col, kind in column_kinds(_arrow_schema(df, id_name)).items():
            seen = kinds.setdefault(col, (kind, name))
            if seen[0] != kind:
                raise StoreError(
                    f"{axis} column {col!r} is {seen[0]} in sample {seen[1]} but {kind} in "
                    f"sample {name}; make the inputs agree"
                )
    return {col: kind for col, (kind, _) in kinds.items()}


def _null_column(kind: str, n: int, column: str, where: str):
    """A column of n missing values that ingests as ``kind``."""
    if kind == "string":
        return pd.Categorical([None] * n)
    if kind == "bool":
        return pd.array([None] * n, dtype="boolean")
    if kind in ("float", "double", "halffloat"):
        return np.full(n, np.nan, dtype={"float": np.float32}.get(kind, np.float64))
    if kind.startswith(("int", "uint")):
        return pd.array([None] * n, dtype=kind.replace("u", "U").replace("i", "I", 1))
    raise StoreError(f"{where}: cannot fill {column!r} ({kind}) with missing values")


def conform(df: pd.DataFrame, target: dict[str, str], id_name: str, where: str) -> pd.DataFrame:
    """Add the target's columns df lacks, as missing values, in the target's order."""
    df = df.copy()
    for col, kind in target.items():
        if col != id_name and col not in df.columns:
            df[col] = _null_column(kind, len(df), col, where)
    return df[[c for c in target if c != id_name]]
