"""kb's technology table (`kb --list`), read in this one module.

For each technology kb knows it gives the barcode on-list kb bundles (if any), how many
FASTQ files a lane has, and how long each read must be to hold the barcode and UMI. The
facts come from kb-python's own table (`kb_python.config.TECHNOLOGIES_MAPPING`), so they
follow the installed kb, except where `kb count` takes other files than its table lists
(Smart-seq3: I1, I2, R1, R2). Custom kallisto technology strings are parsed here too.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError

# Plate-based technologies: kb counts them without --filter, and a lane is one cell's FASTQ
# set (kb's batch file) -- except Smart-seq3, whose cells come from the I1/I2 index reads.
PLATE_TECHNOLOGIES = ("BULK", "SMARTSEQ2", "SMARTSEQ3", "STORMSEQ")
# Technologies kb counts as reads, not UMIs (`kb count` turns on --parity checks for these).
PARITY_TECHNOLOGIES = ("BULK", "SMARTSEQ2")
# kb's table lists Smart-seq3 with R1 and R2 only, but `kb count -x SMARTSEQ3` passes its FASTQs
# to `kallisto bus -x SMARTSEQ3`, which takes I1, I2, R1, R2 (the cell barcode is I1 + I2);
# kb_python 0.30.2 tests/fixtures/smartseq3 and kallisto 0.52.0. The UMI sits at R1 bases 11-19.
_FILES_KB_COUNT_TAKES = {"SMARTSEQ3": ("I1", "I2", "R1", "R2")}
_MIN_LENGTHS_KB_COUNT_NEEDS = {"SMARTSEQ3": (0, 0, 19, 0)}
# Technologies counted with a barcode replacement list (`kb count -r`), which kbagg writes
# (`write_replacement`): SPLiT-seq merges each round-1 well's random-hexamer barcode into its
# oligo-dT barcode. kb-python 0.30.2 bundles no such list.
REPLACEMENT_TECHNOLOGIES = ("SPLIT-SEQ",)
# Names kb lists but kallisto 0.52.0 refuses (`kallisto bus -x 10XV3_ULTIMA`: "Unable to create
# technology", and kb 0.30.2 still exits 0 with no matrix): kbagg passes kb's own layout of
# them as a technology string instead (with kb's on-list as -w), which kallisto takes.
_KALLISTO_REFUSES_NAME = ("10XV3_ULTIMA",)
# Technologies whose on-list kbagg writes by barcode part, one column per part (`write_onlist`).
# BDWTA's 27-base barcode is three 9-base parts, and kb's on-list is every combination of 97
# parts (912,673 barcodes). Given 27-mers, `bustools correct` (0.45.1) builds a table of
# 4^14 entries (two roaring bitmaps each) for one barcode set of 27 bases, whatever the list's
# size and even with --nocorrect: 21 GB. Given the parts as three columns, it builds one table of
# 4^5 entries per part (about 0.3 GB for all of kb count). The barcodes it keeps exactly are the
# same (the list is the product of its parts); see docs/technologies.md for the correction.
_ONLIST_BY_PART = ("BDWTA",)


@dataclass(frozen=True)
class Technology:
    """One entry of kb's technology table, or a custom kallisto technology string."""

    name: str  # kb's own spelling, e.g. 10XV3; a custom string as given
    description: str
    onlist: Path | None  # kb's bundled barcode on-list, None when kb builds one from the data
    n_files: int  # FASTQ files per lane that `kb count` takes (2 for R1 + R2)
    min_lengths: tuple[int, ...]  # per file: bases the barcode and UMI need (0: no constraint)
    file_names: tuple[str, ...] = ()  # what each file is (I1, R1, ...), when kb says
    custom: bool = False  # a technology string (`0,0,16:0,16,28:1,0,0`), not a name
    # What `kb count -x` gets instead of the name, for a name kallisto refuses: kb's own
    # layout of it as a technology string. Empty: the name (or string) as the sheet gives it.
    kallisto_x: str = ""
    # Lengths of the barcode's parts when kbagg writes the on-list one column per part
    # (`_ONLIST_BY_PART`); empty: one barcode per line, as kb bundles it.
    onlist_parts: tuple[int, ...] = ()

    @property
    def plate(self) -> bool:
        """Plate-based: one cell per FASTQ set (or per index-read barcode, Smart-seq3), so
        every barcode kb reports is a cell: no knee, no EmptyDrops, no `--filter`."""
        return not self.custom and self.name.upper() in PLATE_TECHNOLOGIES

    @property
    def batch(self) -> bool:
        """Counted from kb's batch file (`cell<TAB>fastq_1[<TAB>fastq_2]` per cell): plate
        technologies without a cell barcode in the reads (all but Smart-seq3)."""
        return self.plate and self.name.upper() != "SMARTSEQ3"

    @property
    def replacement(self) -> bool:
        """Counted with kb's `-r` replacement list, written by `write_replacement`
        (SPLIT-SEQ: a round-1 well's hexamer barcode becomes its oligo-dT barcode)."""
        return not self.custom and self.name.upper() in REPLACEMENT_TECHNOLOGIES

    @property
    def round1_wells(self) -> bool:
        """SPLiT-seq: a barcode's last 8 bases name its round-1 well
        (`splitseq_round1_wells`), the wells a library's samples were loaded into."""
        return not self.custom and self.name.upper() == "SPLIT-SEQ"

    @property
    def allowed_n_files(self) -> tuple[int, ...]:
        """The FASTQ counts per lane kb accepts: single-end (1) or paired (2) for kb's
        `--parity` technologies, else exactly `n_files`."""
        if not self.custom and self.name.upper() in PARITY_TECHNOLOGIES:
            return (1, 2)
        return (self.n_files,)


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
        upper = key.upper()
        file_names = _FILES_KB_COUNT_TAKES.get(upper, ())
        table[upper] = Technology(
            name=tech.name,
            description=tech.description,
            onlist=Path(onlist) if onlist else None,
            n_files=len(file_names) or n_files,
            min_lengths=_MIN_LENGTHS_KB_COUNT_NEEDS.get(upper, tuple(min_lengths)),
            file_names=file_names,
            kallisto_x=_layout_string(chemistry) if upper in _KALLISTO_REFUSES_NAME else "",
            onlist_parts=tuple(d.length for d in chemistry._parsers["cell_barcode"]._definitions)
            if upper in _ONLIST_BY_PART
            else (),
        )
    return table


def _layout_string(chemistry) -> str:
    """kb's barcode, UMI and cDNA positions as a kallisto string (`file,start,stop` each;
    stop 0 = to the end of the read)."""
    return ":".join(
        ",".join(f"{d.index},{d.start},{d.start + d.length if d.length else 0}" for d in defs)
        for defs in (
            chemistry._parsers[part]._definitions for part in ("cell_barcode", "umi", "cdna")
        )
    )


def known_names() -> list[str]:
    return sorted(_table())


def is_custom(name: str) -> bool:
    """A kallisto technology string (it has a colon) rather than a name from `kb --list`."""
    return ":" in name


def parse_custom(text: str) -> Technology:
    """A kallisto technology string, `barcode:UMI:cDNA`, checked as kallisto 0.52.0 checks it.

    Each part is a comma-separated list of `file,start,stop` triples (several triples are
    concatenated: `0,0,8,1,0,8`); `stop` 0 means the end of the read. kb-python 0.30.2 hands
    the string to `kallisto bus -x` as is, after taking off a `%strand%parity` suffix.
    kallisto rejects a string without exactly two colons, an empty part, a count of values
    that is not a multiple of 3, a value that is not an integer, a negative start, and a stop
    before its start; each gives KbaggError here, with kallisto's reason.

    Parameters
    ----------
    text
        The string, e.g. ``0,0,16:0,16,28:1,0,0``.

    Returns
    -------
    Technology
        `n_files` is one more than the highest file index; `min_lengths` per file is the
        furthest barcode or UMI stop (cDNA parts need no fixed length).
    """
    where = f"technology '{text}'"
    body, *suffix = text.strip().split("%")
    for extra in suffix:
        if extra.upper() not in ("UNSTRANDED", "FORWARD", "REVERSE", "PAIRED", "SINGLE"):
            raise KbaggError(
                f"{where}: suffix '%{extra}' is none of kb's %unstranded, %forward, %reverse, "
                "%paired, %single"
            )
    parts = body.split(":")
    if len(parts) != 3:
        raise KbaggError(
            f"{where}: kallisto needs exactly two colons (barcode:UMI:cDNA), found "
            f"{len(parts) - 1}; see `kb --list` for the names and the kallisto manual for strings"
        )
    triples: dict[str, list[tuple[int, int, int]]] = {}
    for label, part in zip(("barcode", "UMI", "cDNA"), parts, strict=True):
        if not part:
            raise KbaggError(f"{where}: the {label} part is empty (kallisto rejects it)")
        try:
            values = [int(v) for v in part.split(",")]
        except ValueError:
            raise KbaggError(
                f"{where}: the {label} part '{part}' is not comma-separated integers "
                "(file,start,stop triples)"
            ) from None
        if len(values) % 3:
            raise KbaggError(
                f"{where}: the {label} part '{part}' has {len(values)} values; kallisto needs "
                "file,start,stop triples (a multiple of 3)"
            )
        found = list(zip(values[0::3], values[1::3], values[2::3], strict=True))
        for file, start, stop in found:
            if file < 0 or start < 0 or stop < 0:
                raise KbaggError(
                    f"{where}: the {label} part '{part}' has a negative file, start or stop "
                    f"({file},{start},{stop})"
                )
            if stop and stop <= start:
                raise KbaggError(
                    f"{where}: the {label} part '{part}': stop {stop} is not after start "
                    f"{start} (stop 0 means the end of the read)"
                )
        triples[label] = found
    n_files = 1 + max(file for found in triples.values() for file, _, _ in found)
    min_lengths = [0] * n_files
    for label in ("barcode", "UMI"):
        for file, start, stop in triples[label]:
            min_lengths[file] = max(min_lengths[file], stop or start + 1)
    return Technology(
        name=text.strip(),
        description="custom technology string",
        onlist=None,
        n_files=n_files,
        min_lengths=tuple(min_lengths),
        custom=True,
    )


def technology(name: str) -> Technology:
    """The table entry for `name` (any case), or the parsed custom string; KbaggError naming
    the known ones if `name` is neither."""
    if is_custom(name):
        return parse_custom(name)
    found = _table().get(name.upper())
    if found is None:
        raise KbaggError(
            f"technology '{name}' is not known to kb; `kb --list` shows the names "
            f"({', '.join(known_names())}), or give a kallisto technology string "
            "(barcode:UMI:cDNA, e.g. 0,0,16:0,16,28:1,0,0)"
        )
    return found


def check_n_files(name: str, n_files: int, where: str) -> Technology:
    """The technology `name`, after checking that a lane of `n_files` FASTQs suits it.

    Parameters
    ----------
    name
        A name from `kb --list` or a custom technology string.
    n_files
        The FASTQ files a lane of the sample sheet gives (fastq_1 ... fastq_N).
    where
        The sample sheet, line, sample and lane, for the message.
    """
    found = technology(name)
    allowed = found.allowed_n_files
    if n_files not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        columns = ", ".join(f"fastq_{i}" for i in range(1, max(allowed) + 1))
        what = f" ({', '.join(found.file_names)})" if found.file_names else ""
        raise KbaggError(
            f"{where}: technology '{name}' takes {expected} FASTQ files per lane{what}, "
            f"given {n_files}; fill columns {columns}"
        )
    return found


def write_onlist(name: str, output: str | Path) -> bool:
    """Decompress kb's on-list for technology `name` to `output` once, atomically.

    Returns False (and writes an empty file) when kb has no on-list for the technology, in
    which case `kb count` builds one from the data itself. For a technology of
    `_ONLIST_BY_PART` (BDWTA) the file holds the barcode's parts, one column per part
    (`onlist_by_part`), which bustools corrects in bounded memory.
    """
    tech = technology(name)
    source = tech.onlist
    with atomic_output(output) as tmp:
        if source is None:
            tmp.write_text("")
        elif tech.onlist_parts:
            tmp.write_text(onlist_by_part(name, source))
        else:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    return source is not None


def onlist_by_part(name: str, source: str | Path) -> str:
    """The on-list `source` (one whole barcode a line) as `bustools correct` barcode sets: one
    column per part of technology `name`'s barcode, each column the part's distinct sequences.

    bustools keeps a barcode when every part is in its column, so this equals the whole list
    only when the list is every combination of its parts; KbaggError otherwise.

    Parameters
    ----------
    name
        A technology with `onlist_parts` (BDWTA).
    source
        The on-list, plain or gzipped.

    Returns
    -------
    str
        The lines, space-separated parts, ending in a newline.
    """
    lengths = technology(name).onlist_parts
    source = Path(source)
    opener = gzip.open if source.suffix == ".gz" else open
    parts: list[dict[str, None]] = [{} for _ in lengths]
    n = 0
    with opener(source, "rt") as handle:
        for line in handle:
            barcode = line.strip()
            if not barcode:
                continue
            if len(barcode) != sum(lengths):
                raise KbaggError(
                    f"on-list {source}: barcode '{barcode}' is not {sum(lengths)} bases "
                    f"(technology '{name}', parts {lengths})"
                )
            n += 1
            start = 0
            for seen, length in zip(parts, lengths, strict=True):
                seen[barcode[start : start + length]] = None
                start += length
    combinations = 1
    for seen in parts:
        combinations *= len(seen)
    if combinations != n:
        raise KbaggError(
            f"on-list {source}: its {n} barcodes are not every combination of their "
            f"parts ({' x '.join(str(len(s)) for s in parts)} = {combinations}); technology "
            f"'{name}' needs such a list"
        )
    columns = [list(seen) for seen in parts]
    rows = max(len(c) for c in columns)
    return "".join(
        " ".join(c[i] if i < len(c) else "-" for c in columns) + "\n" for i in range(rows)
    )


SPLITSEQ_ROUND1_WELLS = 96  # round-1 wells: oligo-dT rows 1-96, random hexamer rows 97-192


def splitseq_round1_pairs() -> list[tuple[str, str]]:
    """Round-1 barcode pairs of SPLiT-seq, well by well, from kb's bundled on-list.

    Column 3 of kb's SPLiT-seq on-list holds 96 oligo-dT barcodes (rows 1-96), then the 96
    random-hexamer barcodes of the same wells (rows 97-192): oligo-dT row i pairs with
    hexamer row 96 + i. This is the one place that fact lives.

    Returns
    -------
    list of tuple of str
        ``(oligo_dt, hexamer)`` for wells 1-96 in order.
    """
    source = technology("SPLIT-SEQ").onlist
    if source is None:
        raise KbaggError("technology 'SPLIT-SEQ': kb bundles no barcode on-list")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt") as handle:
        rows = [line.split() for line in handle if line.strip()]
    round1 = [r[2] for r in rows if len(r) > 2 and r[2] != "-"]
    if len(round1) < 2 * SPLITSEQ_ROUND1_WELLS:
        raise KbaggError(f"{source}: fewer than the 96 + 96 SPLiT-seq round-1 barcodes")
    n = SPLITSEQ_ROUND1_WELLS
    return list(zip(round1[:n], round1[n : 2 * n], strict=True))


def write_splitseq_replacement(output: str | Path) -> None:
    """Write kb's replacement list for SPLiT-seq (hexamer -> oligo-dT of the same well).

    Parameters
    ----------
    output
        Path of the list ``kb count -r`` reads: ``<hexamer>\t*<oligo_dt>`` per well, the
        ``*`` telling bustools to replace the barcode's last (round-1) bases.
    """
    with atomic_output(output) as tmp:
        tmp.write_text("".join(f"{h}\t*{d}\n" for d, h in splitseq_round1_pairs()))


def read_splitseq_replacement(path: str | Path) -> list[tuple[str, str]]:
    """The round-1 pairs, well by well, from a list `write_splitseq_replacement` wrote: what
    `splitseq_round1_pairs` returns, read without kb (the cells job's environment has none).

    Parameters
    ----------
    path
        The replacement list (``<hexamer>\t*<oligo_dt>`` per well, wells in order).

    Returns
    -------
    list of (str, str)
        (oligo-dT barcode, random-hexamer barcode) of wells 1-96.
    """
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].startswith("*"):
            raise KbaggError(f"{path}, line {number}: not '<hexamer>\\t*<oligo-dT>'")
        pairs.append((parts[1][1:], parts[0]))
    if len(pairs) != SPLITSEQ_ROUND1_WELLS:
        raise KbaggError(f"{path}: {len(pairs)} wells, SPLiT-seq has {SPLITSEQ_ROUND1_WELLS}")
    return pairs


def write_replacement(name: str, output: str | Path) -> None:
    """Write the replacement list `kb count -r` takes for technology `name`, atomically.

    Parameters
    ----------
    name
        A technology with `Technology.replacement` (SPLIT-SEQ).
    output
        Path of the list.
    """
    if not technology(name).replacement:
        raise KbaggError(f"technology '{name}': kbagg has no replacement list for it")
    write_splitseq_replacement(output)


def splitseq_round1_wells(barcodes, pairs: list[tuple[str, str]] | None = None) -> list[int]:
    """The round-1 well (1-96, in kb's on-list order) of each SPLiT-seq barcode.

    A barcode is round 3 + round 2 + round 1 (kb's on-list columns 1, 2, 3; 8 bases each),
    so its last 8 bases are its round-1 barcode: the oligo-dT barcode of well i, or, when kb
    counted without the replacement list, the random-hexamer barcode of the same well.

    Parameters
    ----------
    barcodes
        Cell barcodes as kb reports them (24 bases).
    pairs
        The round-1 pairs (`read_splitseq_replacement`); None: `splitseq_round1_pairs`.

    Returns
    -------
    list of int
        The well of each barcode; KbaggError naming the first barcode whose last 8 bases are
        no round-1 barcode of kb's on-list.
    """
    well = {}
    pairs = splitseq_round1_pairs() if pairs is None else pairs
    for i, (oligo_dt, hexamer) in enumerate(pairs, start=1):
        well[oligo_dt] = well[hexamer] = i
    wells = []
    for barcode in barcodes:
        found = well.get(str(barcode)[-8:])
        if found is None:
            raise KbaggError(
                f"barcode '{barcode}': its last 8 bases are no SPLiT-seq round-1 barcode of "
                "kb's on-list (column 3)"
            )
        wells.append(found)
    return wells


def onlist_barcodes(name: str, limit: int = 200_000) -> list[str]:
    """The first `limit` barcodes of kb's bundled on-list for technology `name`."""
    source = technology(name).onlist
    if source is None:
        raise KbaggError(f"technology '{name}': kb bundles no barcode on-list")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt") as handle:
        return [line.strip() for _, line in zip(range(limit), handle, strict=False)]
