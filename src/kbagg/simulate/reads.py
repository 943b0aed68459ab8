"""Sequences and FASTQ files for the simulators: random bases, reverse complements, FASTQ
records, and gzip files whose bytes are the same on every run."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from kbagg.atomic import atomic_output

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
COMPLEMENT = bytes.maketrans(b"ACGT", b"TGCA")


def random_seq(rng: np.random.Generator, n: int) -> bytes:
    return BASES[rng.integers(0, 4, n)].tobytes()


def revcomp(seq: bytes) -> bytes:
    return seq.translate(COMPLEMENT)[::-1]


def fastq_record(name: str, seq: bytes) -> bytes:
    return b"@%s\n%s\n+\n%s\n" % (name.encode(), seq, b"I" * len(seq))


def write_gz(path: Path, payload: bytes) -> None:
    """`payload` gzipped into `path`, atomically. mtime=0 and no file name in the header (the
    temp name holds a pid) make the bytes, and so the demo, identical on every run."""
    with (
        atomic_output(path) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        gz.write(payload)
