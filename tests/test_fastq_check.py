"""kbagg.count.fastq_check: every check on small FASTQs built here, with the exact message
(sample, lane, file as given, read number or byte offset), and the real 10x v3 PBMC lane."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import zlib
from pathlib import Path

import pytest

from kbagg.count.fastq_check import (
    FastqError,
    LaneRecord,
    check_lane,
    read_lane_record,
    write_lane_record,
)

BASES = "ACGT"


def records(
    n: int, *, mate: int, lengths=None, suffix: str | None = None, varied: bool = False
) -> bytes:
    """n FASTQ records named like Illumina's, with the mate in the comment ("1:N:0:...")
    or, with `suffix`, appended to the name ("/1"); lengths default to 28 (R1) or 90 (R2).
    `varied`: comments of 0 to 119 extra characters, so header lengths differ."""
    out = []
    for i in range(n):
        length = (lengths[i] if lengths else None) or (28 if mate == 1 else 90)
        seq = "".join(BASES[(i * 7 + j * 3) % 4] for j in range(length))
        name = f"A00519:758:HTCCHDSXY:1:1101:{1000 + i}:{2000 + 3 * i}"
        header = f"@{name}{suffix}" if suffix else f"@{name} {mate}:N:0:NAATCCCGAC"
        header += "X" * (i * 37 % 120) if varied else ""
        out.append(f"{header}\n{seq}\n+\n{'F' * length}\n")
    return "".join(out).encode()


def gz(text: bytes) -> bytes:
    return gzip.compress(text, compresslevel=6, mtime=0)


def bgzf_block(text: bytes) -> bytes:
    """One BGZF block as bgzip writes it: a gzip member whose header has the FEXTRA field
    'BC' holding the block size."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(text) + deflate.flush()
    block_size = 18 + len(body) + 8  # header with extra field, data, CRC-32 and size
    header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\0\xff" + struct.pack("<H", 6)
    header += b"BC" + struct.pack("<HH", 2, block_size - 1)
    return header + body + struct.pack("<II", zlib.crc32(text), len(text))


def bgzip_like(text: bytes, member_bytes: int = 300) -> bytes:
    """BGZF blocks of at most `member_bytes` of text each, then bgzip's end-of-file marker
    (an empty block)."""
    blocks = [bgzf_block(text[i : i + member_bytes]) for i in range(0, len(text), member_bytes)]
    return b"".join(blocks) + bgzf_block(b"")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def pair(tmp_path: Path, r1: bytes, r2: bytes, *, compress=gz) -> tuple[Path, Path]:
    ext = ".fastq.gz" if compress else ".fastq"
    compress = compress or (lambda b: b)
    return (
        write(tmp_path / f"S1_R1{ext}", compress(r1)),
        write(tmp_path / f"S1_R2{ext}", compress(r2)),
    )


def fails(r1, r2, **kw) -> str:
    with pytest.raises(FastqError) as info:
        check_lane(r1, r2, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def good_text(n: int = 10) -> tuple[bytes, bytes]:
    return records(n, mate=1), records(n, mate=2)


# --- good files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compress", "compression", "members"),
    [(gz, "gzip", 1), (bgzip_like, "gzip", None), (None, "none", 0)],
    ids=["gzip", "multi-member", "plain"],
)
def test_good_pair(tmp_path, compress, compression, members):
    lengths = [28, 30, 31, 28, 29, 40, 28, 28, 33, 28, 35, 28]
    r1_text, r2_text = records(12, mate=1, lengths=lengths), records(12, mate=2)
    r1, r2 = pair(tmp_path, r1_text, r2_text, compress=compress)
    record = check_lane(r1, r2, sample="PBMC1", lane=3)
    assert (record.sample, record.lane, record.reads) == ("PBMC1", 3, 12)
    for path, got, text, low, high in (
        (r1, record.r1, r1_text, 28, 40),
        (r2, record.r2, r2_text, 90, 90),
    ):
        stored = path.read_bytes()
        assert got.path == str(path)
        assert got.size_bytes == len(stored)
        assert got.sha256 == hashlib.sha256(stored).hexdigest()
        assert got.compression == compression
        assert (got.reads, got.min_length, got.max_length) == (12, low, high)
        if members is None:  # one member per 300 bytes of text, plus bgzip's empty one
            assert got.gzip_members == -(-len(text) // 300) + 1 > 2
        else:
            assert got.gzip_members == members


def test_block_size_does_not_change_the_result(tmp_path):
    # Records straddle blocks and gzip members; read and header lengths vary.
    n = 200
    r1_text = records(n, mate=1, lengths=[28 + i % 17 for i in range(n)], varied=True)
    r2_text = records(n, mate=2, lengths=[60 + i % 31 for i in range(n)], varied=True)
    r1, r2 = pair(tmp_path, r1_text, r2_text, compress=lambda t: bgzip_like(t, 777))
    expected = check_lane(r1, r2)
    assert (expected.reads, expected.r1.min_length, expected.r1.max_length) == (n, 28, 44)
    assert (expected.r2.min_length, expected.r2.max_length) == (60, 90)
    for block_bytes in (8, 100, 1024, 4096):
        assert check_lane(r1, r2, block_bytes=block_bytes) == expected
    assert check_lane(r1, r2, inflate="zlib") == expected


def test_block_size_does_not_change_an_error(tmp_path):
    r1_text, r2_text = good_text(300)
    r2_text = r2_text.replace(b"1101:1250:2750 2", b"1101:1250:2751 2")  # read 251
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    messages = {fails(r1, r2, block_bytes=b) for b in (8, 1000, 1 << 20)}
    assert len(messages) == 1
    assert "read 251: names differ" in messages.pop()


@pytest.mark.parametrize(("suffix1", "suffix2"), [("/1", "/2"), ("/1", None), (None, "/2")])
def test_mate_suffix_and_comments_are_ignored(tmp_path, suffix1, suffix2):
    r1, r2 = pair(tmp_path, records(5, mate=1, suffix=suffix1), records(5, mate=2, suffix=suffix2))
    assert check_lane(r1, r2).reads == 5


def test_tab_ends_the_name_and_last_newline_may_be_missing(tmp_path):
    r1_text = records(4, mate=1).replace(b" 1:N", b"\t1:N")
    r2_text = records(4, mate=2).rstrip(b"\n")  # no newline after the last quality line
    r1, r2 = pair(tmp_path, r1_text + b"\n\n", r2_text)  # blank lines at the end: ignored
    record = check_lane(r1, r2)
    assert (record.reads, record.r1.reads, record.r2.reads, record.r2.min_length) == (4, 4, 4, 90)


def test_lane_record_json_round_trip(tmp_path):
    r1, r2 = pair(tmp_path, *good_text(7))
    record = check_lane(r1, r2, sample="S9", lane=2)
    out = tmp_path / "qc" / "S9_L2.json"
    write_lane_record(record, out)
    assert read_lane_record(out) == record
    data = json.loads(out.read_text())
    assert list(data) == ["files", "lane", "reads", "sample"]
    assert list(data["files"]["fastq_1"]) == [
        "compression",
        "gzip_members",
        "max_length",
        "min_length",
        "path",
        "reads",
        "sha256",
        "size_bytes",
    ]
    assert LaneRecord.from_json(record.to_json()) == record
    del data["files"]["fastq_2"]["sha256"]
    out.write_text(json.dumps(data))
    with pytest.raises(FastqError, match=re.escape(f"{out}: key 'sha256' is missing")):
        read_lane_record(out)


def test_progress_reports_compressed_bytes(tmp_path):
    r1, r2 = pair(tmp_path, *good_text(50))
    calls = []
    check_lane(r1, r2, progress=lambda done, total: calls.append((done, total)))
    total = r1.stat().st_size + r2.stat().st_size
    assert calls[-1] == (total, total)
    assert all(t == total and 0 <= d <= total for d, t in calls)


# --- gzip damage ---------------------------------------------------------------------------


def test_truncated_gzip(tmp_path):
    r1_text, r2_text = good_text(2000)
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    stored = r2.read_bytes()
    half = len(stored) // 2
    r2.write_bytes(stored[:half])
    # Reference: the complete records zlib can inflate from the first half.
    complete = zlib.decompressobj(wbits=31).decompress(stored[:half]).count(b"\n") // 4
    assert 0 < complete < 2000
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: truncated gzip stream: the file ends at byte "
        f"{half:,} before the end of the compressed data (after read {complete:,})"
    )


def test_truncated_gzip_inside_the_trailer(tmp_path):
    r1, r2 = pair(tmp_path, *good_text(20))
    stored = r1.read_bytes()
    r1.write_bytes(stored[:-3])  # the deflate data is complete, the size field is not
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1}: truncated gzip stream: the file ends at byte "
        f"{len(stored) - 3:,} before the end of the compressed data (after read 20)"
    )


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
def test_corrupt_deflate_data(tmp_path, inflate):
    r1_text, r2_text = good_text(2000)
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    stored = bytearray(r2.read_bytes())
    stored[len(stored) // 2] ^= 0xFF
    r2.write_bytes(bytes(stored))
    message = fails(r1, r2, inflate=inflate)
    assert re.fullmatch(
        rf"sample 'S1', lane 1: R2 {re.escape(str(r2))}: corrupt gzip data \([A-Za-z][^()]+\) in the "
        r"member that starts at byte 0, detected before byte [\d,]+",
        message,
    ), message


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
@pytest.mark.parametrize("field", ["crc", "size"])
def test_trailer_mismatch(tmp_path, field, inflate):
    r1, r2 = pair(tmp_path, *good_text(30))
    stored = bytearray(r1.read_bytes())
    stored[-8 if field == "crc" else -4] ^= 0x01
    r1.write_bytes(bytes(stored))
    assert fails(r1, r2, inflate=inflate) == (
        f"sample 'S1', lane 1: R1 {r1}: corrupt gzip data (the CRC-32 or length in the "
        "member's trailer does not match its data) in the member that starts at byte 0, "
        f"detected before byte {len(stored):,}"
    )


def test_corrupt_member_of_a_multi_member_file(tmp_path):
    r1_text, r2_text = good_text(30)
    first, second = gz(r1_text[:1000]), bytearray(gz(r1_text[1000:]))
    second[-6] ^= 0x10  # the CRC of the second member
    r1 = write(tmp_path / "R1.fq.gz", first + bytes(second))
    r2 = write(tmp_path / "R2.fq.gz", gz(r2_text))
    assert (
        f"corrupt gzip data (the CRC-32 or length in the member's trailer does not match its data) in the member that starts at byte {len(first):,}"
        in fails(r1, r2)
    )


def test_trailing_garbage(tmp_path):
    r1, r2 = pair(tmp_path, *good_text(10))
    size = r2.stat().st_size
    with open(r2, "ab") as out:
        out.write(b"garbage\n")
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: 8 bytes that are not gzip data follow the last gzip "
        f"member at byte {size:,} (trailing garbage; the file may be damaged)"
    )


def test_format_error_caused_by_corrupt_gzip_reports_the_gzip_damage(tmp_path):
    # The text has a bad header at read 2, and the member's CRC does not match: the root
    # cause reported is the damaged gzip stream, found by inflating the rest of the file.
    r1_text, r2_text = good_text(10)
    bad = bytearray(
        gz(
            r1_text.replace(
                b"@A00519:758:HTCCHDSXY:1:1101:1001", b"XA00519:758:HTCCHDSXY:1:1101:1001"
            )
        )
    )
    bad[-8] ^= 0x01
    r1, r2 = write(tmp_path / "R1.fq.gz", bytes(bad)), write(tmp_path / "R2.fq.gz", gz(r2_text))
    assert "corrupt gzip data (the CRC-32" in fails(r1, r2, block_bytes=256)
    bad[-8] ^= 0x01  # intact gzip: the format error itself
    r1.write_bytes(bytes(bad))
    assert "read 2 (line 5): the header does not start with '@'" in fails(r1, r2)


# --- pairing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n1", "n2"), [(13685, 5000), (5000, 13685)])
def test_unequal_read_counts(tmp_path, n1, n2):
    r1, r2 = pair(tmp_path, records(n1, mate=1), records(n2, mate=2))
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1} has {n1:,} reads, R2 {r2} has {n2:,}; R1 and R2 of "
        "a lane must have the same reads"
    )


@pytest.mark.parametrize(
    ("suffix1", "suffix2", "shown1", "shown2"),
    [
        (
            None,
            None,
            "A00519:758:HTCCHDSXY:1:1101:1003:2009",
            "A00519:758:HTCCHDSXY:1:1101:1003:2010",
        ),
        (
            "/1",
            "/2",
            "A00519:758:HTCCHDSXY:1:1101:1003:2009",
            "A00519:758:HTCCHDSXY:1:1101:1003:2010",
        ),
    ],
    ids=["comments", "mate-suffix"],
)
def test_mismatching_names(tmp_path, suffix1, suffix2, shown1, shown2):
    r1_text = records(8, mate=1, suffix=suffix1)
    r2_text = records(8, mate=2, suffix=suffix2).replace(b"1003:2009", b"1003:2010")
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1} and R2 {r2}: read 4: names differ between R1 and R2 "
        f"(R1 '{shown1}', R2 '{shown2}'); the files are not the two reads of one lane, or "
        "not in the same order"
    )


def test_name_that_is_a_prefix_of_the_other_differs(tmp_path):
    r1_text = records(3, mate=1)
    r2_text = records(3, mate=2).replace(b"1002:2006 2", b"1002:2006X 2")
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    assert (
        "read 3: names differ between R1 and R2 (R1 'A00519:758:HTCCHDSXY:1:1101:1002:2006', R2 'A00519:758:HTCCHDSXY:1:1101:1002:2006X')"
        in fails(r1, r2)
    )


def test_same_file_twice(tmp_path):
    r1, _ = pair(tmp_path, *good_text())
    same = f"sample 'S1', lane 1: R1 {r1} and R2 {{}} are the same file; give the lane's R2 as the second FASTQ"
    assert fails(r1, r1) == same.format(r1)
    link = tmp_path / "link.fastq.gz"
    link.symlink_to(r1)
    assert fails(r1, link) == same.format(link)
    hard = tmp_path / "hard.fastq.gz"
    os.link(r1, hard)
    assert fails(r1, hard) == same.format(hard)
    copy = write(tmp_path / "copy.fastq.gz", r1.read_bytes())
    digest = hashlib.sha256(r1.read_bytes()).hexdigest()
    assert fails(r1, copy) == (
        f"sample 'S1', lane 1: R1 {r1} and R2 {copy} have identical contents (SHA-256 "
        f"{digest[:12]}...); give the lane's R2 as the second FASTQ"
    )


# --- FASTQ records -------------------------------------------------------------------------


def test_short_r1(tmp_path):
    r1, r2 = pair(
        tmp_path, records(6, mate=1, lengths=[28, 28, 28, 26, 20, 28]), records(6, mate=2)
    )
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1}: read 4 (line 14) has 26 bases, fewer than the 28 the "
        "technology's barcode and UMI need"
    )
    assert check_lane(r1, r2, min_lengths=(20, 90)).r1.min_length == 20
    assert "R2 " + str(r2) + ": read 1 (line 2) has 90 bases, fewer than the 91" in fails(
        r1, r2, min_lengths=(0, 91)
    )


def test_sequence_and_quality_lengths_differ(tmp_path):
    r1_text, r2_text = good_text(5)
    lines = r2_text.split(b"\n")
    lines[4 * 2 + 3] = lines[4 * 2 + 3][:-1]  # read 3's quality is one short
    r1, r2 = pair(tmp_path, r1_text, b"\n".join(lines))
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: read 3 (line 10): sequence has 90 bases but quality "
        "has 89 characters"
    )


def test_missing_plus(tmp_path):
    r1_text, r2_text = good_text(5)
    lines = r1_text.split(b"\n")
    lines[4 * 4 + 2] = b"-"
    r1, r2 = pair(tmp_path, b"\n".join(lines), r2_text)
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1}: read 5 (line 19): the third line does not start "
        "with '+': '-'"
    )


def test_header_without_at(tmp_path):
    r1_text, r2_text = good_text(5)
    lines = r2_text.split(b"\n")
    lines[4] = lines[4][1:]
    r1, r2 = pair(tmp_path, r1_text, b"\n".join(lines), compress=None)
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: read 2 (line 5): the header does not start with '@': "
        "'A00519:758:HTCCHDSXY:1:1101:1001:2003 2:N:0:NAATCCCGAC'"
    )


def test_the_first_problem_in_read_order_is_reported(tmp_path):
    r1 = records(9, mate=1, lengths=[28] * 6 + [10, 28, 28])  # short read 7
    lines = records(9, mate=2).split(b"\n")
    lines[4 * 4 + 2] = b"x"  # read 5 of R2
    r1, r2 = pair(tmp_path, r1, b"\n".join(lines))
    assert f"R2 {r2}: read 5 (line 19)" in fails(r1, r2)


@pytest.mark.parametrize("compress", [gz, None], ids=["gzip", "plain"])
def test_file_ends_mid_record(tmp_path, compress):
    r1_text, r2_text = good_text(6)
    cut = r1_text[: r1_text.index(b"\n+\n", len(records(5, mate=1))) + 3]  # header, seq, +
    r1, r2 = pair(tmp_path, cut, r2_text, compress=compress)
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1}: the file ends in the middle of read 6 (line 23; a "
        "FASTQ record has 4 lines)"
    )


def test_windows_line_ends(tmp_path):
    r1_text, r2_text = good_text(4)
    r1, r2 = pair(tmp_path, r1_text, r2_text.replace(b"\n", b"\r\n"))
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: read 1 (line 1): carriage return (\\r) in the record: "
        "Windows line ends are not supported; convert the file (e.g. dos2unix)"
    )


@pytest.mark.parametrize(
    ("content", "detail"), [(b"", " (0 bytes)"), (gz(b""), ""), (gz(b"\n"), "")]
)
def test_empty_file(tmp_path, content, detail):
    r1 = write(tmp_path / "R1.fastq.gz", content)
    r2 = write(tmp_path / "R2.fastq.gz", gz(records(3, mate=2)))
    assert fails(r1, r2) == f"sample 'S1', lane 1: R1 {r1}: no reads: the file is empty{detail}"
    assert fails(r2, r1, sample="B", lane=2) == (
        f"sample 'B', lane 2: R2 {r1}: no reads: the file is empty{detail}"
    )


def test_missing_file(tmp_path):
    r1, _ = pair(tmp_path, *good_text())
    missing = tmp_path / "nope_R2.fastq.gz"
    assert fails(r1, missing) == (
        f"sample 'S1', lane 1: R2 {missing}: cannot open (No such file or directory)"
    )


# --- real data -----------------------------------------------------------------------------


def test_real_10xv3_lane(testdata):
    pbmc = testdata / "human_pbmc_cellplex_10xv3"
    if not pbmc.is_dir():
        pytest.skip(f"real test data not found at {pbmc}")
    r1 = pbmc / "PBMC1_S2_L001_R1_001.fastq.gz"
    r2 = pbmc / "PBMC1_S2_L001_R2_001.fastq.gz"
    with gzip.open(r1, "rb") as handle:
        reference_reads = sum(1 for _ in handle) // 4
    record = check_lane(r1, r2, min_lengths=(28, 0), sample="PBMC1")
    assert record.reads == record.r1.reads == record.r2.reads == reference_reads == 10_000
    assert (record.r1.min_length, record.r1.max_length) == (28, 28)
    assert (record.r2.min_length, record.r2.max_length) == (90, 90)
    assert record.r1.sha256 == hashlib.sha256(r1.read_bytes()).hexdigest()
    assert record.r2.size_bytes == r2.stat().st_size
    assert check_lane(r1, r2, sample="PBMC1", block_bytes=1024) == record
    # R1 of one library with R2 of the other: same read count, different names.
    other = pbmc / "PBMC2_S1_L001_R2_001.fastq.gz"
    assert "read 1: names differ between R1 and R2" in fails(r1, other)


def test_plain_file_ends_inside_the_last_quality_line(tmp_path):
    r1_text, r2_text = good_text(3)
    r1, r2 = pair(tmp_path, r1_text, r2_text[:-11], compress=None)  # 80 of 90, no newline
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R2 {r2}: the file ends in the middle of read 3 (line 12: "
        "quality has 80 of 90 characters)"
    )


def test_read_name_longer_than_sam_allows(tmp_path):
    r1_text, r2_text = good_text(4)
    long_name = b"N" * 255
    r1_text = r1_text.replace(b"A00519:758:HTCCHDSXY:1:1101:1002:2006", long_name)
    r2_text = r2_text.replace(b"A00519:758:HTCCHDSXY:1:1101:1002:2006", long_name)
    r1, r2 = pair(tmp_path, r1_text, r2_text)
    assert fails(r1, r2) == (
        f"sample 'S1', lane 1: R1 {r1}: read 3 (line 9): the read name has more than 254 "
        f"characters (SAM's limit): '{'N' * 60}...'"
    )
    ok = b"N" * 254  # the longest accepted, in a header longer than the 256-byte name rows
    r1.write_bytes(gz(r1_text.replace(long_name, ok).replace(b" 1:N:0:", b" 1:N:0:" + b"C" * 300)))
    r2.write_bytes(gz(r2_text.replace(long_name, ok)))
    assert check_lane(r1, r2).reads == 4
    r2.write_bytes(gz(r2_text.replace(long_name, ok[:-1] + b"M")))
    assert "read 3: names differ between R1 and R2" in fails(r1, r2)


def test_name_mismatch_caused_by_corrupt_gzip_reports_the_gzip_damage(tmp_path):
    r1_text, r2_text = good_text(10)
    r2_text = r2_text.replace(b"1101:1001:2003 2", b"1101:1001:2004 2")  # read 2
    bad = bytearray(gz(r2_text))
    bad[-7] ^= 0x01  # the CRC
    r1, r2 = write(tmp_path / "R1.fq.gz", gz(r1_text)), write(tmp_path / "R2.fq.gz", bytes(bad))
    # Small blocks: the names are compared before the end of the member (and its CRC).
    assert fails(r1, r2, block_bytes=256) == (
        f"sample 'S1', lane 1: R2 {r2}: corrupt gzip data (the CRC-32 or length in the "
        "member's trailer does not match its data) in the member that starts at byte 0, "
        f"detected before byte {len(bad):,}"
    )
