"""kbagg used as a Snakemake module inside another workflow: from a local path
(tests/module/Snakefile) and from a git repository at a release tag (`gitfile`, the offline
stand-in for `github(...)`, through the same source cache)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    REPO,
    assert_same_aggregates_for,
    copy_tree,
    keep_gene_expression_of,
    run_snakemake,
)

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


MODULE_SAMPLE = "pbmc_a"  # one sample: the module's mechanics are the point, not the count


def assert_same_aggregates(workdir: Path, demo_run: Path) -> None:
    assert_same_aggregates_for([MODULE_SAMPLE], workdir, demo_run)


def caller_config(workdir: Path) -> None:
    """The demo's config folder, its sheet cut to one sample's gene-expression lanes."""
    shutil.copytree(REPO / "config", workdir / "config")
    keep_gene_expression_of(workdir / "config" / "samples.tsv", [MODULE_SAMPLE])


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
