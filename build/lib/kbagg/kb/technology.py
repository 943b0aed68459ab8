"""kb's technology table (`kb --list`), read in this one module.

For each technology kb knows it gives the barcode on-list kb bundles (if any), how many
FASTQ files a lane has, and how long each read must be to hold the barcode and UMI. The
facts come from kb-python's own table (`kb_python.config.TECHNOLOGIES_MAPPING`), so they
follow the installed kb.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError


@dataclass(frozen=True)
class Technology:
    """One entry of kb's technology table."""

    name: str  # kb's own spelling, e.g. 10XV3
    description: str
    onlist: Path | None  # kb's bundled barcode on-list, None when kb builds one from the data
    n_files: int  # FASTQ files per lane (2 for R1 + R2)
    min_lengths: tuple[int, ...]  # per file: bases the barcode and UMI need (0: no constraint)


@cache
def _table() -> dict[str, Technology]:
    from kb_python.config import TECHNOLOGIES_MAPPING

    table = {}
    for key, tech in TECHNOLOGIES_MAPPING.items():
        chemistry = tech.chemistry
        definitions = [
            (d.index, d.start, d.length)
            for parser in chemistry._parsers.values()
            for d in parser._definitions
        ]
        n_files = 1 + max(index for index, _, _ in definitions)
        min_lengths = [0] * n_files
        for name, parser in chemistry._parsers.items():
            if name == "cdna":
                continue  # cDNA runs to the end of its read: no fixed length
            for d in parser._definitions:
                min_lengths[d.index] = max(min_lengths[d.index], d.start + d.length)
        onlist = chemistry.whitelist_path if chemistry.has_whitelist else None
        table[key.upper()] = Technology(
            name=tech.name,
            description=tech.description,
            onlist=Path(onlist) if onlist else None,
            n_files=n_files,
            min_lengths=tuple(min_lengths),
        )
    return table


def known_names() -> list[str]:
    return sorted(_table())


def technology(name: str) -> Technology:
    """The table entry for `name` (any case); KbaggError naming the known ones if unknown."""
    found = _table().get(name.upper())
    if found is None:
        raise KbaggError(
            f"technology '{name}' is not known to kb; `kb --list` shows the names "
            f"({', '.join(known_names())})"
        )
    return found


def paired_technology(name: str) -> Technology:
    """A technology whose lanes are one R1 + R2 pair, as the sample sheet describes them."""
    found = technology(name)
    if found.n_files != 2:
        raise KbaggError(
            f"technology '{name}' needs {found.n_files} FASTQ files per lane, but the sample "
            "sheet has two (fastq_1, fastq_2); kbagg supports technologies with two"
        )
    return found


def write_onlist(name: str, output: str | Path) -> bool:
    """Decompress kb's on-list for technology `name` to `output` once, atomically.

    Returns False (and writes an empty file) when kb has no on-list for the technology, in
    which case `kb count` builds one from the data itself.
    """
    source = technology(name).onlist
    with atomic_output(output) as tmp:
        if source is None:
            tmp.write_text("")
        else:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    return source is not None


def onlist_barcodes(name: str, limit: int = 200_000) -> list[str]:
    """The first `limit` barcodes of kb's bundled on-list for technology `name`."""
    source = technology(name).onlist
    if source is None:
        raise KbaggError(f"technology '{name}': kb bundles no barcode on-list")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt") as handle:
        return [line.strip() for _, line in zip(range(limit), handle, strict=False)]
