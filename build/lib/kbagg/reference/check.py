"""Checks of the genome FASTA and the GTF before `kb ref` spends minutes on them.

kb ref turns mismatched inputs into obscure errors (kallisto's "ill-formed" temp file when no
GTF chromosome is in the FASTA) or an empty index. These checks read both files once,
streaming (gzip is fine), and name the file and what to change.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

from kbagg.errors import KbaggError

BLOCK_BYTES = 16 << 20
GTF_FEATURES = ("exon", "transcript")


def _open(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        try:
            from isal import igzip

            return igzip.open(path, "rb")
        except ImportError:  # pragma: no cover - isal is a dependency
            return gzip.open(path, "rb")
    return open(path, "rb")


def _lines_starting_with(path: Path, prefix: bytes) -> Iterator[bytes]:
    """Lines that start with `prefix`, found by jumping from match to match in large blocks
    (a genome has millions of sequence lines; none of them is split or copied)."""
    pending: bytes | None = None  # a matching line that continues in the next block
    at_line_start = True
    with _open(path) as handle:
        while block := handle.read(BLOCK_BYTES):
            pos = 0
            if pending is not None or not at_line_start:
                newline = block.find(b"\n")
                if newline == -1:
                    if pending is not None:
                        pending += block
                    continue
                if pending is not None:
                    yield pending + block[:newline]
                    pending = None
                pos = newline + 1
            while True:
                if block.startswith(prefix, pos):
                    start = pos
                else:
                    found = block.find(b"\n" + prefix, pos)
                    if found == -1:
                        break
                    start = found + 1
                newline = block.find(b"\n", start)
                if newline == -1:
                    pending = block[start:]
                    break
                yield block[start:newline]
                pos = newline + 1
            at_line_start = block.endswith(b"\n")
        if pending is not None:
            yield pending


def fasta_sequence_names(fasta: str | Path) -> list[str]:
    """The first word of every FASTA header, in file order."""
    fasta = Path(fasta)
    with _open(fasta) as handle:
        head = handle.read(4096).lstrip()
    if not head.startswith(b">"):
        shown = head[:40].decode("utf-8", "replace").splitlines()[0] if head else "(empty)"
        raise KbaggError(
            f"reference.fasta {fasta}: not a FASTA file (its first line is '{shown}', a FASTA "
            "starts with a '>' header line)"
        )
    return [line[1:].split(maxsplit=1)[0].decode() for line in _lines_starting_with(fasta, b">")]


def gtf_sequence_names(gtf: str | Path) -> dict[str, int]:
    """Chromosome name -> number of exon and transcript lines of the GTF."""
    gtf = Path(gtf)
    counts: dict[str, int] = {}
    with _open(gtf) as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.startswith(b"#") or not raw.strip():
                continue
            fields = raw.split(b"\t", 3)
            if len(fields) < 4:
                raise KbaggError(
                    f"reference.gtf {gtf}, line {number}: not a GTF line (GTF has 9 "
                    "tab-separated columns)"
                )
            if fields[2].decode() in GTF_FEATURES:
                name = fields[0].decode()
                counts[name] = counts.get(name, 0) + 1
    if not counts:
        raise KbaggError(
            f"reference.gtf {gtf}: no transcript or exon lines; kb ref builds the transcriptome "
            "from exons (GTF column 3 'exon'), so use a gene annotation GTF"
        )
    return counts


def _listing(names, limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_reference_inputs(fasta: str | Path, gtf: str | Path) -> dict[str, int]:
    """Fail with a clear message unless the GTF's chromosomes are found in the FASTA.

    Returns the number of exon/transcript lines per chromosome of the GTF that the FASTA has.
    A GTF chromosome missing from the FASTA (a genome subset) is fine as long as some match.
    """
    in_fasta = fasta_sequence_names(fasta)
    in_gtf = gtf_sequence_names(gtf)
    present = set(in_fasta)
    shared = {name: n for name, n in in_gtf.items() if name in present}
    if not shared:
        raise KbaggError(
            f"reference: GTF chromosomes {_listing(in_gtf)} are not in the FASTA headers "
            f"{_listing(in_fasta)}; use the same naming in reference.fasta ({fasta}) and "
            f"reference.gtf ({gtf}), e.g. both 'chr1' or both '1'"
        )
    return shared
