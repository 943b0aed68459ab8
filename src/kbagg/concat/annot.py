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
    """Folds each input's gene list into the output gene index (anndata's ``merge_indices``).

    Genes are hashed once per input, into int32 codes of a shared, append-only dictionary;
    the running intersection or union is then kept as codes (no string work per input).
    It reproduces pandas' ``Index.intersection`` (``sort=False``: the first list's order)
    and ``Index.union`` (``sort=None``: unchanged when the lists are equal or one is
    empty, otherwise the sorted union) for unique string indexes, and the consensus name.
    """

    def __init__(self, join: str):
        self.join = join
        self.dictionary = pd.Index([], dtype=object)  # every gene seen, first-seen order
        self._codes: list[np.ndarray] = []  # per input: dictionary code of each of its genes
        self._previous: tuple[pd.Index, np.ndarray] | None = None
        self._state: np.ndarray | None = None  # codes (ordered list) or None before any input
        self._is_set = False  # outer join: the state is an unordered set, sorted at the end
        self._names: set = set()
        self._merged: pd.Index | None = None

    def add(self, genes: pd.Index) -> np.ndarray:
        """Record one input's genes; return their dictionary codes."""
        self._names.add(genes.name)
        if self._previous is not None and genes.equals(self._previous[0]):
            codes = self._previous[1]  # same gene list as the last input: share the array
            same_as_previous = True
        else:
            codes = self._encode(genes)
            self._previous = (genes, codes)
            same_as_previous = False
        self._codes.append(codes)
        self._merged = None
        if self._state is None:
            self._state = codes
        elif self.join == "inner":
            if not same_as_previous:  # else: already intersected with this very list
                self._state = self._state[self._member(codes)[self._state]]
        else:
            self._fold_union(codes, same_as_previous)
        return codes

    def _member(self, codes: np.ndarray) -> np.ndarray:
        present = np.zeros(len(self.dictionary), dtype=bool)
        present[codes] = True
        return present

    def _fold_union(self, codes: np.ndarray, same_as_previous: bool) -> None:
        state = self._state
        if len(codes) == 0 or same_as_previous:  # already folded in: nothing changes
            return
        if len(state) == 0:
            self._state, self._is_set = codes, False  # pandas returns the other index
            return
        if self._is_set:
            present = self._member(state)
            present[codes] = True
            self._state = np.flatnonzero(present).astype(np.int32)
            return
        if len(state) == len(codes) and np.array_equal(state, codes):
            return  # equal indexes: pandas keeps the index as it is
        present = self._member(state)
        present[codes] = True
        self._state, self._is_set = np.flatnonzero(present).astype(np.int32), True

    def _encode(self, genes: pd.Index) -> np.ndarray:
        """Dictionary codes of ``genes``; ValueError naming a few if any is repeated."""
        codes = self.dictionary.get_indexer(genes)
        new = codes < 0
        if new.any():
            added = genes[new]
            if not added.is_unique:
                raise ValueError(_duplicates_message(added))
            codes[new] = np.arange(len(self.dictionary), len(self.dictionary) + int(new.sum()))
            self.dictionary = self.dictionary.append(added)
        if len(codes) and np.bincount(codes).max() > 1:
            raise ValueError(_duplicates_message(genes))
        return codes.astype(np.int32)

    @property
    def merged_codes(self) -> np.ndarray:
        """Dictionary codes of the output genes (in no particular order)."""
        return self._state

    @property
    def merged(self) -> pd.Index | None:
        if self._state is None:
            return None
        if self._merged is None:
            values = self.dictionary.to_numpy()[self._state]
            if self._is_set:
                values = np.sort(values)  # pandas' safe_sort of a string union
            name = next(iter(self._names)) if len(self._names) == 1 else None
            self._merged = pd.Index(values, dtype=object, name=name)
        return self._merged

    def column_maps(self) -> list[np.ndarray]:
        """Per input: output position of each of its genes, -1 when the output lacks it."""
        to_out = self.merged.get_indexer(self.dictionary).astype(np.int32)
        cache: dict[int, np.ndarray] = {}
        return [cache.setdefault(id(c), to_out[c]) for c in self._codes]


def _duplicates_message(genes: pd.Index) -> str:
    dupes = genes[genes.duplicated()].unique()[:3].tolist()
    return f"duplicate var names, e.g. {dupes}"


class SameVar:
    """anndata's ``merge="same"`` for var on an inner join, folded one input at a time.

    A column survives when every input has it with the same dtype and the same values on
    the output genes. Values are compared on each pair's shared genes as they arrive,
    matched through the gene codes of ``axis`` (no string hashing); the genes where they
    differ are remembered, and at the end a column is dropped only when one of those genes
    made it into the output.
    """

    def __init__(self, axis: GeneAxis):
        self.axis = axis
        self.first: pd.DataFrame | None = None
        self.columns: list = []
        self.mismatched: dict = {}  # column -> None (differs everywhere) or [codes]
        self._first_codes = np.zeros(0, dtype=np.int32)
        self._first_values: dict = {}
        self._first_pos = np.zeros(0, dtype=np.int64)  # dictionary code -> row in first

    def add(self, var: pd.DataFrame, codes: np.ndarray) -> None:
        if self.first is None:
            self.first, self.columns = var, list(var.columns)
            self._first_codes = codes
            return
        self.columns = ordered_intersection([self.columns, list(var.columns)])
        if len(self._first_pos) < len(self.axis.dictionary):
            self._first_pos = np.full(len(self.axis.dictionary), -1, dtype=np.int64)
            self._first_pos[self._first_codes] = np.arange(len(self._first_codes))
        pos = self._first_pos[codes]
        shared = pos >= 0
        for col in self.columns:
            a, b = self.first[col], var[col]
            if a.dtype != b.dtype:
                self.mismatched[col] = None  # None: differs everywhere
            elif self.mismatched.get(col, ()) is not None:
                if col not in self._first_values:
                    self._first_values[col] = a.to_numpy(dtype=object)
                a_vals = self._first_values[col][pos[shared]]
                b_vals = b.to_numpy(dtype=object)[shared]
                differ = ~_arrays_equal(a_vals, b_vals)
                if differ.any():
                    self.mismatched.setdefault(col, []).append(codes[shared][differ])

    def result(self, genes: pd.Index) -> pd.DataFrame:
        if self.first is None:
            return pd.DataFrame(index=genes)
        in_output = np.zeros(len(self.axis.dictionary), dtype=bool)
        in_output[self.axis.merged_codes] = True
        kept = [c for c in self.columns if not self._differs_on(c, in_output)]
        return pd.DataFrame({c: self.first[c].reindex(genes) for c in kept}, index=genes)

    def _differs_on(self, col, in_output: np.ndarray) -> bool:
        if col not in self.mismatched:
            return False
        if self.mismatched[col] is None:
            return True
        return any(in_output[bad].any() for bad in self.mismatched[col])


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


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of object arrays where two missing values count as equal (as
    Series.equals)."""
    eq = np.asarray(a == b, dtype=bool)
    unequal = np.flatnonzero(~eq)  # usually few: only they need the (slow) missing check
    if unequal.size:
        eq[unequal] = pd.isna(a[unequal]) & pd.isna(b[unequal])
    return eq


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
