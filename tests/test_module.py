"""kbagg used as a Snakemake module inside another workflow (tests/module/Snakefile)."""

from __future__ import annotations

import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow

CALLER = REPO / "tests" / "module" / "Snakefile"


def test_module_run_gives_the_standalone_aggregate(demo_run, tmp_path):
    workdir = tmp_path / "caller"
    shutil.copytree(REPO / "config", workdir / "config")
    proc = run_snakemake(
        workdir, "--configfile", str(CALLER.parent / "module_config.yaml"), snakefile=CALLER
    )
    assert "kbagg_kb_count" in proc.stdout + proc.stderr  # the rules ran under their new names

    for kind in ("filtered", "raw"):
        got = ad.read_h5ad(workdir / "results" / "aggregate" / f"{kind}.h5ad")
        expected = ad.read_h5ad(demo_run / "results" / "aggregate" / f"{kind}.h5ad")
        assert list(got.obs_names) == list(expected.obs_names)
        assert list(got.var_names) == list(expected.var_names)
        np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
        pd.testing.assert_frame_equal(got.obs, expected.obs)
        pd.testing.assert_frame_equal(got.var, expected.var)
