"""MuData files: per sample, and the aggregate built by the chunked engine per modality."""

from __future__ import annotations

import warnings

import anndata as ad
import h5py
import mudata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from concat_helpers import reference_concat

from kbagg.aggregate.mudata import concat_h5mu, write_sample_h5mu
from kbagg.concat.engine import ConcatError, concat_on_disk

SAMPLES = {"a": 30, "b": 20, "c": 12}  # c has no antibody library


def read_h5mu(path) -> mudata.MuData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mudata.read_h5mu(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, dict[str, str]]:
    folder = tmp_path_factory.mktemp("mudata_inputs")
    rng = np.random.default_rng(0)
    genes = [f"ENSG{i:04d}" for i in range(40)]
    files = {}
    for sample, n_cells in SAMPLES.items():
        cells = pd.Index([f"BC{sample}{i:03d}" for i in range(n_cells)], name="barcode")
        rna = ad.AnnData(
            sp.random(n_cells, 40, 0.3, format="csr", random_state=rng, dtype=np.float32),
            obs=pd.DataFrame(index=cells),
            var=pd.DataFrame({"gene_name": [f"G{i}" for i in range(40)]}, index=genes),
        )
        rna.write_h5ad(folder / f"{sample}_rna.h5ad")
        files[sample] = {"rna": str(folder / f"{sample}_rna.h5ad")}
        hashtag = ad.AnnData(
            sp.csr_matrix(rng.poisson(5, (n_cells, 3)).astype(np.float64)),
            obs=pd.DataFrame(
                {"hashtag": rng.choice(["H1", "H2", "doublet"], n_cells)}, index=cells
            ),
            var=pd.DataFrame({"feature_type": "Multiplexing Capture"}, index=["H1", "H2", "H3"]),
        )
        hashtag.write_h5ad(folder / f"{sample}_hashtag.h5ad")
        files[sample]["hashtag"] = str(folder / f"{sample}_hashtag.h5ad")
        if sample != "c":
            prot = ad.AnnData(
                sp.csr_matrix(rng.poisson(20, (n_cells, 5)).astype(np.float64)),
                obs=pd.DataFrame(index=cells),
                var=pd.DataFrame(
                    {"feature_name": list("VWXYZ")}, index=[f"ADT{i}" for i in range(5)]
                ),
            )
            prot.write_h5ad(folder / f"{sample}_prot.h5ad")
            files[sample]["prot"] = str(folder / f"{sample}_prot.h5ad")
    return files


def assert_same_anndata(got: ad.AnnData, expected: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    pd.testing.assert_frame_equal(got.var, expected.var)
    assert got.X.dtype == expected.X.dtype
    np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
    assert got.uns.keys() == expected.uns.keys()


def test_sample_h5mu_shares_the_cells(tmp_path, inputs):
    out = write_sample_h5mu(inputs["a"], tmp_path / "a.h5mu")
    data = read_h5mu(out)
    assert list(data.mod) == ["rna", "prot", "hashtag"]  # kbagg's modality order
    for name, path in inputs["a"].items():
        assert data[name].obs_names.equals(data["rna"].obs_names)
        assert_same_anndata(data[name], ad.read_h5ad(path))
    assert data.obs_names.equals(data["rna"].obs_names)


def test_sample_h5mu_refuses_modalities_with_other_cells(tmp_path, inputs):
    prot = ad.read_h5ad(inputs["a"]["prot"])[::-1].copy()
    with pytest.raises(ConcatError, match=r"modality 'prot' \(in memory\) has 30 cells that are "):
        write_sample_h5mu({"rna": inputs["a"]["rna"], "prot": prot}, tmp_path / "a.h5mu")
    assert not (tmp_path / "a.h5mu").exists()


def test_aggregate_rna_is_the_h5ad_aggregate_and_mudata_reads_it(tmp_path, inputs):
    meta = pd.DataFrame({"sample": list(SAMPLES), "donor": ["d1", "d1", "d2"]})
    uns = {"kbagg": {"version": "test", "n_samples": 3}}
    out = concat_h5mu(inputs, tmp_path / "all.h5mu", obs_metadata=meta, uns=uns, progress=False)
    data = read_h5mu(out)
    expected = {}
    for modality in ("rna", "prot", "hashtag"):
        # The expectation: anndata.concat of the per-sample files in memory, plus the
        # metadata columns by sample.
        present = {s: files[modality] for s, files in inputs.items() if modality in files}
        reference = reference_concat(present)
        donor = reference.obs["sample"].map(dict(zip(meta["sample"], meta["donor"], strict=True)))
        reference.obs["donor"] = pd.Categorical(donor.astype(str))
        if modality == "rna":
            reference.uns = uns
        expected[modality] = reference
        assert_same_anndata(data[modality], reference)
    assert data["rna"].uns["kbagg"]["version"] == "test" and data.uns["kbagg"]["n_samples"] == 3
    assert data["prot"].n_obs == SAMPLES["a"] + SAMPLES["b"]
    assert data["rna"].obs["donor"].tolist() == ["d1"] * 50 + ["d2"] * 12
    # The global parts are what mudata writes for the same modalities in memory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = mudata.MuData(expected)
    pd.testing.assert_index_equal(data.obs_names, reference.obs_names)
    pd.testing.assert_index_equal(data.var_names, reference.var_names)
    for modality in expected:
        np.testing.assert_array_equal(data.obsmap[modality], reference.obsmap[modality])
        np.testing.assert_array_equal(data.varmap[modality], reference.varmap[modality])
        np.testing.assert_array_equal(data.obsm[modality], reference.obsm[modality])
    # The rna groups are the h5ad aggregate's, dataset for dataset.
    concat_on_disk(
        {s: files["rna"] for s, files in inputs.items()},
        tmp_path / "rna.h5ad",
        obs_metadata=meta,
        uns=uns,
        progress=False,
    )
    with h5py.File(out, "r") as f, h5py.File(tmp_path / "rna.h5ad", "r") as g:
        assert f.attrs["encoding-type"] == "MuData"
        index = "obs/" + g["obs"].attrs["_index"]
        for key in ("X/data", "X/indices", "X/indptr", index, "var/gene_name"):
            np.testing.assert_array_equal(f["mod/rna"][key][()], g[key][()])
        assert f["mod/rna/X"].attrs["encoding-type"] == g["X"].attrs["encoding-type"]
        np.testing.assert_array_equal(f["mod/rna/X"].attrs["shape"], g["X"].attrs["shape"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_aggregate_from_sample_h5mu_files_is_the_same(tmp_path, inputs):
    from_h5ad = read_h5mu(concat_h5mu(inputs, tmp_path / "x.h5mu", progress=False))
    h5mus = {s: write_sample_h5mu(files, tmp_path / f"{s}.h5mu") for s, files in inputs.items()}
    from_h5mu = read_h5mu(concat_h5mu(h5mus, tmp_path / "y.h5mu", progress=False))
    assert list(from_h5mu.mod) == list(from_h5ad.mod)
    for modality in from_h5ad.mod:
        assert_same_anndata(from_h5mu[modality], from_h5ad[modality])


def test_aggregate_errors_name_the_sample(tmp_path, inputs):
    with pytest.raises(ConcatError, match=r"sample 'a': .*nope\.h5mu does not exist"):
        concat_h5mu({"a": tmp_path / "nope.h5mu"}, tmp_path / "z.h5mu", progress=False)
    with pytest.raises(ConcatError, match=r"sample 'a': .*a_rna\.h5ad is not a MuData"):
        concat_h5mu({"a": inputs["a"]["rna"]}, tmp_path / "z.h5mu", progress=False)
    assert not (tmp_path / "z.h5mu").exists()


def test_rna_from_the_h5ad_aggregate_gives_the_same_h5mu(tmp_path, inputs):
    """Rule aggregate_h5mu takes rule aggregate's filtered.h5ad as the rna modality instead
    of concatenating the samples' rna again: the .h5mu is the same, value for value."""
    meta = pd.DataFrame({"sample": list(SAMPLES), "donor": ["d1", "d1", "d2"]})
    uns = {"kbagg": {"version": "test"}}
    both = {"obs_metadata": meta, "uns": uns, "progress": False}
    rna = {s: files["rna"] for s, files in inputs.items()}
    aggregate = concat_on_disk(rna, tmp_path / "rna.h5ad", **both)
    once = read_h5mu(concat_h5mu(inputs, tmp_path / "once.h5mu", rna_aggregate=aggregate, **both))
    twice = read_h5mu(concat_h5mu(inputs, tmp_path / "twice.h5mu", **both))
    assert list(once.mod) == list(twice.mod)
    for modality in twice.mod:
        assert_same_anndata(once[modality], twice[modality])
    pd.testing.assert_frame_equal(once.obs, twice.obs)
    assert once.uns["kbagg"]["version"] == "test"
    # An aggregate of other samples is refused, naming it.
    other = concat_on_disk({"a": rna["a"]}, tmp_path / "a_only.h5ad", progress=False)
    with pytest.raises(ConcatError, match=r"a_only\.h5ad holds samples a, not a, b, c"):
        concat_h5mu(inputs, tmp_path / "z.h5mu", rna_aggregate=other, progress=False)
