"""kbagg used as a Snakemake module inside another workflow: from a local path
(tests/module/Snakefile) and from a git repository at a release tag (`gitfile`, the offline
stand-in for `github(...)`, through the same source cache)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, copy_tree, run_snakemake

pytestmark = pytest.mark.slow

CALLER = REPO / "tests" / "module" / "Snakefile"
VERSION = re.search(r'__version__ = "([^"]+)"', (REPO / "src/kbagg/__init__.py").read_text())[1]

GIT_CALLER = """
configfile: "module_config.yaml"


module kbagg:
    snakefile:
        gitfile("{repo}", path="workflow/Snakefile", tag="{tag}")
    config:
        config["kbagg"]


use rule * from kbagg as kbagg_*


rule all:
    input:
        rules.kbagg_all.input,
    default_target: True
"""


def assert_same_aggregates(workdir: Path, demo_run: Path) -> None:
    for kind in ("filtered", "raw"):
        got = ad.read_h5ad(workdir / "results" / "aggregate" / f"{kind}.h5ad")
        expected = ad.read_h5ad(demo_run / "results" / "aggregate" / f"{kind}.h5ad")
        assert list(got.obs_names) == list(expected.obs_names)
        assert list(got.var_names) == list(expected.var_names)
        np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
        pd.testing.assert_frame_equal(got.obs, expected.obs)
        pd.testing.assert_frame_equal(got.var, expected.var)


def caller_config(workdir: Path) -> None:
    """The demo's config folder, its sheet cut to the gene-expression libraries."""
    shutil.copytree(REPO / "config", workdir / "config")
    sheet_path = workdir / "config" / "samples.tsv"
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    sheet[sheet["feature_type"] == "Gene Expression"].to_csv(sheet_path, sep="\t", index=False)


def test_module_run_gives_the_standalone_aggregate(demo_run, tmp_path):
    workdir = tmp_path / "caller"
    caller_config(workdir)
    proc = run_snakemake(
        workdir, "--configfile", str(CALLER.parent / "module_config.yaml"), snakefile=CALLER
    )
    assert "kbagg_kb_count" in proc.stdout + proc.stderr  # the rules ran under their new names
    assert_same_aggregates(workdir, demo_run)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_module_from_a_git_tag_gives_the_standalone_aggregate(demo_run, tmp_path):
    """The working tree committed and tagged as a release, used as the README says.

    Snakemake's gitfile needs a repository with a work tree (it runs `git rev-parse
    --show-toplevel`, which fails in a bare one), so the release is cloned without a
    checkout: its work tree stays empty and every file comes out of git at the tag."""
    source = copy_tree(tmp_path / "source")
    git("init", "-q", cwd=source)
    git("add", "-A", cwd=source)
    git("commit", "-q", "-m", "release", cwd=source)
    git("tag", f"v{VERSION}", cwd=source)
    clone = tmp_path / "kbagg"
    git("clone", "-q", "--no-checkout", str(source), str(clone), cwd=tmp_path)
    shutil.rmtree(source)
    assert [p.name for p in clone.iterdir()] == [".git"]

    workdir = tmp_path / "caller"
    caller_config(workdir)
    shutil.copy(CALLER.parent / "module_config.yaml", workdir / "module_config.yaml")
    snakefile = workdir / "Snakefile"
    snakefile.write_text(GIT_CALLER.format(repo=clone, tag=f"v{VERSION}"))
    proc = run_snakemake(workdir, snakefile=snakefile)
    assert "kbagg_kb_count" in proc.stdout + proc.stderr
    assert_same_aggregates(workdir, demo_run)
