"""Check one lane's FASTQ files (R1, R2; or as many as the technology takes: I1, I2, R1, R2
for Smart-seq3, three for 10x v1, one for 10x v3 on Ultima) in a single streaming pass,
cheaply enough to run beside `kb count`.

kb counts a damaged FASTQ as if it were good (a truncated `.gz` gives half the reads and exit
0, R1 longer than R2 is silently cut, R1 given twice makes fake cells). `check_lane` reads
each file once and raises `FastqError` on the first problem, naming sample, lane, file, read
number and/or compressed byte offset. What it checks:

- gzip: valid to the end of the file (truncation, corrupt deflate data, CRC-32/size trailer,
  non-gzip bytes after the last member, even zero padding). Multi-member files (bgzip,
  concatenated `.gz`) are read fully. A file without the gzip magic is read as plain FASTQ.
- FASTQ records of exactly 4 lines: header starts with `@`, third line starts with `+`,
  sequence and quality have the same length. A carriage return anywhere is an error (Windows
  line ends are not handled: convert with dos2unix). The last line may lack its newline,
  and blank lines after the last record are ignored; a file that ends inside a record is an
  error. Sequence and quality characters are not checked.
- pairs: all files of the lane have the same number of reads, and the names agree read by
  read with the first file's, compared up to the first space or tab (any byte <= 0x20)
  without a trailing `/1` or `/2`; a name may have at most 254 characters (SAM's limit).
- every read of file i has at least `min_lengths[i]` bases (the technology's barcode and UMI).
- no file is empty; no two are the same file (path, inode or identical bytes).

Before a FASTQ format or pairing problem is reported, the rest of the file(s) concerned is
decompressed (not parsed): if the gzip stream is corrupt, that is the root cause and is
reported instead.

How: each file is read in compressed chunks of `block_bytes // 4`, hashed (SHA-256 of the
stored bytes) and inflated with ISA-L (`isal.isal_zlib`; inflating alone is 1.7x faster than
zlib here, the whole check 1.5x) into text blocks of at most `block_bytes`. Records are parsed
with numpy on whole blocks (newline positions, line starts and lengths; names gathered into
fixed-width rows and compared as uint64 words). R1 and R2 are consumed in lock-step by
complete records, the partial record at a block's end carried over. Memory is bounded: about
4 x `block_bytes` per file (compressed chunk, text block and its copy, newline index, name
rows) plus the longest record; peak RSS with the default 4 MiB blocks is 60 MB, interpreter
and numpy included. It runs in one thread: the check costs 2.3% (1M read pairs) to 3.5% (4M)
of the CPU time of `kb count` on the same lane with a tiny (human MT) index, less with a real
one (tests/benchmarks/bench_fastq_check.py); inflating in a thread per file gave no gain on a
shared 2-core machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from kbagg.count.lane_record import (  # the record, in its own small module for its readers
    FastqError,
    FastqFileRecord,
    LaneRecord,
    read_lane_record,
    write_lane_record,
)

try:
    from isal import isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib stays usable
    isal_zlib = None

DEFAULT_BLOCK_BYTES = 4 << 20  # decompressed text parsed at once, per file
PROGRESS_INTERVAL_S = 0.5  # progress(...) is called at most this often (plus once at the end)
GZIP_MAGIC = b"\x1f\x8b"
_AT, _PLUS, _NEWLINE, _SLASH, _ONE, _TWO = (ord(c) for c in "@+\n/12")
MAX_NAME_BYTES = 254  # longest read name accepted (SAM's limit for QNAME)
_NAME_ROW_BYTES = 256  # names are compared in rows of at most this many bytes
_PAD_BYTES = _NAME_ROW_BYTES  # zeros after each text block: every header's row stays inside

__all__ = [
    "FastqError",
    "FastqFileRecord",
    "LaneRecord",
    "check_lane",
    "check_lane_files",
    "read_lane_record",
    "write_lane_record",
]


def check_lane(
    r1: str | Path,
    r2: str | Path,
    *,
    min_lengths: tuple[int, int] = (28, 0),
    sample: str = "S1",
    lane: int = 1,
    progress: Callable[[int, int], None] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    inflate: str = "isal",
) -> LaneRecord:
    """Check a lane's R1/R2 FASTQ pair in one pass (`check_lane_files` with two files).

    Parameters
    ----------
    r1, r2
        The lane's FASTQ files.
    min_lengths, sample, lane, progress, block_bytes, inflate
        As for `check_lane_files`.
    """
    if len(min_lengths) != 2:
        raise ValueError(f"min_lengths must be two lengths >= 0, got {min_lengths!r}")
    return check_lane_files(
        [r1, r2],
        min_lengths=min_lengths,
        sample=sample,
        lane=lane,
        progress=progress,
        block_bytes=block_bytes,
        inflate=inflate,
    )


def check_lane_files(
    fastqs: list[str | Path],
    *,
    min_lengths: tuple[int, ...],
    labels: tuple[str, ...] | None = None,
    sample: str = "S1",
    lane: int = 1,
    progress: Callable[[int, int], None] | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    inflate: str = "isal",
) -> LaneRecord:
    """Check all FASTQ files of a lane in one pass; return what was read, or raise FastqError.

    Parameters
    ----------
    fastqs
        The lane's FASTQ files in kb's order (fastq_1 ... fastq_N of the sample sheet), gzip
        (one or more members) or plain. Messages and the record name them as given.
    min_lengths
        Minimum bases of every read of each file: what the technology's barcode and UMI need
        (`kbagg.kb.technology.technology(name).min_lengths`); 0 for no minimum.
    labels
        What each file is, for messages (I1, R1, ...); default R1, R2 for two files, else
        fastq_1 ... fastq_N.
    sample, lane
        Named in every error message and stored in the record.
    progress
        Called as ``progress(bytes_done, bytes_total)`` (compressed bytes of all files) at
        most every 0.5 s, and once at the end.
    block_bytes
        Decompressed bytes parsed at once per file; memory is about 4 x this per file.
    inflate
        "isal" (default, ISA-L) or "zlib" (the standard library; the check is 1.5x slower).

    Returns
    -------
    LaneRecord
        Sample, lane, reads (per file), and per file: path, size, SHA-256, reads, min/max
        length.
    """
    where = f"sample '{sample}', lane {lane}"
    fastqs = list(fastqs)
    n = len(fastqs)
    if n == 0:
        raise ValueError("a lane has at least one FASTQ file")
    if len(min_lengths) != n or any(int(m) < 0 for m in min_lengths):
        raise ValueError(f"min_lengths must be {n} lengths >= 0, got {min_lengths!r}")
    if labels is None:
        labels = ("R1", "R2") if n == 2 else tuple(f"fastq_{i}" for i in range(1, n + 1))
    if len(labels) != n:
        raise ValueError(f"labels must name {n} files, got {labels!r}")
    if block_bytes < 8:
        raise ValueError(f"block_bytes must be at least 8, got {block_bytes}")
    module = _inflate_module(inflate, where)
    for i in range(n):
        for j in range(i + 1, n):
            if str(fastqs[i]) == str(fastqs[j]) or _same_inode(fastqs[i], fastqs[j]):
                raise FastqError(
                    f"{where}: {labels[i]} {fastqs[i]} and {labels[j]} {fastqs[j]} are the same "
                    f"file; give the lane's {labels[j]} as the {_ordinal(j)} FASTQ"
                )
    sides = []
    try:
        for label, path, min_length in zip(labels, fastqs, min_lengths, strict=True):
            sides.append(_Side(label, path, int(min_length), block_bytes, module, where))
        _check_files(sides, _Progress(progress, sides))
        files = [side.file_record() for side in sides]
    finally:
        for side in sides:
            side.close()
    for i in range(n):
        for j in range(i + 1, n):
            if files[i].sha256 == files[j].sha256:
                raise FastqError(
                    f"{where}: {labels[i]} {fastqs[i]} and {labels[j]} {fastqs[j]} have "
                    f"identical contents (SHA-256 {files[i].sha256[:12]}...); give the lane's "
                    f"{labels[j]} as the {_ordinal(j)} FASTQ"
                )
    by_column = {f"fastq_{i}": record for i, record in enumerate(files, start=1)}
    return LaneRecord(sample=sample, lane=int(lane), reads=files[0].reads, files=by_column)


# --- internals -------------------------------------------------------------------------------


class _Problem(Exception):
    """A problem found in one file; `_Side` adds sample, lane and file to the message."""

    def __init__(self, message: str, *, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated  # the file ends inside a gzip member


def _ordinal(i: int) -> str:
    """'first', 'second', ... for file index i (0-based)."""
    names = ("first", "second", "third", "fourth", "fifth")
    return names[i] if i < len(names) else f"{i + 1}th"


def _inflate_module(name: str, where: str):
    if name == "zlib":
        return zlib
    if name == "isal":
        if isal_zlib is None:
            raise FastqError(
                f"{where}: the FASTQ check needs the isal package (pip install isal), "
                "or pass inflate='zlib'"
            )
        return isal_zlib
    raise ValueError(f"inflate must be 'isal' or 'zlib', got {name!r}")


def _same_inode(a: str | Path, b: str | Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False  # reported by name when the file is opened
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class _Stream:
    """The bytes of one file as text blocks of at most `block_bytes`: inflated when the file
    starts with the gzip magic, as stored otherwise. Hashes the stored bytes as it reads."""

    def __init__(self, handle, block_bytes: int, inflate_module):
        self.handle = handle
        self.block_bytes = block_bytes
        self.read_bytes = max(block_bytes // 4, 2)  # compressed bytes per read
        self.inflate = inflate_module
        self.errors = (zlib.error,) if inflate_module is zlib else (inflate_module.error,)
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self.pending = b""  # stored bytes read but not yet inflated
        self.decompressor = None  # inside a gzip member when not None
        self.members = 0
        self.member_start = 0
        self.is_gzip = None  # decided by the first bytes

    def _read(self, size: int) -> bytes:
        chunk = self.handle.read(size)
        self.sha256.update(chunk)
        self.bytes_read += len(chunk)
        return chunk

    def next_block(self) -> bytes:
        """The next text block; b"" at the end of the file."""
        if self.is_gzip is None:
            self.pending = self._read(self.read_bytes)
            self.is_gzip = self.pending[:2] == GZIP_MAGIC
        if not self.is_gzip:
            if self.pending:
                block, self.pending = self.pending, b""
                return block
            return self._read(self.block_bytes)
        while True:
            if self.decompressor is None:  # between members: a new one, or the end
                while len(self.pending) < 2 and (chunk := self._read(self.read_bytes)):
                    self.pending += chunk
                if not self.pending:
                    return b""
                if self.pending[:2] != GZIP_MAGIC:
                    offset = self.bytes_read - len(self.pending)
                    rest = len(self.pending) + self._count_rest()
                    raise _Problem(
                        f"{rest:,} bytes that are not gzip data follow the last gzip member "
                        f"at byte {offset:,} (trailing garbage; the file may be damaged)"
                    )
                self.decompressor = self.inflate.decompressobj(wbits=31)
                self.members += 1
                self.member_start = self.bytes_read - len(self.pending)
            at_end = False
            if not self.pending:
                self.pending = self._read(self.read_bytes)
                at_end = not self.pending
            try:
                block = self.decompressor.decompress(self.pending, self.block_bytes)
            except self.errors as e:
                raise _Problem(
                    f"corrupt gzip data ({_inflate_reason(e)}) in the member that starts at "
                    f"byte {self.member_start:,}, detected before byte {self.bytes_read:,}"
                ) from None
            if self.decompressor.eof:
                self.pending = self.decompressor.unused_data
                self.decompressor = None
            else:
                self.pending = self.decompressor.unconsumed_tail
                if at_end and not block:
                    raise _Problem(
                        f"truncated gzip stream: the file ends at byte {self.bytes_read:,} "
                        "before the end of the compressed data",
                        truncated=True,
                    )
            if block:
                return block

    def _count_rest(self) -> int:
        n = 0
        while chunk := self._read(1 << 20):
            n += len(chunk)
        return n

    def drain(self) -> None:
        """Inflate (and discard) the rest of the file: raises _Problem if gzip is damaged."""
        if self.is_gzip:
            while self.next_block():
                pass


def _inflate_reason(error: Exception) -> str:
    text = str(error)
    if any(s in text.lower() for s in ("checksum", "incorrect data check", "length check")):
        return "the CRC-32 or length in the member's trailer does not match its data"
    return re.sub(r"^Error -?\d+( while decompressing data)?:?\s*", "", text).strip()


class _Batch:
    """Records [start, stop) of one parsed text block of one side."""

    __slots__ = ("names", "name_lengths", "first_read")

    def __init__(self, names, name_lengths, first_read):
        self.names = names  # uint64 rows: each read's name, zero padded
        self.name_lengths = name_lengths
        self.first_read = first_read  # 1-based number of the batch's first read


class _Side:
    """One FASTQ file of the lane, parsed block by block into complete records."""

    def __init__(self, label, path, min_length, block_bytes, inflate_module, where):
        self.label = label
        self.path = str(path)
        self.min_length = min_length
        self.where = where
        try:
            self.handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise FastqError(f"{where}: {label} {path}: cannot open ({e.strerror})") from None
        self.size_bytes = os.fstat(self.handle.fileno()).st_size
        self.stream = _Stream(self.handle, block_bytes, inflate_module)
        self.reads_done = 0  # reads handed out by take()
        self.min_length_seen = None
        self.max_length_seen = 0
        self.at_end = False
        self._tail = b""  # the partial record after the last complete one
        self._buffer = np.empty(0, np.uint8)  # the text being parsed
        self._clear()

    def close(self):
        self.handle.close()

    def _clear(self):
        self.n = 0  # complete records in the current block
        self.pos = 0  # next record to hand out
        self.bad = None  # (index, message) of the first bad record in the block
        self.names = None
        self.name_lengths = None

    @property
    def available(self) -> int:
        return self.n - self.pos

    def fail(self, message: str, *, drain: bool = True) -> FastqError:
        """The FastqError for this file; first inflates the rest of the file, whose damage
        (a corrupt gzip stream) would be the cause of the problem found."""
        if drain:
            try:
                self.stream.drain()
            except _Problem as p:
                message = str(p)
        return FastqError(f"{self.where}: {self.label} {self.path}: {message}")

    def fill(self, need_names: bool) -> bool:
        """Parse the next block holding at least one complete record; False at the end."""
        assert self.available == 0
        self._clear()
        tail = self._tail
        while True:
            try:
                block = self.stream.next_block()
            except _Problem as p:
                after = f" (after read {self.reads_done:,})" if p.truncated else ""
                raise self.fail(f"{p}{after}", drain=False) from None
            if not block:
                return self._finish(tail, need_names)
            if _has_lines(block, 4 - tail.count(b"\n")):
                self._parse(tail, block, need_names)
                return True
            tail += block  # no complete record yet (tiny blocks or a huge record)

    def _finish(self, tail: bytes, need_names: bool) -> bool:
        """The end of the file: the last record may lack its final newline; blank lines after
        it are ignored; anything else is an incomplete record."""
        self.at_end = True
        self._tail = b""
        read = self.reads_done + 1
        if tail.strip(b"\n") and tail.count(b"\n") == 3 and not tail.endswith(b"\n"):
            _, seq, _, qual = tail.split(b"\n")
            if len(qual) >= len(seq):
                self._parse(tail, b"\n", need_names)
                return True
            raise self.fail(
                f"the file ends in the middle of read {read:,} (line {4 * read:,}: quality "
                f"has {len(qual):,} of {len(seq):,} characters)"
            )
        if tail.strip(b"\n"):
            lines = tail.count(b"\n") + (not tail.endswith(b"\n"))
            raise self.fail(
                f"the file ends in the middle of read {read:,} "
                f"(line {4 * self.reads_done + lines:,}; a FASTQ record has 4 lines)"
            )
        if self.reads_done == 0:
            empty = " (0 bytes)" if self.size_bytes == 0 else ""
            raise self.fail(f"no reads: the file is empty{empty}")
        return False

    def _parse(self, tail: bytes, block: bytes, need_names: bool) -> None:
        """Parse the complete records of tail + block (at least one), keep the rest."""
        size = len(tail) + len(block)
        if len(self._buffer) < size + _PAD_BYTES:  # reused: no new pages for every block
            self._buffer = np.empty(size + _PAD_BYTES, np.uint8)
        data = self._buffer[: size + _PAD_BYTES]
        data[: len(tail)] = np.frombuffer(tail, np.uint8)
        data[len(tail) : size] = np.frombuffer(block, np.uint8)
        data[size:] = 0
        newlines = np.flatnonzero(data[:size] == _NEWLINE)
        n = len(newlines) // 4
        ends = newlines[: 4 * n].reshape(n, 4)
        end = int(ends[-1, 3])  # the last complete record's final newline
        self._tail = data[end + 1 : size].tobytes()
        header_end, seq_end, plus_end, qual_end = ends.T
        header_start = np.empty(n, np.int64)
        header_start[0] = 0
        header_start[1:] = qual_end[:-1] + 1
        seq_length = seq_end - header_end - 1
        qual_length = qual_end - plus_end - 1
        bad = data[header_start] != _AT
        bad |= data[seq_end + 1] != _PLUS
        bad |= seq_length != qual_length
        if self.min_length:
            bad |= seq_length < self.min_length
        carriage_return = tail.find(b"\r", 0, end)
        if carriage_return < 0 and end > len(tail):
            carriage_return = block.find(b"\r", 0, end - len(tail))
            carriage_return += len(tail) if carriage_return >= 0 else 0
        if carriage_return >= 0:
            bad[np.searchsorted(header_start, carriage_return, side="right") - 1] = True
        if need_names:
            self.names, self.name_lengths = _name_rows(data, header_start, header_end)
            bad |= self.name_lengths > MAX_NAME_BYTES
        if bad.any():
            i = int(bad.argmax())
            self.bad = (i, self._describe(data, i, ends[i], int(header_start[i])))
            seq_length = seq_length[:i]  # the reads before the bad one are handed out
        if len(seq_length):
            low, high = int(seq_length.min()), int(seq_length.max())
            if self.min_length_seen is None or low < self.min_length_seen:
                self.min_length_seen = low
            self.max_length_seen = max(self.max_length_seen, high)
        self.n, self.pos = n, 0

    def _describe(self, data: np.ndarray, i: int, ends, header_start: int) -> str:
        """What is wrong with record i of the block (checks in the order of its lines)."""
        read = self.reads_done + i + 1
        line = 4 * (read - 1) + 1
        header = data[header_start : ends[0]].tobytes()
        plus = data[ends[1] + 1 : ends[2]].tobytes()
        record = data[header_start : ends[3]].tobytes()
        seq_length, qual_length = ends[1] - ends[0] - 1, ends[3] - ends[2] - 1
        if not header.startswith(b"@"):
            return f"read {read:,} (line {line:,}): the header does not start with '@': {_show(header)}"
        name = re.match(rb"[^\x00-\x20]*", header[1:])[0]
        if len(name) > MAX_NAME_BYTES:
            return (
                f"read {read:,} (line {line:,}): the read name has more than {MAX_NAME_BYTES} "
                f"characters (SAM's limit): {_show(name)}"
            )
        if not plus.startswith(b"+"):
            return f"read {read:,} (line {line + 2:,}): the third line does not start with '+': {_show(plus)}"
        if b"\r" in record:
            return (
                f"read {read:,} (line {line:,}): carriage return (\\r) in the record: Windows "
                "line ends are not supported; convert the file (e.g. dos2unix)"
            )
        if seq_length != qual_length:
            return (
                f"read {read:,} (line {line + 1:,}): sequence has {seq_length:,} bases but "
                f"quality has {qual_length:,} characters"
            )
        return (
            f"read {read:,} (line {line + 1:,}) has {seq_length:,} bases, fewer than the "
            f"{self.min_length:,} the technology's barcode and UMI need"
        )

    def take(self, k: int) -> _Batch:
        """Hand out the next k records; raise FastqError if one of them is bad."""
        start, stop = self.pos, self.pos + k
        if self.bad is not None and self.bad[0] < stop:
            raise self.fail(self.bad[1])
        batch = _Batch(
            self.names[start:stop] if self.names is not None else None,
            self.name_lengths[start:stop] if self.name_lengths is not None else None,
            self.reads_done + 1,
        )
        self.pos = stop
        self.reads_done += k
        return batch

    def bad_read(self, k: int) -> int | None:
        """The number of the first bad read among the next k, else None."""
        if self.bad is not None and self.bad[0] < self.pos + k:
            return self.reads_done + self.bad[0] - self.pos + 1
        return None

    def name(self, batch: _Batch, i: int) -> str:
        raw = batch.names[i].tobytes()[: batch.name_lengths[i]]
        return _show(raw)

    def file_record(self) -> FastqFileRecord:
        return FastqFileRecord(
            path=self.path,
            size_bytes=self.size_bytes,
            sha256=self.stream.sha256.hexdigest(),
            compression="gzip" if self.stream.is_gzip else "none",
            gzip_members=self.stream.members,
            reads=self.reads_done,
            min_length=self.min_length_seen or 0,
            max_length=self.max_length_seen,
        )


def _name_rows(data, header_start, header_end):
    """Each read's name (after '@', up to the first byte <= 0x20, without '/1' or '/2') as a
    row of uint64 words, zero padded; and the name lengths in bytes."""
    width = int((header_end - header_start).max())  # the header after '@' and its newline
    width = min(-(-width // 8) * 8, _NAME_ROW_BYTES)
    name_start = header_start + 1
    rows = np.lib.stride_tricks.sliding_window_view(data, width)[name_start]
    lengths = _first_true(rows <= 32)  # the newline, at the latest; `width` if none
    name_end = name_start + lengths
    mate = data[name_end - 1]
    lengths -= 2 * (
        (lengths >= 2) & (data[name_end - 2] == _SLASH) & ((mate == _ONE) | (mate == _TWO))
    )
    words = rows.view(np.uint64)
    words &= _prefix_masks(width)[lengths]
    return words, lengths


def _first_true(flags: np.ndarray) -> np.ndarray:
    """Column of the first True of each row of a bool matrix whose width is a multiple of 8
    (the width for a row without any), 8 columns at a time: twice as fast as argmax(axis=1)."""
    words = flags.view(np.uint64)  # little-endian: column 8w + b is byte b of word w
    first_word = (words != 0).argmax(axis=1)
    word = words[np.arange(len(words)), first_word]
    none = word == 0
    word[none] = 1
    lowest_bit = word & (~word + np.uint64(1))  # a power of two: 1 << (8 * byte)
    first = first_word * 8 + (np.log2(lowest_bit.astype(np.float64)).astype(np.int64) >> 3)
    first[none] = flags.shape[1]
    return first


@cache
def _prefix_masks(width: int) -> np.ndarray:
    """Row L keeps the first L bytes of a `width`-byte row: 0xFF for them, then 0x00."""
    masks = np.zeros((width + 1, width), np.uint8)
    masks[np.arange(width)[None, :] < np.arange(width + 1)[:, None]] = 0xFF
    return masks.view(np.uint64)


def _has_lines(text: bytes, count: int) -> bool:
    at = -1
    for _ in range(count):
        at = text.find(b"\n", at + 1)
        if at < 0:
            return False
    return True


def _show(raw: bytes, limit: int = 60) -> str:
    text = raw[:limit].decode("ascii", "backslashreplace")
    return repr(text + ("..." if len(raw) > limit else ""))


class _Progress:
    def __init__(self, callback, sides):
        self.callback = callback
        self.sides = sides
        self.total = sum(side.size_bytes for side in sides)
        self.last = time.monotonic()

    def __call__(self, final: bool = False):
        if self.callback is None:
            return
        now = time.monotonic()
        if final or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            done = self.total if final else sum(s.stream.bytes_read for s in self.sides)
            self.callback(done, self.total)


def _check_files(sides: list[_Side], progress: _Progress) -> None:
    """Consume all files in lock-step by complete records; raise on the first problem."""
    first = sides[0]
    need_names = len(sides) > 1
    while True:
        for side in sides:
            if side.available == 0 and not side.at_end:
                side.fill(need_names=need_names)
        progress()
        k = min(side.available for side in sides)
        if k == 0:
            break
        # The first problem in read order: a bad record in any file, or a name mismatch.
        bad = [side.bad_read(k) for side in sides]
        limit = min((b for b in bad if b is not None), default=None)
        stop = k if limit is None else limit - first.reads_done - 1  # reads before it
        if stop:
            batches = [side.take(stop) for side in sides]
            for other, batch in zip(sides[1:], batches[1:], strict=True):
                _compare_names(first, other, batches[0], batch)
        if limit is not None:
            culprit = sides[bad.index(limit)]
            culprit.take(1)  # raises for the bad record
    # One file has ended; read the other to its end to report both counts.
    for side in sides:
        while not side.at_end or side.available:
            if side.available:
                side.take(side.available)
            else:
                side.fill(need_names=False)
            progress()
    progress(final=True)
    for second in sides[1:]:
        if first.reads_done != second.reads_done:
            both = "R1 and R2" if len(sides) == 2 else "all files"
            raise FastqError(
                f"{first.where}: {first.label} {first.path} has {first.reads_done:,} reads, "
                f"{second.label} {second.path} has {second.reads_done:,}; {both} of a lane "
                "must have the same reads"
            )


def _compare_names(first: _Side, second: _Side, a: _Batch, b: _Batch) -> None:
    """Raise for the first pair of the batches whose names differ."""
    words = min(a.names.shape[1], b.names.shape[1])  # equal names fit in both
    if np.array_equal(a.name_lengths, b.name_lengths) and np.array_equal(
        a.names[:, :words], b.names[:, :words]
    ):
        return
    differ = a.name_lengths != b.name_lengths
    differ |= (a.names[:, :words] != b.names[:, :words]).any(axis=1)
    i = int(differ.argmax())
    one, two = first.label, second.label
    message = (
        f"read {a.first_read + i:,}: names differ between {one} and {two} ({one} "
        f"{first.name(a, i)}, {two} {second.name(b, i)}); the files are not "
        f"{'the two reads' if (one, two) == ('R1', 'R2') else 'reads'} of one lane, or not in "
        "the same order"
    )
    for side in (first, second):  # a damaged gzip stream would be the cause
        try:
            side.stream.drain()
        except _Problem as p:
            raise FastqError(f"{side.where}: {side.label} {side.path}: {p}") from None
    raise FastqError(
        f"{first.where}: {first.label} {first.path} and {second.label} {second.path}: {message}"
    )
