"""Real data: pbmc1k split by batch and concatenated back gives the original counts."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from concat_helpers import TESTDATA, assert_matches_reference, read_quiet, reference_concat

from kbagg.concat.engine import concat_on_disk

PBMC = TESTDATA / "pbmc1k_h5ad" / "pbmc1k.h5ad"


@pytest.fixture(scope="module")
def pbmc_split(tmp_path_factory):
    if not PBMC.exists():
        pytest.skip(f"real test data not found at {PBMC} (shared/testdata is not checked out)")
    d = tmp_path_factory.mktemp("pbmc")
    full = read_quiet(PBMC)
    paths = {}
    for batch in sorted(full.obs["batch"].unique(), key=str):
        part = full[full.obs["batch"] == batch].copy()
        paths[f"batch{batch}"] = d / f"batch{batch}.h5ad"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            part.write_h5ad(paths[f"batch{batch}"])
    assert len(paths) == 3
    return full, paths


@pytest.mark.parametrize("join", ["inner", "outer"])
@pytest.mark.parametrize("chunk_entries", [500, 1 << 23])
def test_split_and_concat_restores_counts(tmp_path, pbmc_split, join, chunk_entries):
    full, paths = pbmc_split
    out = tmp_path / "pbmc.h5ad"
    concat_on_disk(paths, out, join=join, chunk_entries=chunk_entries, progress=False)
    res = read_quiet(out)
    assert_matches_reference(out, reference_concat(paths, join=join))

    # Same cells and genes, same counts per cell as the original file.
    assert res.n_obs == full.n_obs
    pd.testing.assert_index_equal(res.var_names, full.var_names)
    barcodes = res.obs_names.str.rsplit("-", n=1).str[0]
    original = full[barcodes]
    np.testing.assert_array_equal(res.X.toarray(), original.X.toarray())
    np.testing.assert_allclose(
        np.asarray(res.X.sum(axis=1)).ravel(), np.asarray(original.X.sum(axis=1)).ravel()
    )
    expected_sample = "batch" + original.obs["batch"].astype(str).to_numpy()
    assert (res.obs["sample"].astype(str).to_numpy() == expected_sample).all()
    pd.testing.assert_series_equal(res.var["gene_ids"], full.var["gene_ids"])
