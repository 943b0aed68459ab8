"""The BUS file kallisto writes and bustools sorts, read and written with numpy.

A BUS file is a header (``BUS\\0``, version, barcode length, UMI length, a text of known
length) followed by 32-byte records: barcode (uint64), UMI (uint64), equivalence class
(int32), count (uint32: the reads carrying this barcode, UMI and equivalence class), flags
(uint32) and padding (uint32). Barcodes and UMIs are 2 bits per base, A=0 C=1 G=2 T=3, the
first base in the most significant bits (what ``bustools text`` prints back).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError

MAGIC = b"BUS\0"
RECORD = np.dtype(
    [
        ("barcode", "<u8"),
        ("umi", "<u8"),
        ("ec", "<i4"),
        ("count", "<u4"),
        ("flags", "<u4"),
        ("pad", "<u4"),
    ]
)
_HEADER_INTS = np.dtype("<u4")
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
# Records read at once: 2**21 records are 64 MiB.
CHUNK_RECORDS = 1 << 21


@dataclass(frozen=True)
class BusHeader:
    """A BUS file's header: format version, barcode and UMI lengths (bases), its text."""

    version: int
    barcode_length: int
    umi_length: int
    text: bytes

    @property
    def size_bytes(self) -> int:
        return 20 + len(self.text)

    def to_bytes(self) -> bytes:
        numbers = np.array(
            [self.version, self.barcode_length, self.umi_length, len(self.text)],
            dtype=_HEADER_INTS,
        )
        return MAGIC + numbers.tobytes() + self.text


def read_header(path: str | Path) -> BusHeader:
    """The header of BUS file `path` (KbaggError naming the file if it is not one).

    Parameters
    ----------
    path
        The BUS file.
    """
    with open(path, "rb") as f:
        head = f.read(20)
        if len(head) < 20 or head[:4] != MAGIC:
            raise KbaggError(f"{path}: not a BUS file (no 'BUS\\0' header)")
        version, barcode_length, umi_length, text_length = np.frombuffer(
            head[4:], dtype=_HEADER_INTS
        )
        text = f.read(int(text_length))
    header = BusHeader(int(version), int(barcode_length), int(umi_length), text)
    records_bytes = Path(path).stat().st_size - header.size_bytes
    if records_bytes < 0 or records_bytes % RECORD.itemsize:
        raise KbaggError(f"{path}: truncated BUS file ({records_bytes} bytes of records)")
    return header


def iter_records(path: str | Path, chunk_records: int = CHUNK_RECORDS) -> Iterator[np.ndarray]:
    """The records of BUS file `path`, in file order, `chunk_records` at a time (bounded
    memory: 32 bytes a record).

    Parameters
    ----------
    path
        The BUS file.
    chunk_records
        Records per yielded array (structured, dtype `RECORD`).
    """
    header = read_header(path)
    with open(path, "rb") as f:
        f.seek(header.size_bytes)
        while True:
            chunk = np.fromfile(f, dtype=RECORD, count=chunk_records)
            if not len(chunk):
                return
            yield chunk


def write_bus(path: str | Path, header: BusHeader, chunks: Iterable[np.ndarray]) -> int:
    """Write a BUS file (atomically) from `header` and record arrays; returns the records.

    Parameters
    ----------
    path
        The BUS file to write.
    header
        Its header (usually the input's).
    chunks
        Arrays of dtype `RECORD`, written in order.
    """
    written = 0
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(header.to_bytes())
        for chunk in chunks:
            np.asarray(chunk, dtype=RECORD).tofile(f)
            written += len(chunk)
    return written


def encode_sequences(sequences: Sequence[str], length: int) -> np.ndarray:
    """Barcode (or UMI) strings as BUS integers (uint64), 2 bits a base.

    Parameters
    ----------
    sequences
        Strings of A, C, G, T, each `length` bases (KbaggError naming the first that is not).
    length
        Bases per sequence (the BUS header's barcode or UMI length, at most 32).
    """
    raw = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)
    lengths = {len(s) for s in sequences}
    if lengths - {length}:
        bad = next(s for s in sequences if len(s) != length)
        raise KbaggError(f"barcode '{bad}' is not {length} bases long")
    codes = np.searchsorted(_BASES, raw)
    if len(raw) and (codes.max() > 3 or not np.array_equal(_BASES[np.minimum(codes, 3)], raw)):
        bad = next(s for s in sequences if set(s) - set("ACGT"))
        raise KbaggError(f"barcode '{bad}' has a base other than A, C, G, T")
    codes = codes.astype(np.uint64).reshape(len(sequences), length)
    shifts = np.arange(2 * (length - 1), -1, -2, dtype=np.uint64)
    return (codes << shifts).sum(axis=1, dtype=np.uint64)


def decode_sequences(values: np.ndarray, length: int) -> list[str]:
    """BUS integers back to strings (the inverse of `encode_sequences`).

    Parameters
    ----------
    values
        uint64 barcodes or UMIs.
    length
        Bases per sequence.
    """
    values = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(2 * (length - 1), -1, -2, dtype=np.uint64)
    codes = (values[:, None] >> shifts) & np.uint64(3)
    letters = _BASES[codes.astype(np.intp)]
    return [row.tobytes().decode("ascii") for row in letters]
