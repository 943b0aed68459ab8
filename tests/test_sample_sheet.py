"""Sample sheet and config checks: bad input stops with the file, line, sample and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

from kbagg.config import check_config, count_extra_args
from kbagg.errors import KbaggError
from kbagg.sheet import SampleSheetError, load_sample_sheet

HEADER = "sample\tfastq_1\tfastq_2\ttechnology\tcondition\n"


def make_fastqs(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def write_sheet(folder: Path, body: str, header: str = HEADER) -> Path:
    sheet = folder / "samples.tsv"
    sheet.write_text(header + body)
    return sheet


def test_lanes_group_by_sample_and_paths_resolve_against_the_sheet(tmp_path):
    make_fastqs(tmp_path / "sheetdir" / "fq", "a1_R1.fq.gz", "a1_R2.fq.gz", "a2_R1.fq.gz")
    make_fastqs(tmp_path / "sheetdir" / "fq", "a2_R2.fq.gz", "b_R1.fq.gz", "b_R2.fq.gz")
    sheet = write_sheet(
        tmp_path / "sheetdir",
        "A\tfq/a1_R1.fq.gz\tfq/a1_R2.fq.gz\t10xv2\tctrl\n"
        "A\tfq/a2_R1.fq.gz\tfq/a2_R2.fq.gz\t10xv2\tctrl\n"
        "B\tfq/b_R1.fq.gz\tfq/b_R2.fq.gz\t\ttreated\n",
    )
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    assert loaded.names == ["A", "B"]
    assert loaded.fastqs("A") == [
        "sheetdir/fq/a1_R1.fq.gz",
        "sheetdir/fq/a1_R2.fq.gz",
        "sheetdir/fq/a2_R1.fq.gz",
        "sheetdir/fq/a2_R2.fq.gz",
    ]
    assert loaded.technology("A") == "10xv2"
    assert loaded.technology("B") == "10xv3"  # the config default
    assert loaded.metadata().to_dict("list") == {
        "sample": ["A", "B"],
        "condition": ["ctrl", "treated"],
    }


def test_a_sheet_without_metadata_columns_keeps_its_samples(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\n", header="sample\tfastq_1\tfastq_2\n")
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    assert loaded.names == ["S1"] and loaded.metadata_columns == []
    assert loaded.technology("S1") == "10xv3" and loaded.feature_libraries("S1") == []


def test_feature_libraries_belong_to_the_sample(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq")
    header = "sample\tfastq_1\tfastq_2\ttechnology\tfeature_type\n"
    body = "S1\ta.fq\tb.fq\t10xv3\t\nS1\tc.fq\td.fq\t10xv3\tAntibody Capture\n"
    loaded = load_sample_sheet(write_sheet(tmp_path, body, header), "10xv3", workdir=tmp_path)
    assert loaded.feature_libraries("S1") == ["Antibody Capture"]
    assert loaded.modalities("S1") == ["rna", "prot"]
    assert loaded.fastqs("S1") == ["a.fq", "b.fq"]
    assert loaded.fastqs("S1", "Antibody Capture") == ["c.fq", "d.fq"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "S1\tc.fq\td.fq\t10xv3\tAntibody Capture\n",
            "sample 'S1' has a 'Antibody Capture' library but no 'Gene Expression' library",
        ),
        ("S1\ta.fq\tb.fq\t10xv3\tProtein\n", "column feature_type: 'Protein' is not one of"),
    ],
)
def test_feature_library_errors_name_the_sample(tmp_path, body, message):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq")
    header = "sample\tfastq_1\tfastq_2\ttechnology\tfeature_type\n"
    with pytest.raises(SampleSheetError, match=re.escape(message)):
        load_sample_sheet(write_sheet(tmp_path, body, header), "10xv3", workdir=tmp_path)


def test_paths_outside_the_workdir_become_absolute(tmp_path):
    make_fastqs(tmp_path / "data", "r1.fq", "r2.fq")
    sheet = write_sheet(tmp_path / "data", "S\tr1.fq\tr2.fq\t10xv2\tx\n")
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path / "elsewhere")
    assert loaded.fastqs("S") == [
        str(tmp_path / "data" / "r1.fq"),
        str(tmp_path / "data" / "r2.fq"),
    ]


def test_missing_fastq_names_line_sample_and_column(tmp_path):
    make_fastqs(tmp_path, "r1.fq")
    sheet = write_sheet(tmp_path, "S1\tr1.fq\tmissing_R2.fq\t10xv2\tx\n")
    with pytest.raises(SampleSheetError) as error:
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    message = str(error.value)
    for part in ("line 2", "sample 'S1'", "column fastq_2", "file not found", "missing_R2.fq"):
        assert part in message


def test_files_a_rule_will_write_need_not_exist(tmp_path):
    sheet = write_sheet(tmp_path, "S1\tr1.fq\tr2.fq\t10xv2\tx\n")
    loaded = load_sample_sheet(
        sheet, "10xv3", workdir=tmp_path, will_exist=[tmp_path / "r1.fq", tmp_path / "r2.fq"]
    )
    assert loaded.fastqs("S1") == ["r1.fq", "r2.fq"]


def test_conflicting_technology_across_lanes_names_sample_lines_and_values(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS1\tc.fq\td.fq\t10xv3\tx\n")
    with pytest.raises(SampleSheetError) as error:
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    message = str(error.value)
    for part in ("sample 'S1'", "column technology", "line 2: 10xv2", "line 3: 10xv3"):
        assert part in message


def test_conflicting_metadata_across_lanes_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tctrl\nS1\tc.fq\td.fq\t10xv2\ttreated\n")
    with pytest.raises(SampleSheetError, match="sample 'S1'.*column condition"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_missing_column_is_named(tmp_path):
    sheet = write_sheet(tmp_path, "S1\ta.fq\n", header="sample\tfastq_1\n")
    with pytest.raises(SampleSheetError, match="missing required column.*fastq_2"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_same_fastq_in_two_samples_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS2\ta.fq\tc.fq\t10xv2\tx\n")
    with pytest.raises(
        SampleSheetError,
        match=r"file a.fq is used twice: line 2 \(sample 'S1', fastq_1\) and line 3 "
        r"\(sample 'S2', fastq_1\)",
    ):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_same_fastq_as_r1_and_r2_of_two_lanes_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS1\tc.fq\ta.fq\t10xv2\tx\n")
    with pytest.raises(SampleSheetError, match=r"line 2 \(sample 'S1', fastq_1\) and line 3"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_fastq_1_equal_to_fastq_2_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\ta.fq\t10xv2\tx\n")
    with pytest.raises(
        SampleSheetError, match=r"line 2, sample 'S1': fastq_1 and fastq_2 are the same file"
    ):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_the_same_file_under_another_name_is_found(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq")
    (tmp_path / "link.fq").symlink_to(tmp_path / "a.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tlink.fq\t10xv2\tx\n")
    with pytest.raises(SampleSheetError, match="fastq_1 and fastq_2 are the same file"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_empty_sheet_names_the_sheet(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_bytes(b"")
    with pytest.raises(SampleSheetError, match=f"sample sheet {sheet}: the file is empty"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_header_only_sheet_names_the_sheet(tmp_path):
    sheet = write_sheet(tmp_path, "")
    with pytest.raises(SampleSheetError, match=f"sample sheet {sheet}: only a header line"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_comma_separated_sheet_says_tab_separated_expected(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq")
    sheet = tmp_path / "samples.csv"
    sheet.write_text("sample,fastq_1,fastq_2\nS1,a.fq,b.fq\n")
    with pytest.raises(SampleSheetError, match="tab-separated expected.*separated by ','"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_byte_order_mark_and_windows_line_ends_are_read(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq")
    sheet = tmp_path / "samples.tsv"
    sheet.write_bytes("\ufeffsample\tfastq_1\tfastq_2\r\nS1\ta.fq\tb.fq\r\n".encode())
    assert load_sample_sheet(sheet, "10xv3", workdir=tmp_path).fastqs("S1") == ["a.fq", "b.fq"]


def test_duplicate_column_names_are_an_error(tmp_path):
    sheet = write_sheet(
        tmp_path, "S1\ta.fq\tb.fq\tx\ty\n", header="sample\tfastq_1\tfastq_2\tdonor\tdonor\n"
    )
    with pytest.raises(SampleSheetError, match="column\\(s\\) donor appear more than once"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_metadata_column_named_like_the_label_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq")
    sheet = write_sheet(
        tmp_path, "S1\ta.fq\tb.fq\tb1\n", header="sample\tfastq_1\tfastq_2\tbatch\n"
    )
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    loaded.check_obs_columns("sample")
    with pytest.raises(SampleSheetError, match="metadata column 'batch'.*aggregate.label"):
        loaded.check_obs_columns("batch")


@pytest.mark.parametrize(
    ("column", "written"),
    [
        ("library", "the sample-sheet sample (library) of each cell"),
        ("kbagg_run", "the kbagg run that added the cell to the SOMA store"),
        ("hashtag_pool", "hashtag demultiplexing columns"),
    ],
)
def test_metadata_column_named_like_a_column_kbagg_writes_is_an_error(tmp_path, column, written):
    """The registry (kbagg.obs_columns) is checked when the workflow parses the sheet: the
    message names the column and what kbagg writes there, before any job runs."""
    make_fastqs(tmp_path, "a.fq", "b.fq")
    sheet = write_sheet(
        tmp_path, "S1\ta.fq\tb.fq\tx\n", header=f"sample\tfastq_1\tfastq_2\t{column}\n"
    )
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    with pytest.raises(
        SampleSheetError,
        match=re.escape(f"metadata column '{column}' would replace the obs column '{column}'")
        + ".*"
        + re.escape(written),
    ):
        loaded.check_obs_columns("sample")


def test_the_technology_column_goes_to_obs_and_passes_the_registry_check(tmp_path):
    """`technology` is a lane column, not metadata: a sheet with it passes the parse-time
    check although kbagg writes obs column `technology` (the sheet's technology of each
    sample, as given, the config default where empty); as a label it is refused."""
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq")
    sheet = write_sheet(
        tmp_path,
        "A\ta.fq\tb.fq\t0,0,16:0,16,28:1,0,0\tctrl\nB\tc.fq\td.fq\t\ttreated\n",
    )
    loaded = load_sample_sheet(sheet, "10xv3", workdir=tmp_path)
    loaded.check_obs_columns("sample")
    assert loaded.obs_metadata().to_dict("list") == {
        "sample": ["A", "B"],
        "condition": ["ctrl", "treated"],
        "technology": ["0,0,16:0,16,28:1,0,0", "10xv3"],
    }
    assert loaded.metadata_columns == ["condition"]  # the provenance's sheet metadata
    with pytest.raises(KbaggError, match="aggregate.label 'technology'.*sheet's technology"):
        loaded.check_obs_columns("technology")


def test_a_folder_given_as_fastq_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq")
    (tmp_path / "dir.fq").mkdir()
    sheet = write_sheet(tmp_path, "S1\ta.fq\tdir.fq\t10xv2\tx\n")
    with pytest.raises(SampleSheetError, match="column fastq_2: not a file: dir.fq"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"index": "x.idx"}, "reference.index is set but reference.t2g is missing"),
        ({"t2g": "t2g.txt"}, "reference.t2g is set but reference.index is missing"),
        ({"fasta": "g.fa"}, "reference.fasta is set but reference.gtf is missing"),
        ({"gtf": "g.gtf"}, "reference.gtf is set but reference.fasta is missing"),
        (
            {"fasta": "g.fa", "gtf": "g.gtf", "download": "mouse"},
            "more than one reference source",
        ),
        ({}, "give reference.fasta + reference.gtf"),
    ],
)
def test_reference_keys_are_named(reference, message):
    with pytest.raises(KbaggError, match=re.escape(message)):
        check_config({"reference": reference})


def test_prebuilt_nac_index_needs_c1_and_c2():
    config = {"workflow": "nac", "reference": {"index": "i", "t2g": "t", "c1": "c1"}}
    with pytest.raises(KbaggError, match="reference.c2: required with workflow 'nac'"):
        check_config(config)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("--strand forward", ["--strand", "forward"]),
        ("--strand 'forward'", ["--strand", "forward"]),
        ("", []),
    ],
)
def test_count_extra_is_split_without_a_shell(extra, expected):
    assert count_extra_args(extra) == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("--strand 'forward", "No closing quotation"),
        ("-t 8", "-t is set by kbagg from resources.kb_count.threads"),
        ("--filter=bustools", "--filter is set by kbagg from filter.enabled"),
        ("-r list.txt", r"-r is set by kbagg from the technology's replacement list"),
    ],
)
def test_count_extra_errors_name_the_key(extra, message):
    with pytest.raises(KbaggError, match=message):
        count_extra_args(extra)


# --- through Snakemake: what a user sees --------------------------------------------------


def output(proc) -> str:
    return proc.stdout + proc.stderr


def dry_run_with(tmp_path: Path, sheet_body: str, header: str = HEADER, **config_overrides):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq", "d.fq", "genome.fa", "genes.gtf")
    write_sheet(tmp_path, sheet_body, header)
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": "genome.fa", "gtf": "genes.gtf"},
        **config_overrides,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "-n", check=False)


def test_snakemake_reports_missing_column_with_row_and_key(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\n", header="sample\tfastq_1\n")
    assert proc.returncode != 0
    assert "missing required column(s) fastq_2" in output(proc)


def test_snakemake_reports_schema_violation_with_row_and_key(tmp_path):
    proc = dry_run_with(tmp_path, "ok\ta.fq\tb.fq\t10xv2\tx\nbad name\tc.fq\td.fq\t10xv2\tx\n")
    assert proc.returncode != 0
    assert "row 1" in output(proc) and "bad name" in output(proc) and "pattern" in output(proc)


def test_snakemake_reports_conflicting_technology(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS1\tc.fq\td.fq\t10xv3\tx\n")
    assert proc.returncode != 0
    assert "sample 'S1' (Gene Expression library) has conflicting values in column technology" in (
        output(proc)
    )


def test_snakemake_reports_missing_fastq(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tnope.fq\t10xv2\tx\n")
    assert proc.returncode != 0
    assert "line 2, sample 'S1', column fastq_2: file not found: nope.fq" in output(proc)


def test_snakemake_reports_unknown_technology(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv9\tx\n")
    assert proc.returncode != 0
    assert "technology '10xv9' is not known to kb" in output(proc)


def test_snakemake_reports_bad_config_key(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\n", aggregate={"join": "sideways"})
    assert proc.returncode != 0
    assert "sideways" in output(proc) and "join" in output(proc)


def test_snakemake_reports_ambiguous_reference(tmp_path):
    proc = dry_run_with(
        tmp_path,
        "S1\ta.fq\tb.fq\t10xv2\tx\n",
        reference={"fasta": "genome.fa", "gtf": "genes.gtf", "index": "x.idx", "t2g": "t2g.txt"},
    )
    assert proc.returncode != 0
    assert (
        "config sets more than one reference source (reference.fasta, reference.gtf, "
        "reference.index, reference.t2g); keep one of {fasta, gtf}, {index, t2g} or {download}"
    ) in output(proc)


def test_snakemake_reports_index_without_t2g(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\n", reference={"index": "x.idx"})
    assert proc.returncode != 0
    assert "config reference.index is set but reference.t2g is missing" in output(proc)


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        (HEADER, "S1\ta.fq\ta.fq\t10xv2\tx\n", "fastq_1 and fastq_2 are the same file (a.fq)"),
        (HEADER, "", "only a header line, no rows"),
        ("sample,fastq_1,fastq_2\n", "S1,a.fq,b.fq\n", "tab-separated expected"),
        (HEADER, "S1\ta.fq\tb.fq\t10xv2\tx\nS2\tb.fq\tc.fq\t10xv2\tx\n", "used twice"),
    ],
)
def test_snakemake_stops_on_sheet_errors_before_any_job(tmp_path, header, body, message):
    proc = dry_run_with(tmp_path, body, header)
    assert proc.returncode == 1
    assert message in output(proc)
    assert "Traceback" not in output(proc)
    assert not (tmp_path / "results").exists()


def test_snakemake_reports_an_empty_sheet(tmp_path):
    make_fastqs(tmp_path, "genome.fa", "genes.gtf")
    (tmp_path / "samples.tsv").write_bytes(b"")
    config = {"samples": "samples.tsv", "reference": {"fasta": "genome.fa", "gtf": "genes.gtf"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "-n", check=False)
    assert proc.returncode != 0
    assert "sample sheet samples.tsv: the file is empty" in output(proc)
    assert "EmptyDataError" not in output(proc)


def test_valid_sheet_dry_run_plans_one_kb_count_per_sample(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS1\tc.fq\td.fq\t10xv2\tx\n")
    assert proc.returncode == 0, output(proc)
    job_counts = dict(
        line.split()[:2]
        for line in proc.stdout.splitlines()
        if line.startswith(("kb_count ", "reference "))
    )
    assert job_counts == {"kb_count": "1", "reference": "1"}


def test_a_splitseq_library_of_two_samples_plans_one_kb_count_with_its_replacement(tmp_path):
    body = "".join(
        f"{sample}\t{r1}\t{r2}\tSPLIT-SEQ\t{wells}\n"
        for sample, wells in (("ctrl", "1-48"), ("trt", "49-96"))
        for r1, r2 in (("a.fq", "b.fq"), ("c.fq", "d.fq"))
    )
    header = "sample\tfastq_1\tfastq_2\ttechnology\tround1_wells\n"
    proc = dry_run_with(tmp_path, body, header=header)
    assert proc.returncode == 0, output(proc)
    job_counts = dict(
        line.split()[:2]
        for line in proc.stdout.splitlines()
        if line.startswith(("kb_count ", "replacement ", "cells ", "fastq_check "))
    )
    assert job_counts == {"kb_count": "1", "replacement": "1", "cells": "2", "fastq_check": "2"}
    assert "resources/replacements/split-seq.txt" in proc.stdout


def test_download_reference_plans_the_download_rule(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\n", reference={"download": "mouse"})
    assert proc.returncode == 0, output(proc)
    planned = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("reference")}
    assert planned == {"reference_download"}


@pytest.mark.parametrize(
    ("aggregate", "message"),
    [
        (
            {"compression": "lzf", "format": "zarr"},
            "config aggregate.compression: compression 'lzf'",
        ),
        ({"compression": "gzip:12"}, "config aggregate.compression: compression 'gzip:12'"),
        ({"gene_major": True, "format": "zarr"}, "config aggregate.gene_major"),
    ],
)
def test_aggregate_output_options_are_checked_before_anything_runs(tmp_path, aggregate, message):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\n", aggregate=aggregate)
    assert proc.returncode != 0
    assert message in output(proc)


def test_snakemake_stops_at_parse_time_on_a_sheet_column_kbagg_writes(tmp_path):
    """The registry check runs when the workflow parses the sheet: a dry run fails with the
    message and plans no job."""
    proc = dry_run_with(
        tmp_path, "S1\ta.fq\tb.fq\tr1\n", header="sample\tfastq_1\tfastq_2\tkbagg_run\n"
    )
    assert proc.returncode != 0
    assert "metadata column 'kbagg_run' would replace the obs column 'kbagg_run'" in output(proc)
    assert "the kbagg run that added the cell to the SOMA store" in output(proc)
    assert "Traceback" not in output(proc)
