"""Every read layout kb knows: the sample sheet's fastq_1 ... fastq_N and cell columns, and
the FASTQ check over all files of a lane."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from pathlib import Path

import pytest

from kbagg.count.fastq_check import FastqError, check_lane_files
from kbagg.count.kb_count import CountJob, batch_lines, kb_count_args
from kbagg.errors import KbaggError
from kbagg.sheet import SampleSheetError, load_sample_sheet


def fastq(path: Path, lengths: list[int], names: list[str] | None = None, base="A") -> Path:
    names = names or [f"r{i}" for i in range(len(lengths))]
    text = "".join(
        f"@{name} x\n{base * n}\n+\n{'I' * n}\n" for name, n in zip(names, lengths, strict=True)
    )
    path.write_bytes(gzip.compress(text.encode()))
    return path


def sheet(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    for row in rows:
        for value in row:
            if value.endswith(".fq.gz"):
                (folder / value).write_bytes(b"")
    path = folder / "samples.tsv"
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("technology", "files"),
    [
        ("10xv1", ["R1", "R2", "I1"]),
        ("indropsv3", ["R1", "R2", "R3"]),
        ("10xv3_ultima", ["R1"]),
        ("smartseq3", ["I1", "I2", "R1", "R2"]),
        ("0,0,16:0,16,28:1,0,0", ["R1", "R2"]),
    ],
)
def test_a_sheet_row_takes_the_files_its_technology_takes(tmp_path, technology, files):
    header = ["sample", *(f"fastq_{i}" for i in range(1, 5)), "technology"]
    names = [f"s_{f}.fq.gz" for f in files]
    path = sheet(tmp_path, header, [["s", *names, *[""] * (4 - len(names)), technology]])
    loaded = load_sample_sheet(path, "10xv3", workdir=tmp_path)
    assert loaded.lane_files("s") == [tuple(names)]
    assert loaded.fastqs("s") == names


def test_two_file_sheets_keep_working_beside_other_layouts(tmp_path):
    header = ["sample", "fastq_1", "fastq_2", "fastq_3", "fastq_4", "technology"]
    rows = [
        ["pbmc", "p_R1.fq.gz", "p_R2.fq.gz", "", "", "10xv3"],
        ["plate", "q_I1.fq.gz", "q_I2.fq.gz", "q_R1.fq.gz", "q_R2.fq.gz", "SMARTSEQ3"],
    ]
    loaded = load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)
    assert loaded.lane_files("pbmc") == [("p_R1.fq.gz", "p_R2.fq.gz")]
    assert len(loaded.lane_files("plate")[0]) == 4
    assert list(loaded.lanes.columns[:6]) == [
        "sample", "feature_type", "fastq_1", "fastq_2", "fastq_3", "fastq_4"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            ["s", "a.fq.gz", "b.fq.gz", "", "", "10xv1"],
            "line 2, sample 's': technology '10xv1' takes 3 FASTQ files per lane, given 2; "
            "fill columns fastq_1, fastq_2, fastq_3",
        ),
        (
            ["s", "a.fq.gz", "b.fq.gz", "c.fq.gz", "", "10xv3"],
            "line 2, sample 's': technology '10xv3' takes 2 FASTQ files per lane, given 3",
        ),
        (
            ["s", "a.fq.gz", "b.fq.gz", "", "", "SMARTSEQ3"],
            "technology 'SMARTSEQ3' takes 4 FASTQ files per lane (I1, I2, R1, R2), given 2",
        ),
        (
            ["s", "a.fq.gz", "", "c.fq.gz", "", "10xv1"],
            "line 2, sample 's', column fastq_2: empty, but a later FASTQ column is filled",
        ),
    ],
)
def test_a_wrong_file_count_is_named(tmp_path, row, message):
    header = ["sample", "fastq_1", "fastq_2", "fastq_3", "fastq_4", "technology"]
    with pytest.raises(SampleSheetError, match=re.escape(message)):
        load_sample_sheet(sheet(tmp_path, header, [row]), "10xv3", workdir=tmp_path)


def test_a_plate_row_without_a_cell_id_is_named(tmp_path):
    header = ["sample", "fastq_1", "fastq_2", "technology", "cell"]
    rows = [
        ["plate1", "a1.fq.gz", "a2.fq.gz", "SMARTSEQ2", "A01"],
        ["plate1", "b1.fq.gz", "b2.fq.gz", "SMARTSEQ2", ""],
    ]
    with pytest.raises(
        SampleSheetError,
        match=re.escape(
            "line 3, sample 'plate1', column cell: empty, but technology 'SMARTSEQ2' is "
            "plate-based with one cell per FASTQ set"
        ),
    ):
        load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)
    rows[1][4] = "A01"
    with pytest.raises(SampleSheetError, match="cell 'A01' of sample 'plate1' is on line 2 too"):
        load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)
    rows[1][4] = "B01"
    loaded = load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)
    assert loaded.cells("plate1") == ["A01", "B01"] and loaded.metadata_columns == []


def test_a_cell_id_on_a_droplet_row_is_named(tmp_path):
    header = ["sample", "fastq_1", "fastq_2", "technology", "cell"]
    rows = [["s", "a1.fq.gz", "a2.fq.gz", "10xv3", "A01"]]
    with pytest.raises(SampleSheetError, match="column cell: 'A01' given, but technology"):
        load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)


def test_a_technology_string_kallisto_rejects_is_named_with_its_row(tmp_path):
    from kbagg.config import check_technologies

    header = ["sample", "fastq_1", "fastq_2", "technology"]
    rows = [["s", "a1.fq.gz", "a2.fq.gz", "0,0,16:0,16:1,0,0"]]
    loaded = load_sample_sheet(sheet(tmp_path, header, rows), "10xv3", workdir=tmp_path)
    with pytest.raises(
        SampleSheetError,
        match=re.escape(
            "sample 's' (Gene Expression library), column technology: technology "
            "'0,0,16:0,16:1,0,0': the UMI part '0,16' has 2 values; kallisto needs "
            "file,start,stop triples (a multiple of 3)"
        ),
    ):
        check_technologies({"technology": "10xv3"}, loaded)


# --- the FASTQ check over every file of a lane ------------------------------------------------
def four_files(tmp_path, **changes):
    lengths = {"I1": [10] * 5, "I2": [10] * 5, "R1": [150] * 5, "R2": [150] * 5}
    names = {f: [f"r{i}" for i in range(5)] for f in lengths}
    for key, value in changes.items():
        kind, what = key.split("_")
        (lengths if what == "lengths" else names)[kind] = value
    return [
        fastq(tmp_path / f"{f}.fq.gz", lengths[f], names[f], base)
        for f, base in zip(lengths, "ACGT", strict=True)
    ]


def check(paths, min_lengths=(0, 0, 19, 0)):
    return check_lane_files(
        paths, min_lengths=min_lengths, labels=("I1", "I2", "R1", "R2"), sample="p", lane=1
    )


def test_four_files_of_a_smartseq3_lane_are_checked_together(tmp_path):
    record = check(four_files(tmp_path))
    assert record.reads == 5 and [f.reads for f in record.files.values()] == [5] * 4
    assert [f.max_length for f in record.files.values()] == [10, 10, 150, 150]


def test_a_file_with_fewer_reads_is_named(tmp_path):
    paths = four_files(tmp_path, I2_lengths=[10] * 4, I2_names=[f"r{i}" for i in range(4)])
    with pytest.raises(FastqError, match=r"I1 .*I1.fq.gz has 5 reads, I2 .*I2.fq.gz has 4"):
        check(paths)


def test_names_that_disagree_in_any_file_are_named(tmp_path):
    paths = four_files(tmp_path, R2_names=["r0", "r1", "r2", "zz", "r4"])
    with pytest.raises(FastqError, match="read 4: names differ between I1 and R2"):
        check(paths)


def test_a_read_too_short_for_the_umi_is_named(tmp_path):
    paths = four_files(tmp_path, R1_lengths=[150, 150, 18, 150, 150])
    with pytest.raises(FastqError, match="R1 .*read 3 .* has 18 bases, fewer than the 19"):
        check(paths)


def test_one_file_lanes_are_checked(tmp_path):
    path = fastq(tmp_path / "u.fq.gz", [100, 100, 40])
    with pytest.raises(FastqError, match="read 3 .* has 40 bases, fewer than the 50"):
        check_lane_files([path], min_lengths=(50,))
    assert check_lane_files([path], min_lengths=(40,)).reads == 3


# --- kb count's arguments for plates ----------------------------------------------------------
def job(tmp_path, **changes) -> CountJob:
    fields = {
        "sample": "plate1",
        "fastqs": ["A01_R1.fq.gz", "A01_R2.fq.gz", "B01_R1.fq.gz", "B01_R2.fq.gz"],
        "index": "index.idx",
        "t2g": "t2g.txt",
        "technology": "SMARTSEQ2",
        "kb_dir": tmp_path / "kb",
        "cells": ["A01", "B01"],
    }
    fields.update(changes)
    return CountJob(**fields)


def test_a_smartseq2_plate_is_counted_from_kbs_batch_file_with_parity(tmp_path):
    args = kb_count_args(job(tmp_path), tmp_path / "out", tmp_path / "tmp")
    assert args[args.index("--parity") + 1] == "paired"
    assert "--filter" not in args  # kb refuses --filter for SMARTSEQ2
    assert args[-1] == str(tmp_path / "out" / "batch.txt")
    lines = batch_lines(job(tmp_path))
    assert [line.split("\t")[0] for line in lines] == ["A01", "B01"]
    assert lines[0].split("\t")[1:] == [str(Path("A01_R1.fq.gz").resolve()), str(Path("A01_R2.fq.gz").resolve())]  # fmt: skip
    single = job(tmp_path, fastqs=["A01.fq.gz", "B01.fq.gz"])
    args = kb_count_args(single, tmp_path / "out", tmp_path / "tmp")
    assert args[args.index("--parity") + 1] == "single"


def test_smartseq3_is_counted_from_its_four_files_without_filter_or_parity(tmp_path):
    fastqs = ["I1.fq.gz", "I2.fq.gz", "R1.fq.gz", "R2.fq.gz"]
    args = kb_count_args(
        job(tmp_path, technology="SMARTSEQ3", fastqs=fastqs, cells=None), tmp_path, tmp_path
    )
    assert args[-4:] == fastqs and "--parity" not in args and "--filter" not in args


def test_ultima_goes_to_kb_as_the_layout_string_of_kbs_own_table(tmp_path):
    """kallisto 0.52 refuses `-x 10XV3_ULTIMA` (kb 0.30.2 then exits 0 with no matrix:
    tests/test_simulate_layouts.py), so kbagg passes kb's table entry as a string, with kb's
    on-list; a name kallisto knows goes as the sheet spells it."""
    fastqs = ["L1.fq.gz"]
    ultima = job(tmp_path, technology="10XV3_ULTIMA", fastqs=fastqs, cells=None, onlist="wl.txt")
    args = kb_count_args(ultima, tmp_path, tmp_path)
    assert args[args.index("-x") + 1] == "0,22,38:0,38,50:0,62,0"
    assert args[args.index("-w") + 1] == "wl.txt" and args[-1:] == fastqs
    v3 = job(tmp_path, technology="10xv3", fastqs=["R1.fq.gz", "R2.fq.gz"], cells=None)
    assert kb_count_args(v3, tmp_path, tmp_path)[kb_count_args(v3, tmp_path, tmp_path).index("-x") + 1] == "10xv3"  # fmt: skip


def test_splitseq_replacement_pairs_wells_from_kb_onlist(tmp_path):
    """Oligo-dT row i of kb's on-list pairs with hexamer row 96 + i; the list kb reads
    replaces each hexamer with its well's oligo-dT barcode (round 1, the `*` suffix)."""
    from kbagg.kb.technology import splitseq_round1_pairs, write_splitseq_replacement

    pairs = splitseq_round1_pairs()
    assert len(pairs) == 96
    assert pairs[0] == ("CATTCCTA", "CATCATCC")  # well 1, as Parse read names pair them
    assert len({d for d, _ in pairs} | {h for _, h in pairs}) == 192
    out = tmp_path / "replacement.txt"
    write_splitseq_replacement(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "CATCATCC\t*CATTCCTA"
    assert lines == [f"{h}\t*{d}" for d, h in pairs]


CELLS_WITHOUT_KB = """
import sys
sys.modules["kb_python"] = None  # the cells job's environment (envs/python.yaml) has no kb
import anndata as ad, numpy as np
from kbagg.cells.matrices import keep_round1_wells
from kbagg.kb.technology import read_splitseq_replacement
pairs = read_splitseq_replacement(sys.argv[1])
library = ad.AnnData(np.ones((3, 1), dtype=np.float32))
library.obs_names = ["AACGTGATAACGTGAT" + pairs[w - 1][0] for w in (1, 96, 42)]
kept = keep_round1_wells(library, [42, 96], "lib", pairs)
print(list(kept.obs["round1_well"]))
"""


def test_splitseq_wells_come_from_the_written_list_without_kb(tmp_path):
    """Rule cells runs where kb-python is not installed: it reads the round-1 pairs back
    from the replacement list kb count was given (CI once failed on exactly this)."""
    import os
    import subprocess
    import sys

    from kbagg.kb.technology import (
        read_splitseq_replacement,
        splitseq_round1_pairs,
        write_splitseq_replacement,
    )

    out = tmp_path / "split-seq.txt"
    write_splitseq_replacement(out)
    assert read_splitseq_replacement(out) == splitseq_round1_pairs()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CELLS_WITHOUT_KB, str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[96, 42]"
    (tmp_path / "bad.txt").write_text("ACGT\tACGT\n")
    with pytest.raises(KbaggError, match="bad.txt, line 1"):
        read_splitseq_replacement(tmp_path / "bad.txt")


def test_a_splitseq_job_is_counted_with_kbaggs_replacement_list(tmp_path):
    """SPLIT-SEQ gets `-r` with the list the workflow wrote (rule replacement); a SPLIT-SEQ
    job without it stops rather than count each well's hexamer reads as other cells."""
    from kbagg.kb.run import KbError

    fastqs = ["R1.fq.gz", "R2.fq.gz"]
    splitseq = job(tmp_path, technology="SPLIT-SEQ", fastqs=fastqs, cells=None)
    listed = str(tmp_path / "resources/replacements/split-seq.txt")
    args = kb_count_args(replace(splitseq, replacement=listed), tmp_path, tmp_path)
    assert args[args.index("-r") + 1] == listed and args[-2:] == fastqs
    assert args[args.index("-x") + 1] == "SPLIT-SEQ" and "--filter" in args
    with pytest.raises(KbError, match="sample 'plate1': technology 'SPLIT-SEQ' needs kb's"):
        kb_count_args(splitseq, tmp_path, tmp_path)
    v3 = job(tmp_path, technology="10xv3", fastqs=fastqs, cells=None)
    assert "-r" not in kb_count_args(v3, tmp_path, tmp_path)


def test_splitseq_replacement_is_written_for_splitseq_only(tmp_path):
    from kbagg.errors import KbaggError
    from kbagg.kb.technology import technology, write_replacement, write_splitseq_replacement

    assert technology("split-seq").replacement and not technology("10xv3").replacement
    write_replacement("split-seq", tmp_path / "a.txt")
    write_splitseq_replacement(tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()
    with pytest.raises(KbaggError, match="technology '10xv3': kbagg has no replacement list"):
        write_replacement("10xv3", tmp_path / "c.txt")


def test_round1_well_of_a_splitseq_barcode_is_its_last_8_bases(tmp_path):
    """Round 3 + round 2 + round 1: the last 8 bases name the well, by its oligo-dT barcode
    (after kb's replacement) or by its hexamer (without it); other bases are no well."""
    import anndata as ad
    import numpy as np

    from kbagg.cells.matrices import add_round1_wells
    from kbagg.errors import KbaggError
    from kbagg.kb.technology import splitseq_round1_pairs, splitseq_round1_wells

    pairs = splitseq_round1_pairs()
    prefix = "AACGTGATAACGTGAT"
    barcodes = [prefix + pairs[0][0], prefix + pairs[95][0], prefix + pairs[41][1]]
    assert splitseq_round1_wells(barcodes) == [1, 96, 42]
    adata = ad.AnnData(np.ones((3, 2)))
    adata.obs_names = barcodes
    add_round1_wells(adata, "lib1")
    assert adata.obs["round1_well"].tolist() == [1, 96, 42]
    assert adata.obs["round1_well"].dtype == np.int64
    bad = ad.AnnData(np.ones((1, 2)))
    bad.obs_names = [prefix + "GGGGGGGG"]
    with pytest.raises(KbaggError, match=r"sample 'lib1': barcode '\w+': its last 8 bases"):
        add_round1_wells(bad, "lib1")


# --- SPLiT-seq samples defined by round-1 wells --------------------------------------------
WELLS_HEADER = ["sample", "fastq_1", "fastq_2", "technology", "round1_wells", "donor"]
LIBRARY = [["L1_R1.fq.gz", "L1_R2.fq.gz"], ["L2_R1.fq.gz", "L2_R2.fq.gz"]]


def splitseq_rows(wells: dict[str, str], lanes=LIBRARY, technology="SPLIT-SEQ") -> list:
    return [
        [sample, *lane, technology, value, f"d_{sample}"]
        for sample, value in wells.items()
        for lane in lanes
    ]


def test_samples_sharing_a_splitseq_library_by_round1_wells(tmp_path):
    """Two samples list the library's lanes with their own wells: one kb count (under the
    first sample), each sample its wells; round1_wells is no obs metadata."""
    rows = splitseq_rows({"ctrl": "1-12,25-36", "trt": "13-24, 37"})
    rows.append(["solo", "S_R1.fq.gz", "S_R2.fq.gz", "SPLIT-SEQ", "", "d3"])
    loaded = load_sample_sheet(sheet(tmp_path, WELLS_HEADER, rows), "10xv3", workdir=tmp_path)
    assert loaded.names == ["ctrl", "trt", "solo"]
    assert loaded.counted_with("trt") == "ctrl" and loaded.counted_with("ctrl") == "ctrl"
    assert loaded.counted_with("solo") == "solo"
    assert loaded.round1_wells("ctrl") == (*range(1, 13), *range(25, 37))
    assert loaded.round1_wells("trt") == (*range(13, 25), 37)
    assert loaded.round1_wells("solo") == ()
    assert loaded.fastqs("trt") == loaded.fastqs("ctrl")
    assert loaded.metadata_columns == ["donor"]
    assert list(loaded.lanes["round1_wells"].iloc[[0, 2]]) == ["1-12,25-36", "13-24, 37"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            splitseq_rows({"ctrl": "1-48", "trt": "40-96"}),
            "line 4, sample 'trt', column round1_wells: well 40 is also sample 'ctrl''s; the "
            "samples of one SPLiT-seq library have disjoint wells",
        ),
        (
            splitseq_rows({"ctrl": "90-97"}),
            "line 2, sample 'ctrl', column round1_wells: well 97 is outside 1-96",
        ),
        (
            splitseq_rows({"ctrl": "0"}),
            "line 2, sample 'ctrl', column round1_wells: well 0 is outside 1-96",
        ),
        (
            splitseq_rows({"ctrl": "A1-A12"}),
            "column round1_wells: 'A1-A12' is not a well number or range",
        ),
        (
            splitseq_rows({"ctrl": "12-1"}),
            "column round1_wells: range '12-1' ends before it starts",
        ),
        (
            splitseq_rows({"ctrl": "1-48"}, technology="10xv3"),
            "line 2, sample 'ctrl', column round1_wells: '1-48' given, but only SPLIT-SEQ "
            "gene-expression rows have round-1 wells",
        ),
        (
            splitseq_rows({"ctrl": "1-48", "trt": ""}),
            "is used twice: line 2 (sample 'ctrl', fastq_1) and line 4 (sample 'trt', fastq_1)",
        ),
        (
            splitseq_rows({"ctrl": "1-48"}) + splitseq_rows({"trt": "49-96"}, lanes=LIBRARY[:1]),
            "line 4, sample 'trt': shares FASTQs with sample 'ctrl' but not all of its lanes",
        ),
        (
            [[*splitseq_rows({"ctrl": "1-48"})[0]], [*splitseq_rows({"ctrl": "1-47"})[1]]],
            "line 3, sample 'ctrl', column round1_wells: '1-47' differs from line 2",
        ),
        (
            [splitseq_rows({"ctrl": "1-48"})[0], splitseq_rows({"ctrl": ""})[1]],
            "line 3, sample 'ctrl', column round1_wells: empty, but line 2 gives the sample's "
            "wells",
        ),
    ],
)
def test_round1_well_errors_name_the_sample_and_key(tmp_path, rows, message):
    with pytest.raises(SampleSheetError, match=re.escape(message)):
        load_sample_sheet(sheet(tmp_path, WELLS_HEADER, rows), "10xv3", workdir=tmp_path)


def test_a_sample_keeps_the_barcodes_of_its_round1_wells():
    import anndata as ad
    import numpy as np

    from kbagg.cells.matrices import keep_round1_wells
    from kbagg.kb.technology import splitseq_round1_pairs

    pairs = splitseq_round1_pairs()
    library = ad.AnnData(np.arange(8, dtype=float).reshape(4, 2))
    library.obs_names = ["AACGTGATAACGTGAT" + pairs[w - 1][0] for w in (3, 50, 7, 96)]
    kept = keep_round1_wells(library.copy(), [1, 2, 3, 4, 5, 6, 7], "ctrl")
    assert kept.obs["round1_well"].tolist() == [3, 7]
    np.testing.assert_array_equal(kept.X, [[0, 1], [4, 5]])
    every = keep_round1_wells(library.copy(), [], "solo")
    assert every.obs["round1_well"].tolist() == [3, 50, 7, 96]


def test_bdwta_onlist_is_written_by_part_and_keeps_kbs_barcodes(tmp_path):
    """BDWTA's on-list goes to bustools as three columns of 9-base parts (bustools correct of
    the 27-mers takes 21 GB); the parts combine to exactly kb's 912,673 barcodes."""
    from kbagg.kb.technology import technology, write_onlist

    assert write_onlist("BDWTA", tmp_path / "bdwta.txt")
    rows = [line.split(" ") for line in (tmp_path / "bdwta.txt").read_text().splitlines()]
    columns = [{row[i] for row in rows} for i in range(3)]
    assert [len(c) for c in columns] == [97, 97, 97] and len(rows) == 97
    with gzip.open(technology("BDWTA").onlist, "rt") as handle:
        kbs = {line.strip() for line in handle if line.strip()}
    assert len(kbs) == 912_673
    assert {b[:9] for b in kbs} == columns[0] and {b[18:] for b in kbs} == columns[2]
    # Other technologies keep kb's one barcode a line.
    assert write_onlist("10XV2", tmp_path / "v2.txt")
    assert len((tmp_path / "v2.txt").read_text().split("\n", 1)[0]) == 16


def test_a_bdwta_onlist_that_is_not_all_combinations_is_refused(tmp_path):
    from kbagg.kb.technology import onlist_by_part

    cells = tmp_path / "cells.txt"
    cells.write_text("A" * 27 + "\n" + "C" * 27 + "\n")
    with pytest.raises(KbaggError, match=r"cells.txt: its 2 barcodes are not every combination"):
        onlist_by_part("BDWTA", cells)
    cells.write_text("A" * 26 + "\n")
    with pytest.raises(KbaggError, match="is not 27 bases"):
        onlist_by_part("BDWTA", cells)
    cells.write_text("A" * 27 + "\n" + "A" * 18 + "C" * 9 + "\n")
    assert onlist_by_part("BDWTA", cells) == f"{'A' * 9} {'A' * 9} {'A' * 9}\n- - {'C' * 9}\n"
