"""Property tests: concat_on_disk equals anndata.concat on random inputs."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from concat_helpers import assert_matches_reference, reference_concat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbagg.concat.engine import concat_on_disk

GENES = [f"G{i}" for i in range(8)]
CHROM = {g: f"chr{i % 3}" for i, g in enumerate(GENES)}
DTYPES = [np.int32, np.int64, np.float32, np.float64]
EXAMPLES = int(os.environ.get("KBAGG_CONCAT_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The other output formats share all the code above the stored chunks: fewer examples.
OTHER_OUTPUTS_SETTINGS = settings(SETTINGS, max_examples=max(1, EXAMPLES // 4))


@st.composite
def matrices(draw, n_obs: int, n_vars: int, dtype):
    fmt = draw(st.sampled_from(["csr", "csc", "dense"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.0, 0.3, 0.8]))
    values = rng.integers(1, 9, size=(n_obs, n_vars)) * (rng.random((n_obs, n_vars)) < density)
    values = values.astype(dtype)
    return values if fmt == "dense" else getattr(sp, f"{fmt}_matrix")(values)


@st.composite
def one_input(draw, idx: int, unique_barcodes: bool):
    n_obs = draw(st.sampled_from([0, 1, 3, 6]))
    genes = draw(st.permutations(GENES).map(lambda g: g[: max(1, len(g))]))
    genes = genes[: draw(st.integers(1, len(GENES)))]
    dtype = draw(st.sampled_from(DTYPES))
    prefix = f"i{idx}_" if unique_barcodes else ""
    obs = pd.DataFrame(index=[f"{prefix}c{i}" for i in range(n_obs)])
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        obs["cat"] = pd.Categorical(rng.choice(["a", "b", "c"], n_obs))
    if draw(st.booleans()):
        obs["str"] = rng.choice(["x", "y"], n_obs).astype(object)
    if draw(st.booleans()):
        obs["num"] = rng.random(n_obs)
    if draw(st.booleans()):
        obs["flag"] = rng.random(n_obs) < 0.5
    var = pd.DataFrame(
        {
            "symbol": [g.lower() for g in genes],
            "chrom": pd.Categorical([CHROM[g] for g in genes]),
            "length": np.arange(len(genes), dtype=np.int64) + 100 * idx,  # differs per input
        },
        index=genes,
    )
    layers = {
        k: draw(matrices(n_obs, len(genes), draw(st.sampled_from(DTYPES))))
        for k in ("spliced", "unspliced")
        if draw(st.booleans())
    }
    obsm = {}
    if draw(st.booleans()):
        obsm["emb"] = rng.random((n_obs, draw(st.integers(1, 3))))
    if draw(st.booleans()):
        obsm["cnt"] = rng.integers(0, 5, size=(n_obs, 2))
    return ad.AnnData(
        X=draw(matrices(n_obs, len(genes), dtype)), obs=obs, var=var, layers=layers, obsm=obsm
    )


@st.composite
def input_sets(draw):
    unique = draw(st.booleans())
    n = draw(st.integers(1, 3))
    return [draw(one_input(i, unique)) for i in range(n)], unique


def _write_inputs(tmp: Path, adatas) -> dict[str, Path]:
    paths = {}
    for i, a in enumerate(adatas):
        paths[f"s{i}"] = tmp / f"s{i}.h5ad"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a.write_h5ad(paths[f"s{i}"])
    return paths


def check_against_anndata(data, join, chunk_entries, suffix=".h5ad", **options) -> None:
    """concat_on_disk of the drawn inputs (written as h5ad) equals anndata.concat's result,
    and leaves no temporary file behind. `options` go to concat_on_disk (compression, threads)."""
    adatas, unique_barcodes = data
    index_unique = None if unique_barcodes else "-"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        paths = _write_inputs(tmp, adatas)
        out = tmp / f"out{suffix}"
        concat_on_disk(
            paths,
            out,
            join=join,
            index_unique=index_unique,
            chunk_entries=chunk_entries,
            progress=False,
            **options,
        )
        assert_matches_reference(out, reference_concat(paths, join=join, index_unique=index_unique))
        assert not list(tmp.glob(f".out{suffix}.tmp-*")), "temp files left behind"


@pytest.mark.parametrize("join", ["inner", "outer"])
@SETTINGS
@given(data=input_sets(), chunk_entries=st.sampled_from([1, 3, 1 << 19]))
def test_equals_anndata_concat(join, data, chunk_entries):
    check_against_anndata(data, join, chunk_entries)


@pytest.mark.parametrize(
    ("suffix", "compression", "threads"),
    [
        (".h5ad", "gzip:1", 2),
        (".h5ad", "isal:0", 3),
        (".h5ad", "lzf", 1),
        (".zarr", None, 2),
        (".zarr", "zstd", 1),
        (".zarr", "none", 1),
    ],
)
@OTHER_OUTPUTS_SETTINGS
@given(
    data=input_sets(),
    join=st.sampled_from(["inner", "outer"]),
    chunk_entries=st.sampled_from([1, 3, 1 << 19]),
)
def test_compressed_and_zarr_outputs_equal_anndata_concat(
    suffix, compression, threads, data, join, chunk_entries
):
    check_against_anndata(
        data, join, chunk_entries, suffix, compression=compression, threads=threads
    )


def test_outer_join_coalesces_gene_annotations(tmp_path):
    """Genes missing from the first input still get their symbol (anndata's 'first' would not)."""
    a = ad.AnnData(
        X=sp.csr_matrix(np.ones((1, 2), np.float32)),
        var=pd.DataFrame({"sym": ["A", "B"]}, index=["g1", "g2"]),
    )
    b = ad.AnnData(
        X=sp.csr_matrix(np.ones((1, 2), np.float32)),
        var=pd.DataFrame({"sym": ["B", "C"]}, index=["g2", "g3"]),
    )
    paths = _write_inputs(tmp_path, [a, b])
    concat_on_disk(paths, tmp_path / "o.h5ad", join="outer", progress=False)
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert out.var["sym"].tolist() == ["A", "B", "C"]
    assert out.var_names.tolist() == ["g1", "g2", "g3"]


def test_outer_join_drops_conflicting_annotation(tmp_path):
    a = ad.AnnData(X=sp.csr_matrix((1, 1)), var=pd.DataFrame({"sym": ["A"]}, index=["g1"]))
    b = ad.AnnData(X=sp.csr_matrix((1, 1)), var=pd.DataFrame({"sym": ["Z"]}, index=["g1"]))
    paths = _write_inputs(tmp_path, [a, b])
    concat_on_disk(paths, tmp_path / "o.h5ad", join="outer", progress=False)
    assert "sym" not in ad.read_h5ad(tmp_path / "o.h5ad").var.columns


def test_single_input_gets_label_and_suffix(tmp_path):
    a = ad.AnnData(X=sp.csr_matrix(np.eye(2, dtype=np.float32)), obs=pd.DataFrame(index=["x", "y"]))
    paths = _write_inputs(tmp_path, [a])
    concat_on_disk(paths, tmp_path / "o.h5ad", progress=False)
    out = ad.read_h5ad(tmp_path / "o.h5ad")
    assert out.obs_names.tolist() == ["x-s0", "y-s0"]
    assert out.obs["sample"].tolist() == ["s0", "s0"]
    assert isinstance(out.obs["sample"].dtype, pd.CategoricalDtype)


def test_unsorted_and_duplicate_input_entries_become_canonical(tmp_path):
    """A non-canonical CSR input (unsorted, duplicated columns) is summed and sorted."""
    m = sp.csr_matrix(
        (np.array([1, 2, 3], np.float32), np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 3)
    )
    assert not m.has_canonical_format
    a = ad.AnnData(X=m)
    paths = _write_inputs(tmp_path, [a])
    for join in ("inner", "outer"):
        concat_on_disk(paths, tmp_path / "o.h5ad", join=join, progress=False)
        x = ad.read_h5ad(tmp_path / "o.h5ad").X
        assert x.indices.tolist() == [0, 2] and x.data.tolist() == [2, 4]
