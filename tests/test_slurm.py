"""The demo on a real SLURM cluster (Debian's slurmctld/slurmd/munge on localhost).

tests/slurm/start_cluster.sh installs and starts the cluster (root needed: CI runs as root);
the run uses the shipped workflow/profiles/slurm profile with the status command switched to
squeue, because this one-node cluster has no accounting database for sacct.

One run checks two things: every rule ran as a SLURM job and the aggregate equals the local
run; and a job killed by SLURM for exceeding its memory succeeds on retry with more memory
(the aggregate asks for mem_mb * attempt and starts from a deliberately tiny 150 MB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import (
    assert_same_aggregates_for,
    copy_tree,
    keep_gene_expression_of,
    slurm_cluster_script,
    slurm_controller_running,
)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.skip("starting the local SLURM cluster needs root (apt-get, /etc/slurm, daemons)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    # Usually running already: conftest.pytest_sessionstart starts it for the whole session.
    running = slurm_controller_running()
    start = slurm_cluster_script("start_cluster.sh")
    assert start.returncode == 0, f"cluster did not start:\n{start.stdout}\n{start.stderr}"
    yield
    if not running:
        slurm_cluster_script("stop_cluster.sh")


def slurm_jobs_after(job_id: int) -> pd.DataFrame:
    """Jobs newer than job_id: id, state, memory asked, and the plugin's rule comment."""
    out = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i|%T|%m|%k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    jobs = pd.DataFrame(rows, columns=["id", "state", "mem", "comment"])
    jobs["id"] = jobs["id"].astype(int)
    jobs["rule"] = jobs["comment"].str.removeprefix("rule_").str.split("_wildcards_").str[0]
    return jobs[jobs["id"] > job_id].sort_values("id")


SLURM_SAMPLES = ["pbmc_a"]  # one sample in two lanes: the mechanics are the point


@pytest.fixture(scope="module")
def slurm_demo(slurm_cluster, tmp_path_factory):
    clone = copy_tree(tmp_path_factory.mktemp("slurm") / "kbagg")
    config_path = clone / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    # SLURM kills attempt 1: the job step (Snakemake inside the job + the aggregate) needs
    # more than 150 MB; attempts 2-4 ask for 300, 450, 600 MB.
    config["resources"].setdefault("aggregate", {})["mem_mb"] = 150
    # One sample, its gene-expression lanes only, no MultiQC and no SOMA store: every rule
    # of that DAG runs as a SLURM job, and the aggregate is the local run's for that sample.
    config["qc"] = {"multiqc": False}
    config["aggregate"]["soma"] = {"enabled": False}
    del config["hashtags"]
    config_path.write_text(yaml.safe_dump(config))
    keep_gene_expression_of(clone / "config" / "samples.tsv", SLURM_SAMPLES)

    before = slurm_jobs_after(-1)
    last_id = int(before["id"].max()) if len(before) else 0
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        "workflow/profiles/slurm",
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--retries",
        "3",
        "--jobs",
        "4",
    ]
    proc = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"SLURM run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return clone, slurm_jobs_after(last_id), proc.stdout + proc.stderr


def test_every_rule_ran_as_a_slurm_job(slurm_demo):
    _, jobs, _ = slurm_demo
    completed = jobs[jobs["state"] == "COMPLETED"]["rule"].value_counts().to_dict()
    assert completed == {
        "simulate_demo": 1,
        "reference": 1,
        "onlist": 1,
        "fastq_check": 2,
        "kb_count": 1,
        "cells": 1,
        "aggregate": 2,
        "qc_sample": 1,
        "qc_summary": 1,
    }


def test_aggregate_equals_the_local_run(slurm_demo, demo_run):
    clone, _, _ = slurm_demo
    assert_same_aggregates_for(SLURM_SAMPLES, clone, demo_run)


def test_out_of_memory_kill_is_retried_with_more_memory(slurm_demo):
    clone, jobs, _ = slurm_demo
    aggregate = jobs[jobs["rule"] == "aggregate"]
    failed = aggregate[aggregate["state"].isin(["FAILED", "OUT_OF_MEMORY"])]
    assert len(failed) >= 1, f"no aggregate attempt was killed:\n{aggregate}"
    assert set(failed["mem"]) <= {"150M", "300M", "450M"}
    assert (aggregate["state"] == "COMPLETED").sum() == 2
    killed_logs = [
        log
        for log in (clone / ".snakemake" / "slurm_logs").rglob("*.log")
        if "exceeded memory limit" in log.read_text(errors="replace")
    ]
    assert killed_logs, "no SLURM log says a job exceeded its memory limit"
    # Memory asked grows with the attempt: the completed attempts asked more than the first.
    asked = aggregate["mem"].str.removesuffix("M").astype(int)
    assert asked[aggregate["state"] == "COMPLETED"].min() > asked.min()


def test_slurm_logs_are_kept_per_rule(slurm_demo):
    clone, _, _ = slurm_demo
    rules = {p.name for p in (clone / ".snakemake" / "slurm_logs").iterdir()}
    assert {"rule_kb_count", "rule_aggregate", "rule_reference"} <= rules


def test_cluster_script_is_idempotent(slurm_cluster):
    again = slurm_cluster_script("start_cluster.sh")
    assert again.returncode == 0
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    assert state.split()[0] in {"idle", "mixed", "allocated"}
