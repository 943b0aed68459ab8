"""Reading what the concatenation needs from one input h5ad, without touching its matrices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import pandas as pd
from anndata.io import read_elem

from kbagg.concat_matrix import MatrixSource, describe_matrix


class InputError(Exception):
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


def scan_input(name: str, path: Path, f: h5py.File) -> tuple[InputScan, InputAnnotations]:
    """Read obs, obsm and var and describe X and the layers of an open input."""
    try:
        for key in ("obs", "var", "X"):
            if key not in f:
                raise InputError(f"{path}: not an AnnData h5ad file (no '{key}')")
        obs, var = read_elem(f["obs"]), read_elem(f["var"])
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
    if not var.index.is_unique:
        dupes = var.index[var.index.duplicated()].unique()[:3].tolist()
        raise InputError(f"{path}: duplicate var names, e.g. {dupes}")
    scan = InputScan(name, path, len(obs), len(var), matrices)
    return scan, InputAnnotations(obs, obsm, var)
