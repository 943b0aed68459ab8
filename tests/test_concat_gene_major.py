"""The gene-major (CSC) copy of an aggregate: same content, genes readable on their own,
bounded memory while it is written."""

from __future__ import annotations

import io
import sys
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from concat_helpers import (
    assert_canonical_csr,
    child_peak_rss_mb,
    dense,
    named_layers,
    read_quiet,
    run_cli,
    write_sparse_h5ad,
)

from kbagg.concat.engine import concat_on_disk
from kbagg.concat.gene_major import GeneMajorError, write_gene_major


def _write(path, adata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def aggregate(tmp_path_factory):
    """A CSR aggregate made by the engine, with layers of other dtypes, obs, var, obsm, uns."""
    folder = tmp_path_factory.mktemp("agg")
    rng = np.random.default_rng(3)
    genes = [f"G{i:03d}" for i in range(250)]
    paths = {}
    for i, n_obs in enumerate((1200, 800)):
        x = sp.random(n_obs, len(genes), density=0.1, format="csr", random_state=rng)
        x.data = np.ceil(x.data * 9)
        a = ad.AnnData(
            X=x.astype(np.float32),
            obs=pd.DataFrame(index=[f"c{j}" for j in range(n_obs)]),
            var=pd.DataFrame({"symbol": [g.lower() for g in genes]}, index=genes),
            layers={"spliced": x.astype(np.int32), "unspliced": (x * 2).astype(np.float64)},
            obsm={"emb": rng.random((n_obs, 3))},
        )
        paths[f"s{i}"] = _write(folder / f"s{i}.h5ad", a)
    out = folder / "agg.h5ad"
    concat_on_disk(paths, out, progress=False, uns={"kbagg": {"version": "1"}})
    return out


def assert_same_content(gene_major, aggregate) -> None:
    got, expected = read_quiet(gene_major), read_quiet(aggregate)
    assert_canonical_csr(gene_major, encoding="csc_matrix")
    assert isinstance(got.X, sp.csc_matrix | sp.csc_array)
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    pd.testing.assert_frame_equal(got.var, expected.var)
    assert got.X.dtype == expected.X.dtype
    np.testing.assert_array_equal(dense(got.X), dense(expected.X))
    assert named_layers(got) == named_layers(expected)
    for k in named_layers(expected):
        assert got.layers[k].dtype == expected.layers[k].dtype, k
        assert isinstance(got.layers[k], sp.csc_matrix | sp.csc_array), k
        np.testing.assert_array_equal(dense(got.layers[k]), dense(expected.layers[k]))
    np.testing.assert_array_equal(got.obsm["emb"], expected.obsm["emb"])
    assert sorted(got.uns) == sorted(expected.uns)
    if "kbagg" in expected.uns:
        assert got.uns["kbagg"]["version"] == expected.uns["kbagg"]["version"] == "1"


@pytest.mark.parametrize(
    ("chunk_entries", "threads", "compression"),
    [(1 << 21, 1, None), (3000, 1, None), (3000, 3, "gzip:2"), (700, 2, "lzf")],
)
def test_gene_major_copy_equals_the_aggregate(
    tmp_path, aggregate, chunk_entries, threads, compression
):
    out = tmp_path / "gm.h5ad"
    write_gene_major(
        aggregate, out, chunk_entries=chunk_entries, threads=threads, compression=compression
    )
    assert_same_content(out, aggregate)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "gm.h5ad"]  # no scratch left


@pytest.mark.parametrize("fmt", ["dense", "csc"])
def test_dense_and_csc_sources(tmp_path, fmt):
    rng = np.random.default_rng(1)
    x = (rng.random((300, 40)) < 0.2) * rng.integers(1, 5, (300, 40)).astype(np.float32)
    a = ad.AnnData(X=x if fmt == "dense" else sp.csc_matrix(x))
    src = _write(tmp_path / "src.h5ad", a)
    write_gene_major(src, tmp_path / "gm.h5ad", chunk_entries=200)
    got = read_quiet(tmp_path / "gm.h5ad")
    assert isinstance(got.X, sp.csc_matrix | sp.csc_array)
    np.testing.assert_array_equal(dense(got.X), x)


def test_cli_writes_both(tmp_path, aggregate):
    with h5py.File(aggregate, "r") as f:
        n_obs = f["X"].attrs["shape"][0]
    parts = {"a": tmp_path / "a.h5ad"}
    _write(parts["a"], read_quiet(aggregate))
    out, gm = tmp_path / "out.h5ad", tmp_path / "gm.h5ad"
    run_cli(
        "-o",
        out,
        "--quiet",
        "--gene-major-output",
        gm,
        "--index-unique",
        "",
        f"a={parts['a']}",
        check=True,
    )
    assert read_quiet(gm).n_obs == n_obs
    assert_same_content(gm, out)


def test_refuses_to_replace_its_source(aggregate):
    with pytest.raises(GeneMajorError, match="cannot replace its source"):
        write_gene_major(aggregate, aggregate)


class CountingFile(io.FileIO):
    """A file whose reads are counted: what backed anndata really reads through h5py."""

    bytes_read = 0

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n


def _read_genes(path, genes) -> tuple[np.ndarray, int]:
    with CountingFile(path, "r") as fh, h5py.File(fh, "r") as f:
        x = ad.io.sparse_dataset(f["X"])
        values = dense(x[:, genes])
        return values, fh.bytes_read


def test_backed_gene_reads_touch_only_those_genes(tmp_path):
    """From the gene-major copy, two genes cost a few stored chunks; from the CSR aggregate,
    the whole matrix."""
    genes = [f"G{i:04d}" for i in range(1000)]
    agg = tmp_path / "agg.h5ad"
    write_sparse_h5ad(agg, 40_000, genes, 100, seed=5)  # 4M entries, 32 MB of matrix
    gm = tmp_path / "gm.h5ad"
    write_gene_major(agg, gm, threads=2)
    wanted = np.array([17, 640])  # anndata reads everything for a list
    from_csr, csr_bytes = _read_genes(agg, wanted)
    from_csc, csc_bytes = _read_genes(gm, wanted)
    np.testing.assert_array_equal(from_csc, from_csr)
    assert from_csr.any()
    assert csr_bytes > 32e6
    assert csc_bytes < 0.1 * csr_bytes, (csc_bytes, csr_bytes)
    backed = ad.read_h5ad(gm, backed="r")
    np.testing.assert_array_equal(dense(backed[:, wanted].to_memory().X), from_csr)


GENE_MAJOR = "import sys; from kbagg.concat.gene_major import write_gene_major as w; " + (
    "w(sys.argv[1], sys.argv[2], chunk_entries=int(sys.argv[3]), threads=int(sys.argv[4]))"
)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_peak_memory_is_bounded_while_written(tmp_path, threads):
    genes = [f"ENSG{i:011d}" for i in range(4000)]
    tiny, big = tmp_path / "tiny.h5ad", tmp_path / "big.h5ad"
    write_sparse_h5ad(tiny, 10, genes[:50], 5)
    write_sparse_h5ad(big, 25_000, genes, 1000, seed=1)  # 25M entries, 200 MB of matrix
    cmd = [sys.executable, "-c", GENE_MAJOR]
    status, baseline, err = child_peak_rss_mb([*cmd, tiny, tmp_path / "t.h5ad", "500000", "1"])
    assert status == 0, err
    status, peak, err = child_peak_rss_mb([*cmd, big, tmp_path / "gm.h5ad", "500000", str(threads)])
    assert status == 0, err
    # The matrix is 200 MB; holding it, or a transposed copy, would blow through this margin.
    assert peak < baseline + 60, f"peak {peak:.0f} MB vs baseline {baseline:.0f} MB"
    with h5py.File(tmp_path / "gm.h5ad", "r") as f:
        assert f["X"].attrs["encoding-type"] == "csc_matrix"
        assert f["X/indptr"].shape == (4001,)
        assert f["X/data"].shape == (25_000_000,)
