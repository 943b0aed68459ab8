"""Real data end to end: the workflow's matrices equal `kb count` run by hand.

Two workflow runs on the real inputs in ../shared/testdata (skipped when it is absent):

- mouse: chr19 (first 6 Mb) reference, 10x v2 SampleX plus a library that pseudoaligns to
  nothing, run with --keep-going: SampleX succeeds, the unalignable sample fails with a clear
  message, and the aggregate (which needs every sample) is not made;
- human: mitochondrial reference, two 10x v3 PBMC libraries, run to the aggregate.

The by-hand runs (`kb ref` + `kb count` with the workflow's own arguments, in a separate
folder) run in a background thread while Snakemake runs, once per module.
"""

from __future__ import annotations

import filecmp
import gzip
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import kb, run_snakemake

pytestmark = pytest.mark.slow

# Resources written into the test configs, so the by-hand arguments do not hang on the
# schema's defaults: kb count -t 2 -m <mem_mb / 2>M.
THREADS, MEM_MB = 2, 2000
RESOURCES = {
    "reference": {"threads": 2, "mem_mb": 4000, "runtime": 30},
    "onlist": {"threads": 1, "mem_mb": 1000, "runtime": 10},
    "kb_count": {"threads": THREADS, "mem_mb": MEM_MB, "runtime": 30},
    "aggregate": {"threads": 1, "mem_mb": 2000, "runtime": 10},
    "simulate_demo": {"threads": 1, "mem_mb": 1000, "runtime": 10},
}
ONLIST_FILES = {"10xv2": "10x_version2_whitelist.txt.gz", "10xv3": "10x_version3_whitelist.txt.gz"}
UNALIGNABLE = "lamanno_unalignable"


@dataclass
class Sample:
    name: str
    technology: str
    r1: Path
    r2: Path


@dataclass
class Run:
    workdir: Path  # the workflow's working directory
    proc: subprocess.CompletedProcess  # snakemake
    hand: Path  # the by-hand folder: ref/, onlist/<tech>.txt, <sample>/ (kb's -o)
    samples: list[Sample]


# --- by hand ---------------------------------------------------------------------------
def hand_count_args(hand: Path, sample: Sample) -> list[str]:
    """The arguments the workflow's kb_count rule passes (see kbagg.count.kb_count_args)."""
    out = hand / sample.name
    return [
        "count", "-i", str(hand / "ref" / "index.idx"), "-g", str(hand / "ref" / "t2g.txt"),
        "-x", sample.technology, "-o", str(out), "--tmp", str(out / "tmp"),
        "-t", str(THREADS), "-m", f"{MEM_MB // 2}M", "--h5ad", "--overwrite",
        "-w", str(hand / "onlist" / f"{sample.technology}.txt"),
        "--filter", "bustools", str(sample.r1), str(sample.r2),
    ]  # fmt: skip


def by_hand(hand: Path, fasta: Path, gtf: Path, samples: list[Sample]) -> None:
    """kb ref, kb's bundled on-list decompressed, then kb count per sample (if it aligns)."""
    from kb_python.config import TECHNOLOGIES_MAPPING

    ref = hand / "ref"
    ref.mkdir(parents=True)
    kb("ref", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-f1", ref / "cdna.fa",
       "--tmp", ref / "tmp", fasta, gtf)  # fmt: skip
    for tech in {s.technology for s in samples}:
        bundled = Path(TECHNOLOGIES_MAPPING[tech.upper()].chemistry.whitelist_path)
        assert bundled.name == ONLIST_FILES[tech]
        (hand / "onlist").mkdir(exist_ok=True)
        with gzip.open(bundled, "rb") as src, open(hand / "onlist" / f"{tech}.txt", "wb") as dst:
            shutil.copyfileobj(src, dst)
    for sample in samples:
        if sample.name != UNALIGNABLE:
            kb(*hand_count_args(hand, sample))


def run_both(root: Path, fasta: Path, gtf: Path, samples: list[Sample], *args, check: bool):
    """Write config + sheet, run Snakemake and, meanwhile, the by-hand commands."""
    workdir, hand = root / "work", root / "hand"
    workdir.mkdir()
    sheet = workdir / "samples.tsv"
    pd.DataFrame(
        {
            "sample": [s.name for s in samples],
            "fastq_1": [str(s.r1) for s in samples],
            "fastq_2": [str(s.r2) for s in samples],
            "technology": [s.technology for s in samples],
            "donor": [f"d{i + 1}" for i in range(len(samples))],
        }
    ).to_csv(sheet, sep="\t", index=False)
    config = {
        "samples": str(sheet),
        "technology": samples[0].technology,
        "reference": {"fasta": str(fasta), "gtf": str(gtf)},
        "filter": {"enabled": True, "threshold": None},
        "aggregate": {"join": "outer", "raw": True, "index_unique": "-"},
        "resources": RESOURCES,
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    with ThreadPoolExecutor(1) as pool:
        hand_done = pool.submit(by_hand, hand, fasta, gtf, samples)
        proc = run_snakemake(
            workdir, "--configfile", str(workdir / "config.yaml"), *args, check=check
        )
        hand_done.result()
    return Run(workdir, proc, hand, samples)


# --- comparisons -----------------------------------------------------------------------
KB_OUTPUT = {"raw": "counts_unfiltered", "filtered": "counts_filtered"}


def read(path: Path) -> ad.AnnData:
    assert path.is_file(), f"missing {path}"
    return ad.read_h5ad(path)


def assert_same_counts(ours: ad.AnnData, theirs: ad.AnnData, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    assert list(ours.obs_names) == list(theirs.obs_names), f"{what}: barcodes differ"
    assert list(ours.var_names) == list(theirs.var_names), f"{what}: genes differ"
    assert ours.X.dtype == theirs.X.dtype, f"{what}: dtype {ours.X.dtype} != {theirs.X.dtype}"
    diff = abs(ours.X - theirs.X)
    assert diff.sum() == 0, f"{what}: counts differ in {(diff != 0).sum()} entries"


def t2g_gene_names(t2g: Path) -> pd.Series:
    """gene_id -> gene_name straight from kb ref's t2g (name column empty -> the id)."""
    table = pd.read_csv(t2g, sep="\t", header=None, dtype=str, keep_default_na=False)
    names = dict(zip(table[1], table[2].where(table[2] != "", table[1]), strict=False))
    return pd.Series(names)


def normalise_command(args: list[str]) -> list[str]:
    """kb count arguments with the folder-specific paths (-i -g -o --tmp -w) blanked."""
    out, blank = [], False
    for arg in args:
        out.append("<path>" if blank else arg)
        blank = arg in ("-i", "-g", "-o", "--tmp", "-w")
    return out


def logged_kb_command(run: Run, sample: str) -> list[str]:
    """The kb count arguments kb_count.py logged for `sample` (its log's first line)."""
    first = (run.workdir / "logs" / "kb_count" / f"{sample}.log").read_text().splitlines()[0]
    prefix = f"[{sample}] $ kb "
    assert first.startswith(prefix), first
    return first[len(prefix) :].split()


def check_sample_equals_by_hand(run: Run, sample: Sample) -> None:
    w, hand = run.workdir, run.hand
    # Same kb arguments (bar folder-specific paths), same on-list, same reference.
    assert normalise_command(logged_kb_command(run, sample.name)) == normalise_command(
        hand_count_args(hand, sample)
    )
    onlist = w / "resources" / "onlists" / f"{sample.technology}.txt"
    assert filecmp.cmp(onlist, hand / "onlist" / f"{sample.technology}.txt", shallow=False)
    t2g = hand / "ref" / "t2g.txt"
    assert filecmp.cmp(w / "resources" / "reference" / "standard" / "t2g.txt", t2g, False)
    names = t2g_gene_names(t2g)
    for kind, kb_folder in KB_OUTPUT.items():
        ours = read(w / "results" / "samples" / sample.name / f"{kind}.h5ad")
        theirs = read(hand / sample.name / kb_folder / "adata.h5ad")
        assert ours.n_obs > 0 and ours.n_vars > 0
        assert_same_counts(ours, theirs, f"{sample.name} {kind} vs kb count by hand")
        # kb's own matrix, kept in the sample's kb/ folder, is the same too.
        kept = read(w / "results" / "samples" / sample.name / "kb" / kb_folder / "adata.h5ad")
        assert_same_counts(ours, kept, f"{sample.name} {kind} vs its kb/ folder")
        assert ours.var.index.name == "gene_id"
        assert ours.obs.index.name == "barcode"
        assert set(ours.var_names) <= set(names.index)
        np.testing.assert_array_equal(
            ours.var["gene_name"].to_numpy(dtype=str),
            names.reindex(ours.var_names).to_numpy(dtype=str),
        )
    raw = read(w / "results" / "samples" / sample.name / "raw.h5ad")
    filtered = read(w / "results" / "samples" / sample.name / "filtered.h5ad")
    # The knee filter keeps a subset (with these few reads it may keep every barcode).
    assert set(filtered.obs_names) <= set(raw.obs_names)


# --- data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mouse(testdata, tmp_path_factory) -> Run:
    x, u = testdata / "mouse_sampleX_10xv2", testdata / "mouse_lamanno_10xv2_unalignable"
    samples = [
        Sample("SampleX", "10xv2", x / "SampleX_S1_L001_R1_001.fastq.gz",
               x / "SampleX_S1_L001_R2_001.fastq.gz"),
        Sample(UNALIGNABLE, "10xv2", u / "lamanno_S1_L001_R1_001.fastq.gz",
               u / "lamanno_S1_L001_R2_001.fastq.gz"),
    ]  # fmt: skip
    ref = testdata / "mouse_chr19_6mb"
    return run_both(
        tmp_path_factory.mktemp("mouse"),
        ref / "GRCm39.chr19_0-6Mb.fa.gz",
        ref / "gencode.vM31.chr19_0-6Mb.gtf.gz",
        samples,
        "--keep-going",
        check=False,
    )


@pytest.fixture(scope="module")
def human(testdata, tmp_path_factory) -> Run:
    p = testdata / "human_pbmc_cellplex_10xv3"
    samples = [
        Sample(name, "10xv3", p / f"{name}_{lane}_L001_R1_001.fastq.gz",
               p / f"{name}_{lane}_L001_R2_001.fastq.gz")
        for name, lane in (("PBMC1", "S2"), ("PBMC2", "S1"))
    ]  # fmt: skip
    mt = testdata / "human_mt"
    return run_both(
        tmp_path_factory.mktemp("human"), mt / "MT.fa.gz", mt / "MT.gtf.gz", samples, check=True
    )


# --- mouse: one good sample, one that pseudoaligns nothing -------------------------------
def test_mouse_run_fails_overall_with_keep_going(mouse):
    assert mouse.proc.returncode != 0, "the unalignable sample should fail the run"


def test_mouse_good_sample_equals_kb_count_by_hand(mouse):
    check_sample_equals_by_hand(mouse, mouse.samples[0])


def test_mouse_unalignable_sample_fails_with_clear_message(mouse):
    # The workflow's own error line (the rule script's "error: ...", which it also writes to
    # the terminal), not kallisto's log: that is only echoed when the profile shows failed logs.
    errors = [ln for ln in mouse.proc.stderr.splitlines() if ln.startswith("error:")]
    telling = [
        ln
        for ln in errors
        if UNALIGNABLE in ln and re.search(r"pseudoaligned 0 of|0 reads pseudoaligned", ln)
    ]
    assert telling, (
        f"no error line in snakemake's stderr names sample {UNALIGNABLE!r} and says 0 reads "
        "pseudoaligned; error lines:\n" + "\n".join(errors)
    )
    # Snakemake's own report of the failed job names its outputs.
    errors = mouse.proc.stderr.split("Error in rule kb_count:")[1:]
    assert any(f"results/samples/{UNALIGNABLE}/kb/" in e.split("log:")[0] for e in errors), (
        "no 'Error in rule kb_count' block for the unalignable sample in snakemake's stderr"
    )


def test_mouse_unalignable_sample_leaves_no_matrix(mouse):
    folder = mouse.workdir / "results" / "samples" / UNALIGNABLE
    for kind in ("raw", "filtered"):
        assert not (folder / f"{kind}.h5ad").exists()
    assert not (folder / "kb").exists(), "kb/ is only moved into place on success"


def test_mouse_aggregate_not_produced(mouse):
    for kind in ("raw", "filtered"):
        assert not (mouse.workdir / "results" / "aggregate" / f"{kind}.h5ad").exists()


# --- human: two PBMC libraries to the aggregate --------------------------------------------
@pytest.mark.parametrize("index", [0, 1], ids=["PBMC1", "PBMC2"])
def test_human_sample_equals_kb_count_by_hand(human, index):
    check_sample_equals_by_hand(human, human.samples[index])


@pytest.mark.parametrize("kind", ["filtered", "raw"])
def test_human_aggregate_has_both_samples(human, kind):
    agg = read(human.workdir / "results" / "aggregate" / f"{kind}.h5ad")
    names = [s.name for s in human.samples]
    assert list(pd.unique(agg.obs["sample"].astype(str))) == names
    assert agg.obs.groupby("sample", observed=True)["donor"].first().astype(str).to_dict() == {
        "PBMC1": "d1", "PBMC2": "d2"
    }  # fmt: skip
    total = 0
    for sample in names:
        own = read(human.workdir / "results" / "samples" / sample / f"{kind}.h5ad")
        part = agg[agg.obs["sample"].astype(str) == sample]
        total += own.n_obs
        assert list(part.obs_names) == [f"{b}-{sample}" for b in own.obs_names]
        # Outer join: every gene of the sample is there, with the sample's counts.
        assert set(own.var_names) <= set(agg.var_names)
        mine = part[:, list(own.var_names)].X
        assert abs(mine - own.X).sum() == 0, f"{sample}: aggregate counts differ"
        others = [g for g in agg.var_names if g not in set(own.var_names)]
        assert part[:, others].X.sum() == 0
    assert agg.n_obs == total


def test_human_runs_with_emptydrops_and_warns_instead_of_failing(human, tmp_path):
    """EmptyDrops on tiny real libraries: these have no barcode above its ambient bound
    (`filter.emptydrops.lower`), so it calls no cell; the run warns and still finishes."""
    work = tmp_path / "work"
    shutil.copytree(human.workdir, work, symlinks=True)
    config_path = work / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["filter"]["method"] = "emptydrops"
    config_path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(work, "--configfile", str(config_path))
    said = proc.stdout + proc.stderr
    for sample in ("PBMC1", "PBMC2"):
        assert f"WARNING: sample '{sample}': EmptyDrops:" in said
        raw = read(work / "results" / "samples" / sample / "raw.h5ad")
        assert "emptydrops_cell" in raw.obs and "bustools_cell" in raw.obs
    agg = read(work / "results" / "aggregate" / "filtered.h5ad")
    assert agg.n_obs == sum(
        read(work / "results" / "samples" / s / "filtered.h5ad").n_obs for s in ("PBMC1", "PBMC2")
    )
