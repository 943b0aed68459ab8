"""`aggregate.normalize: mapped` through the workflow on the demo: the normalized aggregate
has the filtered aggregate's cells, genes and obs, plus each cell's mapped reads before and
after; every sample ends with the lowest sample's mapped reads per cell (within the thinning's
binomial noise); a sample at rate 1 equals the filtered aggregate value for value (slow:
runs the normalization's jobs in a copy of the demo)."""

import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.slow

OUTPUTS = ["results/aggregate/filtered.normalized.h5ad", "results/qc/normalization.tsv"]


def test_normalized_aggregate_has_equal_mapped_reads_per_cell(demo_run, tmp_path):
    workdir = tmp_path / "demo"
    shutil.copytree(demo_run, workdir, symlinks=True)
    run_snakemake(workdir, "--config", "aggregate={'normalize': 'mapped'}", "--", *OUTPUTS)
    normalized = ad.read_h5ad(workdir / OUTPUTS[0])
    filtered = ad.read_h5ad(workdir / "results/aggregate/filtered.h5ad")
    table = pd.read_csv(workdir / OUTPUTS[1], sep="\t").set_index("sample")

    assert list(normalized.obs_names) == list(filtered.obs_names)
    assert list(normalized.var_names) == list(filtered.var_names)
    assert set(filtered.obs.columns) < set(normalized.obs.columns)
    assert {"mapped_reads", "mapped_reads_normalized"} <= set(normalized.obs.columns)
    # no layer of unthinned counts (anndata 0.13 lists X as layer None)
    assert [key for key in normalized.layers if key is not None] == []
    record = normalized.uns["kbagg"]["normalization"]
    assert record["method"] == "mapped" and record["seed"] == 0
    assert set(record["subsampling_rate"]) == set(table.index)

    reads = normalized.obs.groupby("sample", observed=True)
    lowest = table["mapped_reads_per_cell"].min()
    for sample, row in table.iterrows():
        cells = reads.get_group(sample)
        assert cells["mapped_reads"].sum() == row["mapped_reads"]
        assert cells["mapped_reads_normalized"].sum() == row["mapped_reads_normalized"]
        rate = row["subsampling_rate"]
        assert rate == pytest.approx(lowest / row["mapped_reads_per_cell"])
        sd = np.sqrt(row["mapped_reads"] * rate * (1 - rate)) / row["cells"]
        assert abs(row["mapped_reads_per_cell_normalized"] - lowest) <= 4 * sd + 1e-9
        rows = (filtered.obs["sample"] == sample).to_numpy()
        before, after = filtered.X[rows].toarray(), normalized.X[rows].toarray()
        if rate == 1:
            np.testing.assert_array_equal(after, before)
        else:
            assert (after <= before).all() and after.sum() < before.sum()
