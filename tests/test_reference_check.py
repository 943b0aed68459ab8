"""Reference checks before kb ref: FASTA and GTF must describe the same chromosomes."""

from __future__ import annotations

import gzip

import pytest
from conftest import TESTDATA

import kbagg.reference.check as check
from kbagg.errors import KbaggError

GTF_LINE = 'chr1\tsim\texon\t1\t100\t.\t+\t.\tgene_id "G1"; transcript_id "T1";\n'


def write(path, text: str, compress: bool = False):
    if compress:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_matching_names_pass_and_gzip_is_read(tmp_path):
    fasta = write(tmp_path / "g.fa.gz", ">chr1 first\nACGT\n>chr2\nAC\n", compress=True)
    gtf = write(tmp_path / "g.gtf", "#comment\n" + GTF_LINE + GTF_LINE.replace("exon", "gene"))
    assert check.check_reference_inputs(fasta, gtf) == {"chr1": 1}


def test_no_gtf_chromosome_in_the_fasta_names_both_namings(tmp_path):
    fasta = write(tmp_path / "g.fa", ">1\nACGT\n>2\nACGT\n")
    gtf = write(tmp_path / "g.gtf", GTF_LINE)
    with pytest.raises(KbaggError) as error:
        check.check_reference_inputs(fasta, gtf)
    assert "GTF chromosomes chr1 are not in the FASTA headers 1, 2; use the same naming" in str(
        error.value
    )


def test_a_fasta_that_is_not_fasta_is_named(tmp_path):
    fasta = write(tmp_path / "genome.fa", GTF_LINE)
    gtf = write(tmp_path / "g.gtf", GTF_LINE)
    with pytest.raises(KbaggError, match=f"reference.fasta {fasta}: not a FASTA file"):
        check.check_reference_inputs(fasta, gtf)


def test_a_gtf_without_exons_is_named(tmp_path):
    fasta = write(tmp_path / "g.fa", ">chr1\nACGT\n")
    gtf = write(tmp_path / "g.gtf", GTF_LINE.replace("exon", "gene"))
    with pytest.raises(KbaggError, match=f"reference.gtf {gtf}: no transcript or exon lines"):
        check.check_reference_inputs(fasta, gtf)


def test_a_gtf_that_is_not_tab_separated_names_the_line(tmp_path):
    fasta = write(tmp_path / "g.fa", ">chr1\nACGT\n")
    gtf = write(tmp_path / "g.gtf", GTF_LINE + GTF_LINE.replace("\t", " "))
    with pytest.raises(KbaggError, match=f"reference.gtf {gtf}, line 2: not a GTF line"):
        check.check_reference_inputs(fasta, gtf)


@pytest.mark.parametrize("block_bytes", [1, 2, 5, 61, 4096])
def test_headers_are_found_across_block_boundaries(tmp_path, monkeypatch, block_bytes):
    names = [f"seq{i}" for i in range(30)]
    text = "".join(f">{n} description\n" + "ACGTACGTAC\n" * (i % 4) for i, n in enumerate(names))
    fasta = write(tmp_path / "g.fa", text.rstrip("\n"))
    monkeypatch.setattr(check, "BLOCK_BYTES", block_bytes)
    assert check.fasta_sequence_names(fasta) == names


def test_the_real_references_pass(testdata):
    for folder, fasta, gtf in (
        ("mouse_chr19_6mb", "GRCm39.chr19_0-6Mb.fa.gz", "gencode.vM31.chr19_0-6Mb.gtf.gz"),
        ("human_mt", "MT.fa.gz", "MT.gtf.gz"),
    ):
        found = check.check_reference_inputs(TESTDATA / folder / fasta, TESTDATA / folder / gtf)
        assert found and all(n > 0 for n in found.values())
