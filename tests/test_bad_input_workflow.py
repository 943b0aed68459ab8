"""Hostile and damaged input through the real workflow (real Snakemake, kb, kallisto, bustools).

- FASTQ folders named with shell metacharacters, and metadata and config values that are
  shell code: nothing runs, and the counts equal the simulator's truth;
- damaged FASTQs (truncated gzip, unequal R1/R2, R1 too short for the technology) fail
  their sample by name while the good sample finishes under --keep-going; a failed sample
  never gets a matrix;
- `kill -9` of Snakemake during kb count: the rerun stops the orphaned kb and gives the
  true counts.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml
from conftest import SNAKEFILE, run_snakemake

from kbagg.simulate.demo import write_demo
from kbagg.simulate.spec import DEMO, fastq_path

pytestmark = pytest.mark.slow

TECHNOLOGY = {s.name: s.technology for s in DEMO.samples}
LANES = {s.name: s.lanes for s in DEMO.samples}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The simulated genome, GTF, FASTQs and truth, written once."""
    folder = tmp_path_factory.mktemp("demo_data")
    write_demo(folder)
    return folder


def write_config(workdir: Path, demo_data: Path, aggregate: dict | None = None) -> Path:
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": str(demo_data / "genome.fa"), "gtf": str(demo_data / "genes.gtf")},
        "aggregate": {"join": "outer", **(aggregate or {})},
        "qc": {"multiqc": False, "doublets": False},  # not what these tests are about
        "resources": {"kb_count": {"threads": 1, "mem_mb": 1000, "runtime": 30}},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_sheet(workdir: Path, rows: list[list[str]], metadata: str = "condition") -> None:
    lines = ["\t".join(["sample", "fastq_1", "fastq_2", "technology", metadata])]
    lines += ["\t".join(row) for row in rows]
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n")


def truth_cells(demo_data: Path, sample: str) -> ad.AnnData:
    truth = ad.read_h5ad(demo_data / "truth" / f"{sample}.h5ad")
    return truth[truth.obs["is_cell"].to_numpy()]


def assert_equals_truth(workdir: Path, demo_data: Path, sample: str, as_name: str) -> None:
    expected = truth_cells(demo_data, sample)
    got = ad.read_h5ad(workdir / "results" / "samples" / as_name / "filtered.h5ad")
    assert sorted(got.obs_names) == sorted(expected.obs_names)
    np.testing.assert_array_equal(
        got[expected.obs_names, expected.var_names].X.toarray(), expected.X.toarray()
    )


def no_marker_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("pwned*")]


# --- shell metacharacters -----------------------------------------------------------------
FOLDERS = [
    "$(touch pwned_dollar)",
    "|touch pwned_pipe|",
    "with space",
    "semi;touch pwned_semi",
    "`touch pwned_tick`",
    'quote\'s "dq" &',
]


def test_metacharacters_in_paths_metadata_and_config_never_run(tmp_path, demo_data):
    workdir = tmp_path / "work"
    workdir.mkdir()
    rows, folders = [], iter(FOLDERS)
    for sample in TECHNOLOGY:
        for lane in range(1, LANES[sample] + 1):
            folder = workdir / "fq" / next(folders)
            folder.mkdir(parents=True)
            pair = []
            for read in (1, 2):
                source = fastq_path(demo_data, sample, lane, read)
                shutil.copy(source, folder / source.name)
                pair.append(str((folder / source.name).relative_to(workdir)))
            rows.append([sample, *pair, TECHNOLOGY[sample], "$(touch pwned_meta); `touch x`"])
    write_sheet(workdir, rows)
    label = "x|touch pwned_label|"
    config = write_config(workdir, demo_data, aggregate={"label": label, "index_unique": ";"})
    run_snakemake(workdir, "--configfile", str(config))

    assert no_marker_files(workdir, tmp_path, Path.cwd()) == []
    for sample in TECHNOLOGY:
        assert_equals_truth(workdir, demo_data, sample, sample)
    agg = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad")
    assert list(agg.obs[label].cat.categories) == list(TECHNOLOGY)
    assert set(agg.obs["condition"]) == {"$(touch pwned_meta); `touch x`"}
    assert agg.obs_names.str.contains(";pbmc_").all()
    record = agg.uns["kbagg"]["inputs"]["pbmc_a"]["fastqs"]
    assert [record[f"rna_lane{n}"]["files"]["fastq_1"]["path"] for n in (1, 2)] == [
        rows[0][1],
        rows[1][1],
    ]


# --- reference that does not match -----------------------------------------------------------
def test_gtf_naming_that_matches_no_fasta_header_fails_before_kb_ref(tmp_path, demo_data, testdata):
    workdir = tmp_path / "work"
    workdir.mkdir()
    rows = [
        [
            "pbmc_c",
            str(fastq_path(demo_data, "pbmc_c", 1, 1)),
            str(fastq_path(demo_data, "pbmc_c", 1, 2)),
            "10xv3",
            "x",
        ]
    ]
    write_sheet(workdir, rows)
    config = write_config(workdir, demo_data)
    settings = yaml.safe_load(config.read_text())
    settings["reference"]["fasta"] = str(testdata / "human_mt" / "MT.fa.gz")
    config.write_text(yaml.safe_dump(settings))
    proc = run_snakemake(workdir, "--configfile", str(config), "--until", "reference", check=False)
    assert proc.returncode == 1
    said = proc.stdout + proc.stderr
    assert "error: reference: GTF chromosomes chrS are not in the FASTA headers MT" in said
    assert "$ kb ref" not in (workdir / "logs" / "reference.log").read_text()
    assert not (workdir / "resources" / "reference").exists() or not list(
        (workdir / "resources" / "reference").rglob("index.idx")
    )


# --- damaged FASTQs -----------------------------------------------------------------------
def take_reads(source: Path, target: Path, n_reads: int) -> None:
    with gzip.open(source, "rt") as src, gzip.open(target, "wt") as dst:
        for _ in range(4 * n_reads):
            dst.write(src.readline())


def test_damaged_fastqs_fail_their_sample_by_name(tmp_path, demo_data):
    workdir = tmp_path / "work"
    fq = workdir / "fq"
    fq.mkdir(parents=True)

    def copy(sample, lane, read, name):
        target = fq / name
        shutil.copy(fastq_path(demo_data, sample, lane, read), target)
        return f"fq/{name}"

    rows = [["good", copy("pbmc_c", 1, 1, "good_R1.fq.gz"), copy("pbmc_c", 1, 2, "good_R2.fq.gz")]]
    rows[0] += ["10xv3", "ok"]
    # truncated: lane 2's R2 cut to half its bytes
    trunc = [
        copy("pbmc_a", lane, read, f"trunc_L{lane}_R{read}.fq.gz")
        for lane in (1, 2)
        for read in (1, 2)
    ]
    r2 = fq / "trunc_L2_R2.fq.gz"
    size = r2.stat().st_size
    r2.write_bytes(r2.read_bytes()[: size // 2])
    rows += [["trunc", *trunc[:2], "10xv2", "bad"], ["trunc", *trunc[2:], "10xv2", "bad"]]
    # unequal: R2 keeps its first 5,000 reads
    r1 = copy("pbmc_b", 1, 1, "unequal_R1.fq.gz")
    take_reads(fastq_path(demo_data, "pbmc_b", 1, 2), fq / "unequal_R2.fq.gz", 5000)
    rows.append(["unequal", r1, "fq/unequal_R2.fq.gz", "10xv3", "bad"])
    # 10x v2 reads (26-base R1) declared as 10x v3 (barcode + UMI need 28)
    rows.append(
        [
            "wrongtech",
            copy("pbmc_a", 1, 1, "v2_R1.fq.gz"),
            copy("pbmc_a", 1, 2, "v2_R2.fq.gz"),
            "10xv3",
            "bad",
        ]
    )
    write_sheet(workdir, rows)
    config = write_config(workdir, demo_data)
    proc = run_snakemake(workdir, "--configfile", str(config), "--keep-going", check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0

    samples = workdir / "results" / "samples"
    assert (samples / "good" / "filtered.h5ad").exists()
    for bad in ("trunc", "unequal", "wrongtech"):
        assert not (samples / bad / "raw.h5ad").exists(), f"{bad} was counted as good"
        assert not (samples / bad / "filtered.h5ad").exists(), f"{bad} was counted as good"
    assert not (workdir / "results" / "aggregate" / "filtered.h5ad").exists()

    n_r1 = len(gzip.decompress((fq / "unequal_R1.fq.gz").read_bytes()).splitlines()) // 4
    expected = [
        "error: sample 'trunc', lane 2: R2 fq/trunc_L2_R2.fq.gz: truncated gzip stream",
        f"error: sample 'unequal', lane 1: R1 fq/unequal_R1.fq.gz has {n_r1:,} reads, "
        "R2 fq/unequal_R2.fq.gz has 5,000",
        "error: sample 'wrongtech', lane 1: R1 fq/v2_R1.fq.gz: read 1 (line 2) has 26 bases, "
        "fewer than the 28",
    ]
    for line in expected:
        assert line in said, f"missing: {line}\n{said[-6000:]}"


# --- kill -9 of Snakemake during kb count -------------------------------------------------
def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_kill_9_during_kb_count_then_rerun_stops_the_orphan(tmp_path, demo_data):
    workdir = tmp_path / "work"
    workdir.mkdir()
    rows = [
        [
            "pbmc_b",
            str(fastq_path(demo_data, "pbmc_b", lane, 1)),
            str(fastq_path(demo_data, "pbmc_b", lane, 2)),
            "10xv3",
            "x",
        ]
        for lane in (1, 2)
    ]
    write_sheet(workdir, rows)
    config = write_config(workdir, demo_data)
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir)]
    command += ["--cores", "2", "--configfile", str(config)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = workdir / "results" / "samples" / "pbmc_b" / ".kb_count.lock"
    deadline = time.monotonic() + 300
    holder = {}
    while time.monotonic() < deadline and first.poll() is None:
        try:
            holder = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder.get("kb_pgid"):
            break
        time.sleep(0.2)
    assert holder.get("kb_pgid"), "kb count never started"
    time.sleep(1.0)  # kb is at work now
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert alive(holder["pid"]) and alive(holder["kb_pgid"]), "no orphan to test with"
    # Hold the orphan's kb where it is: on a loaded machine it finished on its own during
    # the unlock below, leaving nothing to stop (a CI failure). The rerun's SIGKILL still
    # ends a stopped process group.
    os.killpg(holder["kb_pgid"], signal.SIGSTOP)

    run_snakemake(workdir, "--configfile", str(config), "--unlock")
    run_snakemake(workdir, "--configfile", str(config))

    assert not alive(holder["pid"]) and not alive(holder["kb_pgid"])
    log = (workdir / "logs" / "kb_count" / "pbmc_b.log").read_text()
    assert f"stopping kb count pid {holder['pid']} left running by an interrupted run" in log
    assert_equals_truth(workdir, demo_data, "pbmc_b", "pbmc_b")
    assert list((workdir / "results" / "samples" / "pbmc_b").glob("kb.attempt-*")) == []
