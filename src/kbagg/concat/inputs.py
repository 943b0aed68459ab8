"""Reading what the concatenation needs from one input h5ad, without touching its matrices."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem

from kbagg.concat.matrix import MatrixSource, describe_matrix
from kbagg.errors import KbaggError


class InputError(KbaggError):
    """A problem with one input file; the message names the file."""


@dataclass
class InputScan:
    """The per-input facts the matrix pass needs (obs/var are folded elsewhere)."""

    name: str
    path: Path
    n_obs: int
    n_vars: int
    matrices: dict[str, MatrixSource]  # "X" and "layers/<name>"

    @property
    def layer_keys(self) -> list[str]:
        return [k.removeprefix("layers/") for k in self.matrices if k != "X"]


@dataclass
class InputAnnotations:
    obs: pd.DataFrame
    obsm: dict
    var: pd.DataFrame


@contextmanager
def open_input(path: Path) -> Iterator[h5py.File]:
    """Open an input h5ad read-only, turning HDF5 errors into InputError naming the file."""
    if not path.exists():
        raise InputError(f"{path}: input file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not a readable h5ad/HDF5 file ({e})") from e
    with f:
        yield f


@contextmanager
def raw_fd(path: Path) -> Iterator[int | None]:
    """A plain read-only descriptor of an input, for ``pread`` of its contiguous datasets
    beside h5py's handle (None if it cannot be opened: h5py then reads everything)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def scan_input(name: str, path: Path, f: h5py.File) -> tuple[InputScan, InputAnnotations]:
    """Read obs, obsm and var and describe X and the layers of an open input.

    Unique var names are checked later, when the genes are encoded (``GeneAxis.add``)."""
    try:
        for key in ("obs", "var", "X"):
            if key not in f:
                raise InputError(f"{path}: not an AnnData h5ad file (no '{key}')")
        obs, var = read_dataframe(f["obs"]), read_dataframe(f["var"])
        obsm = read_elem(f["obsm"]) if "obsm" in f else {}
        matrices = {"X": describe_matrix(f["X"])}
        for layer in f.get("layers", ()):
            matrices[f"layers/{layer}"] = describe_matrix(f["layers"][layer])
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(f"{path}: cannot read input ({type(e).__name__}: {e})") from e
    shape = (len(obs), len(var))
    for key, src in matrices.items():
        if src.shape != shape:
            raise InputError(f"{path}: {key} has shape {src.shape}, but obs × var is {shape}")
    scan = InputScan(name, path, len(obs), len(var), matrices)
    return scan, InputAnnotations(obs, obsm, var)


def _attr_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_dataframe(group: h5py.Group) -> pd.DataFrame:
    """``anndata.io.read_elem`` of a dataframe, with string arrays read much faster.

    anndata decodes variable-length strings one by one in Python (``asstr()``); reading
    them as NumPy ``StringDType`` and converting to object once gives the same object
    array of ``str``. With 256 inputs of 30,000 genes this is most of the metadata pass.
    Any other encoding goes through anndata's own reader.
    """
    attrs = group.attrs
    if (
        _attr_str(attrs.get("encoding-type", "")) != "dataframe"
        or _attr_str(attrs.get("encoding-version", "")) != "0.2.0"
    ):
        return read_elem(group)
    columns = [_attr_str(c) for c in attrs["column-order"]]
    idx_key = _attr_str(attrs["_index"])
    df = pd.DataFrame(
        {k: _read_column(group[k]) for k in columns},
        index=_read_column(group[idx_key]),
        columns=columns if columns else None,
    )
    if idx_key != "_index":
        df.index.name = idx_key
    return df


def _read_column(elem):
    if isinstance(elem, h5py.Dataset) and elem.ndim == 1:
        enc = _attr_str(elem.attrs.get("encoding-type", ""))
        info = h5py.check_string_dtype(elem.dtype)
        if (
            enc == "string-array"
            and _attr_str(elem.attrs.get("encoding-version", "")) == "0.2.0"
            and info is not None
            and info.length is None
            and info.encoding == "utf-8"
        ):
            return elem.astype(np.dtypes.StringDType())[()].astype(object)
    return read_elem(elem)
