"""`ambient.method: soup` through the workflow on the demo: layer and column reach the
sample's filtered.h5ad and the aggregate (slow: reruns the cells rule of a demo copy)."""

import shutil

import anndata as ad
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.slow


def test_ambient_layer_and_fraction_reach_filtered_and_aggregate(demo_run, tmp_path):
    workdir = tmp_path / "demo"
    shutil.copytree(demo_run, workdir, symlinks=True)
    targets = ["results/samples/pbmc_a/filtered.h5ad", "results/aggregate/filtered.h5ad"]
    run_snakemake(workdir, "--config", "ambient={'method': 'soup'}", "--", *targets)
    cells = ad.read_h5ad(workdir / targets[0])
    assert "decontaminated" in cells.layers and "ambient_fraction" in cells.obs
    assert "ambient_profile" in cells.var and "kbagg_ambient" in cells.uns
    # the demo's empty droplets hold 1-3 UMIs each: too thin a soup, so a warning names it
    assert "sample 'pbmc_a': ambient RNA not removed" in cells.uns["kbagg_ambient"]
    aggregate = ad.read_h5ad(workdir / targets[1], backed="r")
    assert "decontaminated" in aggregate.layers and "ambient_fraction" in aggregate.obs
