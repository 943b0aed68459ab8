"""Compressed h5ad and zarr outputs hold the same values as the uncompressed aggregate, with
the compression really applied, readable by anndata (also backed) with no plugin."""

from __future__ import annotations

import warnings
import zlib

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from concat_helpers import (
    assert_matches_reference,
    dense,
    read_quiet,
    reference_concat,
    run_cli,
)

from kbagg.concat.engine import concat_on_disk
from kbagg.concat.output import CHUNK_ENTRIES, Compression, shuffle_bytes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Three inputs, 410,000 entries in all (more than one stored chunk), with layers of
    other dtypes, obs and var columns, and gene lists that differ in content and order."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(7)
    genes = [f"G{i:04d}" for i in range(400)]
    paths = {}
    for i, n_obs in enumerate((3000, 1000, 2000)):
        own = list(rng.permutation(genes)[:380]) if i else genes
        x = sp.random(n_obs, len(own), density=0.2, format="csr", random_state=rng)
        x.data = np.ceil(x.data * 20)
        a = ad.AnnData(
            X=x.astype(np.float32),
            obs=pd.DataFrame(
                {"batch": pd.Categorical(rng.choice(["a", "b"], n_obs))},
                index=[f"c{j}" for j in range(n_obs)],
            ),
            var=pd.DataFrame({"symbol": [g.lower() for g in own]}, index=own),
            layers={"counts": x.astype(np.int64)},
            obsm={"emb": rng.random((n_obs, 2))},
        )
        paths[f"s{i}"] = folder / f"s{i}.h5ad"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a.write_h5ad(paths[f"s{i}"])
    return paths


@pytest.fixture(scope="module")
def references(inputs):
    return {join: reference_concat(inputs, join=join) for join in ("inner", "outer")}


def _datasets(path):
    with h5py.File(path, "r") as f:
        groups = [f["X"]] + [f["layers"][k] for k in f["layers"]]
        return {
            f"{g.name}/{k}": (
                g[k].compression,
                g[k].compression_opts,
                g[k].shuffle,
                g[k].chunks,
                g[k].shape,
            )
            for g in groups
            for k in ("data", "indices", "indptr")
        }


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize(
    ("compression", "threads", "filters"),
    [
        ("gzip:1", 1, ("gzip", 1, True)),
        ("gzip:6", 3, ("gzip", 6, True)),
        ("gzip", 2, ("gzip", 4, True)),
        ("isal", 2, ("gzip", 1, True)),  # the standard deflate filter, encoded by ISA-L
        ("isal:3", 1, ("gzip", 1, True)),
        ("lzf", 2, ("lzf", None, True)),
        ("none", 2, (None, None, False)),
    ],
)
def test_compressed_h5ad_equals_the_aggregate(
    tmp_path, inputs, references, join, compression, threads, filters
):
    out = tmp_path / "out.h5ad"
    concat_on_disk(inputs, out, join=join, compression=compression, threads=threads, progress=False)
    assert_matches_reference(out, references[join])
    for name, (method, level, shuffle, chunks, shape) in _datasets(out).items():
        assert (method, level, shuffle) == filters, name
        # Whole 1 MB chunks; a shorter array (indptr here) is one chunk of its own length.
        assert chunks == (min(CHUNK_ENTRIES, shape[0]),), name


@pytest.mark.parametrize("compression", ["gzip:5", "isal:2"])
def test_deflate_chunks_are_standard_shuffle_and_deflate(tmp_path, inputs, compression):
    """A stored chunk is a zlib stream of HDF5's byte shuffle: any HDF5 reader decodes it."""
    out = tmp_path / "out.h5ad"
    concat_on_disk(inputs, out, compression=compression, threads=2, progress=False)
    with h5py.File(out, "r") as f:
        ds = f["X/data"]
        assert ds.shape[0] > CHUNK_ENTRIES  # a full chunk and a partial last one
        for index in range(2):
            mask, raw = ds.id.read_direct_chunk((index * CHUNK_ENTRIES,))
            assert mask == 0  # both filters applied
            values = ds[index * CHUNK_ENTRIES : (index + 1) * CHUNK_ENTRIES]
            padded = np.zeros(CHUNK_ENTRIES, ds.dtype)
            padded[: len(values)] = values
            assert zlib.decompress(raw) == shuffle_bytes(padded).tobytes()


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize(
    ("compression", "threads", "codec"),
    [
        (None, 2, "blosc"),
        ("blosc:5", 1, "blosc"),
        ("zstd", 2, "zstd"),
        ("zstd:9", 1, "zstd"),
        ("gzip:2", 3, "gzip"),
        ("none", 1, None),
    ],
)
def test_zarr_output_equals_the_aggregate(
    tmp_path, inputs, references, join, compression, threads, codec
):
    out = tmp_path / "out.zarr"
    concat_on_disk(inputs, out, join=join, compression=compression, threads=threads, progress=False)
    assert out.is_dir()
    assert_matches_reference(out, references[join])
    level = Compression.parse(compression, "zarr").level
    root = zarr.open_group(out, mode="r")
    for key in ("X/data", "X/indices", "X/indptr", "layers/counts/data"):
        arr = root[key]
        assert arr.chunks == (min(CHUNK_ENTRIES, arr.shape[0]),), key
        names = [type(c).__name__ for c in arr.compressors]
        if codec is None:
            assert names == [], key
        else:
            assert names == [f"{codec.capitalize()}Codec"], key
            compressor = arr.compressors[0]
            if codec == "blosc":  # zstd inside, after a byte shuffle
                assert (compressor.cname, compressor.shuffle) == ("zstd", "shuffle"), key
                assert compressor.clevel == level, key
            else:
                assert compressor.level == level, key


def test_zarr_output_reads_backed(tmp_path, inputs, references):
    out = tmp_path / "out.zarr"
    concat_on_disk(inputs, out, threads=2, progress=False)
    x = ad.io.sparse_dataset(zarr.open_group(out, mode="r")["X"])
    expected = dense(references["inner"].X)
    rows = np.array([0, 5, 2999, 3000, 5999])
    np.testing.assert_array_equal(dense(x[rows]), expected[rows])
    np.testing.assert_array_equal(dense(x[100:200]), expected[100:200])


def test_cli_writes_zarr_by_suffix_or_format(tmp_path, inputs, references):
    pairs = [f"{k}={v}" for k, v in inputs.items()]
    run_cli("-o", tmp_path / "a.zarr", "--quiet", "--threads", "2", *pairs, check=True)
    run_cli("-o", tmp_path / "b.store", "--quiet", "--format", "zarr", *pairs, check=True)
    for name in ("a.zarr", "b.store"):
        assert (tmp_path / name).is_dir()
        assert_matches_reference(tmp_path / name, references["inner"])
    run_cli("-o", tmp_path / "c.h5ad", "--quiet", "--compression", "gzip:1", *pairs, check=True)
    assert h5py.File(tmp_path / "c.h5ad", "r")["X/data"].compression == "gzip"


@pytest.mark.parametrize(
    ("output", "compression", "needle"),
    [
        ("out.h5ad", "gzip:12", "level must be 1-9"),
        ("out.h5ad", "zstd", "not available for h5ad"),
        ("out.zarr", "lzf", "not available for zarr"),
        ("out.zarr", "isal", "not available for zarr"),
        ("out.h5ad", "isal:4", "level must be 0-3"),
        ("out.h5ad", "lzf:3", "takes no level"),
    ],
)
def test_bad_compression_is_one_error_line(tmp_path, inputs, output, compression, needle):
    proc = run_cli("-o", tmp_path / output, "--compression", compression, inputs["s0"])
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(tmp_path / output) in lines[0] and needle in lines[0] and compression in lines[0]
    assert not (tmp_path / output).exists()


def test_existing_zarr_store_is_replaced_only_on_success(tmp_path, inputs):
    out = tmp_path / "out.zarr"
    concat_on_disk({"s1": inputs["s1"]}, out, progress=False)
    assert read_quiet(out).n_obs == 1000
    with pytest.raises(Exception, match="does not exist"):
        concat_on_disk({"s1": inputs["s1"], "x": tmp_path / "missing.h5ad"}, out, progress=False)
    assert read_quiet(out).n_obs == 1000  # the old store is intact
    concat_on_disk(inputs, out, progress=False)
    assert read_quiet(out).n_obs == 6000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no temp stores left
