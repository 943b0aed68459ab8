"""The engine's fast paths against the straightforward pandas / anndata / scipy versions."""

from __future__ import annotations

from functools import reduce

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from kbagg.concat.annot import GeneAxis
from kbagg.concat.inputs import read_dataframe
from kbagg.concat.matrix import ColumnMap, _remap

POOL = [f"g{i}" for i in range(7)] + ["é1", "Z"]


@st.composite
def gene_lists(draw):
    lists = []
    for _ in range(draw(st.integers(1, 5))):
        if lists and draw(st.booleans()):
            genes = list(lists[-1])  # an input with the same gene list as the previous one
        else:
            genes = draw(st.lists(st.sampled_from(POOL), unique=True, max_size=len(POOL)))
        lists.append(genes)
    names = draw(st.lists(st.sampled_from([None, "gene_ids"]), min_size=len(lists)))
    return [pd.Index(g, dtype=object, name=n) for g, n in zip(lists, names, strict=False)]


@pytest.mark.parametrize("join", ["inner", "outer"])
@settings(max_examples=300, deadline=None)
@given(indexes=gene_lists())
def test_gene_axis_equals_pandas_fold(join, indexes):
    axis = GeneAxis(join)
    for idx in indexes:
        axis.add(idx)
    op = (lambda a, b: a.intersection(b)) if join == "inner" else (lambda a, b: a.union(b))
    expected = reduce(op, indexes)
    pd.testing.assert_index_equal(axis.merged, expected, exact=False)
    assert axis.merged.name == expected.name
    for idx, lut in zip(indexes, axis.column_maps(), strict=True):
        np.testing.assert_array_equal(lut, expected.get_indexer(idx))


def test_gene_axis_rejects_duplicate_genes():
    axis = GeneAxis("inner")
    axis.add(pd.Index(["a", "b"]))
    with pytest.raises(ValueError, match="duplicate var names"):
        axis.add(pd.Index(["b", "c", "b"]))  # a known gene twice
    with pytest.raises(ValueError, match="duplicate var names"):
        GeneAxis("outer").add(pd.Index(["x", "y", "x"]))  # a new gene twice


def test_read_dataframe_equals_anndata(tmp_path):
    var = pd.DataFrame(
        {
            "name": ["α", "b", "c", "d"],
            "cat": pd.Categorical(["x", "y", "x", None]),
            "n": np.arange(4, dtype=np.int64),
            "f": [0.5, np.nan, 1.0, 2.0],
            "flag": pd.array([True, None, False, True], dtype="boolean"),
            "empty": ["", "", "", ""],
        },
        index=pd.Index(["G1", "G2", "Ĝ3", "G4"], name="gene_ids"),
    )
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        ad.io.write_elem(f, "var", var)
        ad.io.write_elem(f, "nocols", pd.DataFrame(index=["a", "b"]))
        ad.io.write_elem(f, "empty", pd.DataFrame(index=pd.Index([], dtype=object)))
    with h5py.File(path, "r") as f:
        for key in ("var", "nocols", "empty"):
            expected = ad.io.read_elem(f[key])
            got = read_dataframe(f[key])
            pd.testing.assert_frame_equal(got, expected)
            assert got.index.dtype == expected.index.dtype


@st.composite
def column_maps(draw, n_in: int) -> np.ndarray:
    """An injective column map of `n_in` input columns (-1: dropped), drawn directly, in
    every shape `ColumnMap` has a path for: kept in place, increasing, any order."""
    kept = draw(st.lists(st.booleans(), min_size=n_in, max_size=n_in))
    n_kept = sum(kept)
    shape = draw(st.sampled_from(["in place", "increasing", "any order"]))
    if shape == "in place":
        targets = [c for c in range(n_in) if kept[c]]
    else:
        targets = draw(st.permutations(range(15)))[:n_kept]
        if shape == "increasing":
            targets.sort()
    lut = np.full(n_in, -1, dtype=np.int32)
    lut[np.flatnonzero(kept)] = targets
    return lut


@settings(max_examples=200, deadline=None)
@given(
    n_in=st.integers(1, 12),
    data=st.data(),
)
def test_remap_equals_scipy_column_selection(n_in, data):
    lut = data.draw(column_maps(n_in))
    kept = lut[lut >= 0]
    assert len(set(kept.tolist())) == len(kept)  # a column map is injective
    n_out = int(kept.max()) + 1 if kept.size else 0
    if data.draw(st.booleans()):
        n_out += data.draw(st.integers(0, 3))  # output genes no input column maps to
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    m = sp.random(6, n_in, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    cmap = ColumnMap(lut, n_out)
    counts, indices = np.diff(m.indptr).astype(np.int64), m.indices.astype(np.int32)
    chunk = _remap(cmap, counts, indices, m.data.copy())  # may sort its arrays in place
    indptr = np.concatenate([[0], np.cumsum(chunk.counts)])
    got = sp.csr_matrix((chunk.data, chunk.indices, indptr), shape=(6, n_out)).toarray()
    expected = np.zeros((6, n_out), dtype=np.float32)
    src = np.flatnonzero(lut >= 0)
    expected[:, lut[src]] = m.toarray()[:, src]
    np.testing.assert_array_equal(got, expected)
    for r in range(6):
        row = chunk.indices[indptr[r] : indptr[r + 1]]
        assert np.all(np.diff(row) > 0)
