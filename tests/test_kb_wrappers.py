"""kb wrappers: the pieces that decide whether a kb run really succeeded, and what kb is told."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from kbagg.cells.matrices import gene_names_from_t2g, with_gene_names
from kbagg.count.kb_count import CountJob, kb_count_args, run_count, why_no_matrix
from kbagg.errors import KbaggError
from kbagg.kb.run import KbError, last_error, run_kb
from kbagg.kb.technology import check_n_files, technology, write_onlist
from kbagg.reference.build import reference_outputs


def job(tmp_path: Path, **changes) -> CountJob:
    fields = {
        "sample": "S1",
        "fastqs": ["L1_R1.fq.gz", "L1_R2.fq.gz", "L2_R1.fq.gz", "L2_R2.fq.gz"],
        "index": "ref/index.idx",
        "t2g": "ref/t2g.txt",
        "technology": "10xv3",
        "kb_dir": tmp_path / "kb",
        "onlist": "onlists/10xv3.txt",
        "threads": 3,
        "memory_mb": 4000,
    }
    fields.update(changes)
    return CountJob(**fields)


def test_kb_count_gets_all_lanes_onlist_filter_threads_and_memory(tmp_path):
    args = kb_count_args(job(tmp_path), tmp_path / "out", tmp_path / "out" / "tmp")
    assert args[:6] == ["count", "-i", "ref/index.idx", "-g", "ref/t2g.txt", "-x"]
    assert args[args.index("-w") + 1] == "onlists/10xv3.txt"
    assert args[args.index("-t") + 1] == "3"
    assert args[args.index("-m") + 1] == "2000M"  # half of mem_mb; the rest is the index
    assert args[args.index("--tmp") + 1] == str(tmp_path / "out" / "tmp")
    assert args[args.index("--filter") + 1] == "bustools"
    assert "--overwrite" in args and "--h5ad" in args and "--filter-threshold" not in args
    assert args[-4:] == ["L1_R1.fq.gz", "L1_R2.fq.gz", "L2_R1.fq.gz", "L2_R2.fq.gz"]


def test_kb_count_threshold_nac_and_no_filter(tmp_path):
    args = kb_count_args(
        job(tmp_path, workflow="nac", c1="c1.txt", c2="c2.txt", filter_threshold=50, onlist=None),
        tmp_path,
        tmp_path / "tmp",
    )
    assert args[args.index("--workflow") + 1] == "nac"
    assert args[args.index("-c1") + 1] == "c1.txt" and args[args.index("-c2") + 1] == "c2.txt"
    assert args[args.index("--filter-threshold") + 1] == "50"
    assert "-w" not in args
    unfiltered = kb_count_args(job(tmp_path, filter=False), tmp_path, tmp_path / "tmp")
    assert "--filter" not in unfiltered


def test_bdwta_cells_are_not_called_by_kbs_filter(tmp_path):
    """kb's --filter corrects BDWTA's records against the cells' 27-mers: a 21 GB table
    (docs/technologies.md); kbagg calls those cells itself (`filter_by_allowlist`)."""
    bdwta = job(tmp_path, technology="BDWTA", fastqs=["R1.fq.gz", "R2.fq.gz"])
    args = kb_count_args(bdwta, tmp_path, tmp_path / "tmp")
    assert "--filter" not in args and "--filter-threshold" not in args


def test_fastqs_that_are_not_whole_lanes_are_an_error(tmp_path):
    with pytest.raises(KbError, match="sample 'S1': technology '10xv3' takes 2 FASTQ files"):
        kb_count_args(job(tmp_path, fastqs=["a", "b", "c"]), tmp_path, tmp_path / "tmp")


def test_nac_without_capture_lists_is_an_error(tmp_path):
    with pytest.raises(KbError, match="nac needs c1 and c2"):
        kb_count_args(job(tmp_path, workflow="nac"), tmp_path, tmp_path / "tmp")


def test_gene_names_from_t2g_falls_back_to_ids(tmp_path):
    t2g = tmp_path / "t2g.txt"
    t2g.write_text("T1\tG1\tAlpha\tA-201\nT2\tG1\tAlpha\tA-202\nT3\tG2\t\t\nT4\tG3\tGamma\n")
    names = gene_names_from_t2g(t2g)
    assert names.to_dict() == {"G1": "Alpha", "G2": "G2", "G3": "Gamma"}
    two_columns = tmp_path / "t2g2.txt"
    two_columns.write_text("T1\tG1\nT2\tG2\n")
    assert gene_names_from_t2g(two_columns).to_dict() == {"G1": "G1", "G2": "G2"}


def test_with_gene_names_sets_var_and_obs_index_names():
    adata = ad.AnnData(
        np.ones((2, 3), dtype=np.float32),
        obs=pd.DataFrame(index=["AAAC", "GGGT"]),
        var=pd.DataFrame(index=["G1", "G2", "G9"]),
    )
    out = with_gene_names(adata, pd.Series({"G1": "Alpha", "G2": "Beta"}))
    assert out.var.index.name == "gene_id" and out.obs.index.name == "barcode"
    assert list(out.var["gene_name"]) == ["Alpha", "Beta", "G9"]


def test_why_no_matrix_reports_zero_pseudoaligned(tmp_path):
    (tmp_path / "run_info.json").write_text('{"n_processed": 25000, "n_pseudoaligned": 0}')
    message = why_no_matrix("lamanno", tmp_path)
    assert "sample 'lamanno'" in message and "pseudoaligned 0 of 25,000 reads" in message


def test_run_kb_fails_when_kb_logs_an_exception_despite_exit_0():
    # kb exits 0 after logging an exception; an index that does not exist makes it do so.
    with pytest.raises(KbError, match="kb reported an error") as error:
        run_kb(
            [
                "ref",
                "-i",
                "/nonexistent/x.idx",
                "-g",
                "/nonexistent/t2g",
                "-f1",
                "/nonexistent/c.fa",
                "/nonexistent/g.fa",
                "/nonexistent/g.gtf",
            ],
            label="ref-test",
        )
    assert "ref-test" in str(error.value)


@pytest.fixture(scope="module")
def demo_reference(tmp_path_factory) -> dict[str, str]:
    """A real kallisto index of the simulated genome (kb ref takes a few seconds)."""
    from kbagg.reference.build import build_reference
    from kbagg.simulate.demo import write_demo

    folder = tmp_path_factory.mktemp("demo_ref")
    files = write_demo(folder / "demo")
    outputs = reference_outputs(folder, "standard")
    build_reference(str(files["genome"][0]), str(files["gtf"][0]), "standard", outputs)
    return outputs


def test_real_kb_count_with_no_alignable_read_fails_and_leaves_no_outputs(tmp_path, demo_reference):
    """kb count exits 0 and writes no matrix when 0 reads pseudoalign: the job must fail."""
    rng = np.random.default_rng(0)
    bases = np.array(list("ACGT"))
    fastqs = []
    for read, length in ((1, 26), (2, 90)):
        path = tmp_path / f"random_R{read}.fastq.gz"
        with gzip.open(path, "wt") as fq:
            for i in range(2000):
                seq = "".join(rng.choice(bases, length))
                fq.write(f"@r{i}\n{seq}\n+\n{'I' * length}\n")
        fastqs.append(str(path))
    count = job(
        tmp_path,
        fastqs=fastqs,
        index=demo_reference["index"],
        t2g=demo_reference["t2g"],
        technology="10xv2",
        onlist=None,
        threads=1,
    )
    with pytest.raises(KbError, match="sample 'S1'.*pseudoaligned 0 of 2,000 reads"):
        run_count(count)
    assert not (tmp_path / "kb").exists()
    # The failed attempt's folder stays for a look at kb's files; the next attempt removes it.
    (attempt,) = tmp_path.glob("kb.attempt-*")
    assert (attempt / "run_info.json").exists()


def test_last_error_prefers_the_exception_line():
    log = "INFO start\nTraceback\n  File x\nsubprocess.CalledProcessError: Command 'kallisto' failed\n"
    assert last_error(log) == "subprocess.CalledProcessError: Command 'kallisto' failed"


def test_onlist_written_once_matches_kb_bundle(tmp_path):
    out = tmp_path / "10xv2.txt"
    assert write_onlist("10xv2", out)
    with gzip.open(technology("10xv2").onlist, "rt") as bundled:
        first = bundled.readline()
    lines = out.read_text().splitlines()
    assert lines[0] == first.strip() and len(lines) == 737_280
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("name", "min_lengths", "has_onlist"),
    [("10xv2", (26, 0), True), ("10xv3", (28, 0), True), ("dropseq", (20, 0), False)],
)
def test_technology_table_gives_read_lengths_and_onlist(name, min_lengths, has_onlist):
    tech = technology(name)
    assert tech.min_lengths == min_lengths
    assert (tech.onlist is not None) == has_onlist


@pytest.mark.parametrize(
    ("name", "n_files", "min_lengths", "plate", "batch"),
    [
        ("10xv1", (3,), (14, 10, 0), False, False),
        ("indropsv3", (3,), (8, 14, 0), False, False),
        ("10xv3_ultima", (1,), (50,), False, False),
        ("split-seq", (2,), (0, 86), False, False),
        ("smartseq3", (4,), (0, 0, 19, 0), True, False),  # I1, I2, R1, R2: kb count's order
        ("smartseq2", (1, 2), (0, 0), True, True),  # --parity single or paired
        ("bulk", (1, 2), (0, 0), True, True),
        ("stormseq", (2,), (0, 8), True, True),
    ],
)
def test_every_layout_kb_knows(name, n_files, min_lengths, plate, batch):
    tech = technology(name)
    assert (tech.allowed_n_files, tech.min_lengths) == (n_files, min_lengths)
    assert (tech.plate, tech.batch) == (plate, batch)


def test_a_wrong_file_count_is_named():
    where = "sample sheet S, line 2, sample 'S1'"
    with pytest.raises(
        KbaggError,
        match=re.escape(
            f"{where}: technology '10xv1' takes 3 FASTQ files per lane, given 2; fill columns "
            "fastq_1, fastq_2, fastq_3"
        ),
    ):
        check_n_files("10xv1", 2, where)
    with pytest.raises(KbaggError, match=r"'SMARTSEQ3' takes 4 FASTQ files per lane \(I1, I2"):
        check_n_files("SMARTSEQ3", 2, where)
    check_n_files("smartseq2", 1, where)


@pytest.mark.parametrize(
    ("string", "n_files", "min_lengths"),
    [
        ("0,0,16:0,16,28:1,0,0", 2, (28, 0)),
        ("0,0,8,1,0,8:1,8,14:2,0,0", 3, (8, 14, 0)),  # inDrops v3 written out
        ("0,0,16:0,16,28:0,28,0", 1, (28,)),
        ("0,0,16:0,16,28:1,0,0%unstranded", 2, (28, 0)),
    ],
)
def test_custom_technology_strings_are_parsed(string, n_files, min_lengths):
    tech = technology(string)
    assert tech.custom and (tech.n_files, tech.min_lengths) == (n_files, min_lengths)
    assert not tech.plate and tech.onlist is None


@pytest.mark.parametrize(
    ("string", "reason"),
    [  # each rejected by kallisto 0.52.0 bus -x too (checked by hand, 2026-12-04)
        ("0,0,16:0,16,28", "exactly two colons"),
        ("0,0,16:0,16,28:1,0,0:1", "exactly two colons"),
        ("0,0,16:0,16:1,0,0", "a multiple of 3"),
        ("a,0,16:0,16,28:1,0,0", "not comma-separated integers"),
        ("0,0,16::1,0,0", "the UMI part is empty"),
        ("0,10,5:0,16,28:1,0,0", "stop 5 is not after start 10"),
        ("0,-5,16:0,16,28:1,0,0", "negative"),
    ],
)
def test_a_technology_string_kallisto_rejects_is_named(string, reason):
    with pytest.raises(KbaggError, match=f"technology '{re.escape(string)}': .*{reason}"):
        technology(string)


def test_technology_without_onlist_gets_an_empty_marker(tmp_path):
    out = tmp_path / "dropseq.txt"
    assert not write_onlist("dropseq", out)
    assert out.read_text() == ""


def test_unknown_technology_lists_known_ones():
    with pytest.raises(KbaggError, match="'10xv9' is not known to kb.*10XV3"):
        technology("10xv9")


def test_reference_outputs_by_workflow(tmp_path):
    assert set(reference_outputs(tmp_path, "standard")) == {"index", "t2g", "cdna"}
    assert set(reference_outputs(tmp_path, "nac")) == {
        "index",
        "t2g",
        "cdna",
        "nascent",
        "c1",
        "c2",
    }
    assert set(reference_outputs(tmp_path, "nac", download=True)) == {"index", "t2g", "c1", "c2"}


def test_download_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    from kbagg.reference.build import download_reference

    # Offline on any machine: kb downloads with urllib, which sends https through the proxy
    # in https_proxy; nothing listens on port 9 of this host, so the connection is refused
    # at once, with no DNS and no network involved.
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    outputs = reference_outputs(tmp_path, "standard", download=True)
    with pytest.raises(KbError) as error:
        download_reference("human", "standard", outputs)
    message = str(error.value)
    assert "reference.download: 'human'" in message and "needs internet access" in message
    assert "reference.fasta" in message  # says what to do instead
    assert not list(tmp_path.iterdir())  # nothing half-written
