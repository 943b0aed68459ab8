"""Annotation side of the on-disk concatenation: gene axis, var columns, obs metadata.

Inputs are visited once, in order, and never all held in memory: the gene axis and the var
columns are folded input by input. Every input's gene list is kept only as int32 codes into a
shared, append-only gene dictionary (deduplicated when inputs share a gene list).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd
from natsort import natsorted


def ordered_intersection(seqs: Iterable[Sequence]) -> list:
    """anndata's ``intersect_keys``: an item is kept if in every sequence, in the last one's order."""
    return list(reduce(lambda acc, seq: [k for k in seq if k in set(acc)], seqs))


def ordered_union(seqs: Iterable[Sequence]) -> list:
    """anndata's ``union_keys``: first-seen order."""
    return list(dict.fromkeys(k for seq in seqs for k in seq))


class GeneAxis:
    """Folds each input's gene list into the output gene index (anndata's ``merge_indices``)."""

    def __init__(self, join: str):
        self.join = join
        self.merged: pd.Index | None = None
        self.dictionary = pd.Index([], dtype=object)  # every gene seen, first-seen order
        self._codes: list[np.ndarray] = []  # per input: dictionary code of each of its genes
        self._previous: tuple[pd.Index, np.ndarray] | None = None

    def add(self, genes: pd.Index) -> np.ndarray:
        """Record one input's genes; return their dictionary codes."""
        if self._previous is not None and genes.equals(self._previous[0]):
            codes = self._previous[1]  # same gene list as the last input: share the array
        else:
            codes = self._encode(genes)
            self._previous = (genes, codes)
        self._codes.append(codes)
        if self.merged is None:
            self.merged = genes
        elif self.join == "inner":
            self.merged = self.merged.intersection(genes)
        else:
            self.merged = self.merged.union(genes)
        return codes

    def _encode(self, genes: pd.Index) -> np.ndarray:
        codes = self.dictionary.get_indexer(genes)
        new = codes < 0
        if new.any():
            codes[new] = np.arange(len(self.dictionary), len(self.dictionary) + int(new.sum()))
            self.dictionary = self.dictionary.append(genes[new])
        return codes.astype(np.int32)

    def column_maps(self) -> list[np.ndarray]:
        """Per input: output position of each of its genes, -1 when the output lacks it."""
        to_out = self.merged.get_indexer(self.dictionary).astype(np.int32)
        cache: dict[int, np.ndarray] = {}
        return [cache.setdefault(id(c), to_out[c]) for c in self._codes]


class SameVar:
    """anndata's ``merge="same"`` for var on an inner join, folded one input at a time.

    A column survives when every input has it with the same dtype and the same values on
    the output genes. Values are compared on each pair's shared genes as they arrive; the
    genes where they differ are remembered, and at the end a column is dropped only when
    one of those genes made it into the output.
    """

    def __init__(self):
        self.first: pd.DataFrame | None = None
        self.columns: list = []
        self.mismatched: dict = {}

    def add(self, var: pd.DataFrame) -> None:
        if self.first is None:
            self.first, self.columns = var, list(var.columns)
            return
        self.columns = ordered_intersection([self.columns, list(var.columns)])
        shared = self.first.index.intersection(var.index)
        for col in self.columns:
            a, b = self.first[col], var[col]
            if a.dtype != b.dtype:
                self.mismatched[col] = None  # None: differs everywhere
            elif self.mismatched.get(col, ()) is not None:
                differ = ~_values_equal(a.reindex(shared), b.reindex(shared))
                if differ.any():
                    self.mismatched.setdefault(col, []).append(shared[differ])

    def result(self, genes: pd.Index) -> pd.DataFrame:
        if self.first is None:
            return pd.DataFrame(index=genes)
        kept = [c for c in self.columns if not self._differs_on(c, genes)]
        return pd.DataFrame({c: self.first[c].reindex(genes) for c in kept}, index=genes)

    def _differs_on(self, col, genes: pd.Index) -> bool:
        if col not in self.mismatched:
            return False
        if self.mismatched[col] is None:
            return True
        return any(genes.isin(bad).any() for bad in self.mismatched[col])


class CoalescedVar:
    """Outer-join var: each gene takes the first non-missing value across inputs in order.

    A column is kept when every input has it and no two inputs give a gene different
    non-missing values (the outer-join reading of ``merge="same"``).
    """

    def __init__(self, axis: GeneAxis):
        self.axis = axis
        self.columns: list | None = None
        self.values: dict = {}  # column -> object array indexed by dictionary code
        self.filled: dict = {}
        self.dtypes: dict = {}

    def add(self, var: pd.DataFrame, codes: np.ndarray) -> None:
        if self.columns is None:
            self.columns = list(var.columns)
        else:
            self.columns = ordered_intersection([self.columns, list(var.columns)])
        size = len(self.axis.dictionary)
        for col in self.columns:
            self._fold_column(col, var[col], codes, size)

    def _fold_column(self, col, series: pd.Series, codes: np.ndarray, size: int) -> None:
        values, filled = self._grown(col, size)
        present = series.notna().to_numpy()
        where, new = codes[present], series.to_numpy(dtype=object)[present]
        seen = filled[where]
        if seen.any() and not np.all(values[where[seen]] == new[seen]):
            self.columns.remove(col)  # conflicting annotations: drop, like merge="same"
            return
        values[where[~seen]] = new[~seen]
        filled[where[~seen]] = True
        self.dtypes.setdefault(col, []).append(series.dtype)

    def _grown(self, col, size: int) -> tuple[np.ndarray, np.ndarray]:
        values = self.values.get(col, np.empty(0, dtype=object))
        filled = self.filled.get(col, np.zeros(0, dtype=bool))
        if len(values) < size:
            values = np.concatenate([values, np.full(size - len(values), np.nan, dtype=object)])
            filled = np.concatenate([filled, np.zeros(size - len(filled), dtype=bool)])
            self.values[col], self.filled[col] = values, filled
        return values, filled

    def result(self, genes: pd.Index) -> pd.DataFrame:
        pos = self.axis.dictionary.get_indexer(genes)
        cols = {}
        for col in self.columns or []:
            values, filled = self._grown(col, len(self.axis.dictionary))
            # .array: positional, so the DataFrame does not re-align it on a RangeIndex
            cols[col] = _restore_dtype(values[pos], filled[pos], self.dtypes[col]).array
        return pd.DataFrame(cols, index=genes)


def _restore_dtype(values: np.ndarray, filled: np.ndarray, dtypes: list):
    """Give coalesced values back the inputs' dtype (categories: natsorted union, as anndata)."""
    if all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
        cats = reduce(lambda a, b: a.union(b), (d.categories for d in dtypes))
        return pd.Series(pd.Categorical(values, categories=natsorted(cats)))
    if len(set(map(str, dtypes))) == 1:
        dtype = dtypes[0]
        if filled.all() or pd.api.types.is_float_dtype(dtype):
            return pd.Series(values).astype(dtype)
        if pd.api.types.is_bool_dtype(dtype):
            return pd.Series(pd.array(np.where(filled, values, None), dtype="boolean"))
        if pd.api.types.is_integer_dtype(dtype):
            return pd.Series(values).astype(np.float64)  # what pandas does to ints with NaN
    return pd.Series(values).infer_objects()


def _values_equal(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Elementwise equality where two missing values count as equal (as Series.equals)."""
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    eq = a.to_numpy(dtype=object) == b.to_numpy(dtype=object)
    return np.asarray((a_na & b_na) | (eq & ~a_na & ~b_na), dtype=bool)


def read_obs_metadata(
    table: str | Path | pd.DataFrame, label: str | None
) -> tuple[pd.DataFrame, str]:
    """The per-sample table indexed by sample name (``label`` column, else ``sample``), and
    how to name it in messages."""
    if isinstance(table, pd.DataFrame):
        df, where = table.copy(), "the obs metadata table"
    else:
        df = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
        where = str(table)
    key = label if label is not None and label in df.columns else "sample"
    if key not in df.columns:
        raise ValueError(f"{where}: no {key!r} column (columns: {', '.join(map(str, df.columns))})")
    names = df[key].astype(str)
    dupes = names[names.duplicated()].unique()
    if len(dupes):
        raise ValueError(f"{where}: sample(s) listed more than once: {', '.join(dupes)}")
    return df.drop(columns=[key]).set_index(names.rename(None)), where


def obs_metadata_columns(
    meta: pd.DataFrame, where: str, names: Sequence[str], n_obs: Sequence[int], existing
) -> dict[str, pd.Categorical]:
    """One categorical column per table column, each cell taking its sample's value."""
    missing = [n for n in names if n not in meta.index]
    if missing:
        raise ValueError(f"{where}: no row for sample(s) {', '.join(missing)}")
    clash = [c for c in meta.columns if c in existing]
    if clash:
        raise ValueError(f"{where}: column(s) {', '.join(map(str, clash))} already exist in obs")
    rows = meta.loc[list(names)]
    out = {}
    for col in meta.columns:
        per_sample = pd.Categorical(rows[col].to_numpy())
        codes = np.repeat(per_sample.codes, n_obs)
        out[col] = pd.Categorical.from_codes(codes, categories=per_sample.categories)
    return out
