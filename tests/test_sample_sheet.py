"""Sample sheet and config checks: bad input stops with the file, line, sample and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

from kbagg.sheet import SampleSheetError, load_sample_sheet, write_metadata_table

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


def test_same_fastq_twice_is_an_error(tmp_path):
    make_fastqs(tmp_path, "a.fq", "b.fq", "c.fq")
    sheet = write_sheet(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS2\ta.fq\tc.fq\t10xv2\tx\n")
    with pytest.raises(SampleSheetError, match="lines 2, 3.*fastq_1.*a.fq"):
        load_sample_sheet(sheet, "10xv3", workdir=tmp_path)


def test_metadata_table_uses_the_label_column(tmp_path):
    frame = write_metadata_table({"sample": ["A"], "donor": ["d1"]}, "batch", tmp_path / "m.tsv")
    assert list(frame.columns) == ["batch", "donor"]
    assert (tmp_path / "m.tsv").read_text() == "batch\tdonor\nA\td1\n"
    assert not list(tmp_path.glob(".*tmp*"))


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
    assert "sample 'S1' has conflicting values in column technology" in output(proc)


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
        reference={"fasta": "genome.fa", "gtf": "genes.gtf", "index": "x.idx"},
    )
    assert proc.returncode != 0
    assert "reference" in output(proc)


def test_valid_sheet_dry_run_plans_one_kb_count_per_sample(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\nS1\tc.fq\td.fq\t10xv2\tx\n")
    assert proc.returncode == 0, output(proc)
    job_counts = dict(
        line.split()[:2]
        for line in proc.stdout.splitlines()
        if line.startswith(("kb_count ", "reference "))
    )
    assert job_counts == {"kb_count": "1", "reference": "1"}


def test_download_reference_plans_the_download_rule(tmp_path):
    proc = dry_run_with(tmp_path, "S1\ta.fq\tb.fq\t10xv2\tx\n", reference={"download": "mouse"})
    assert proc.returncode == 0, output(proc)
    planned = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("reference")}
    assert planned == {"reference_download"}
