"""Every input layout gives anndata.concat's values: the same genes, gene subsets, a gene order
of its own per input, CSC and dense inputs, on one thread or several, and with budgets small
enough that every input is cut into many chunks (and CSC inputs go through the bucket
transpose)."""

from __future__ import annotations

import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from concat_helpers import assert_matches_reference, reference_concat, write_sparse_h5ad

from kbagg.concat.engine import ConcatError, concat_on_disk

GENES = [f"G{i:04d}" for i in range(300)]
LAYOUTS = ("same", "subset", "shuffled", "csc", "dense")


def _genes(layout: str, rng) -> list[str]:
    if layout in ("subset", "shuffled"):
        genes = [g for g in GENES if rng.random() > 0.1]
        return list(rng.permutation(genes)) if layout == "shuffled" else genes
    return GENES


def _matrix(layout: str, n_obs: int, n_vars: int, rng, dtype):
    values = rng.integers(1, 30, size=(n_obs, n_vars)) * (rng.random((n_obs, n_vars)) < 0.15)
    values = values.astype(dtype)
    if layout == "dense":
        return values
    return sp.csc_matrix(values) if layout == "csc" else sp.csr_matrix(values)


@pytest.fixture(scope="module", params=LAYOUTS)
def layout_inputs(request, tmp_path_factory):
    layout = request.param
    folder = tmp_path_factory.mktemp(layout)
    rng = np.random.default_rng(LAYOUTS.index(layout))
    paths = {}
    for i, n_obs in enumerate((400, 0, 350, 500)):
        genes = _genes(layout, rng)
        a = ad.AnnData(
            X=_matrix(layout, n_obs, len(genes), rng, np.float32),
            obs=pd.DataFrame(index=[f"c{j}" for j in range(n_obs)]),
            var=pd.DataFrame({"symbol": [g.lower() for g in genes]}, index=genes),
            layers={"counts": _matrix(layout, n_obs, len(genes), rng, np.int32)},
        )
        paths[f"s{i}"] = folder / f"s{i}.h5ad"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a.write_h5ad(paths[f"s{i}"])
    return layout, paths


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize(("threads", "chunk_entries"), [(1, 3000), (3, 3000), (2, 1 << 21)])
def test_layout_equals_anndata_concat(tmp_path, layout_inputs, join, threads, chunk_entries):
    layout, paths = layout_inputs
    out = tmp_path / "out.h5ad"
    concat_on_disk(
        paths, out, join=join, chunk_entries=chunk_entries, threads=threads, progress=False
    )
    assert_matches_reference(out, reference_concat(paths, join=join))


@pytest.mark.parametrize("threads", [1, 2])
def test_non_canonical_rows_in_a_shuffled_input_are_summed_and_sorted(tmp_path, threads):
    """Duplicated and unsorted columns in an input whose genes need re-sorting anyway."""
    m = sp.csr_matrix(
        (
            np.array([1, 2, 3, 4, 5], np.float32),
            np.array([2, 0, 2, 1, 1]),  # row 0: columns 2, 0, 2; row 1: columns 1, 1
            np.array([0, 3, 5]),
        ),
        shape=(2, 3),
    )
    first = ad.AnnData(
        X=sp.csr_matrix(np.ones((1, 3), np.float32)), var=pd.DataFrame(index=["a", "b", "c"])
    )
    second = ad.AnnData(X=m, var=pd.DataFrame(index=["c", "b", "a"]))  # reversed: re-sorted
    paths = {"first": tmp_path / "first.h5ad", "second": tmp_path / "second.h5ad"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first.write_h5ad(paths["first"])
        second.write_h5ad(paths["second"])
    out = tmp_path / "out.h5ad"
    concat_on_disk(paths, out, threads=threads, progress=False)
    x = ad.read_h5ad(out).X
    # second's columns are c, b, a. Row 0: a = 1 + 3, c = 2 -> output columns 0 (a), 2 (c);
    # row 1: b = 4 + 5 -> output column 1.
    assert x[1:].indices.tolist() == [0, 2, 1]
    assert x[1:].data.tolist() == [4, 2, 9]
    assert x[1:].indptr.tolist() == [0, 2, 3]


@pytest.mark.parametrize("genes_of_second", [GENES, GENES[::-1]])
def test_column_index_outside_the_genes_names_the_file(tmp_path, genes_of_second):
    """A corrupt input (a column index past its genes) fails by name, identity remap or not."""
    good, bad = tmp_path / "good.h5ad", tmp_path / "bad.h5ad"
    write_sparse_h5ad(good, 20, GENES, 5)
    write_sparse_h5ad(bad, 20, list(genes_of_second), 5, seed=1)
    with h5py.File(bad, "r+") as f:
        f["X/indices"][7] = len(GENES) + 3
    with pytest.raises(ConcatError, match=r"bad\.h5ad: cannot read X \(column indices outside"):
        concat_on_disk({"good": good, "bad": bad}, tmp_path / "out.h5ad", progress=False)
    assert not list(tmp_path.glob("*out.h5ad*"))
