"""Reads in any of kb's read layouts, with the counts `kb count` must give for them.

`simulate_layout` writes, for one sample, the FASTQ files of every lane in the order
`kb count` takes them, for a named technology of kb's table (10XV1, INDROPSV3, 10XV3_ULTIMA,
SMARTSEQ3, SPLIT-SEQ, BDWTA, 10XV2, ...) or a kallisto technology string such as
``0,0,16:0,16,28:1,0,0``, and returns the true cells x genes matrix beside them.

Where the layout facts come from:

- barcode, UMI and cDNA positions: kb-python's technology table (`kb --list`;
  `kb_python.config.TECHNOLOGIES_MAPPING[name].chemistry`, kb-python 0.30.2), read here;
  technology strings follow kallisto's syntax ``barcode:umi:cdna``, each a list of
  ``file,start,stop`` triples, stop 0 meaning "to the end of the read"
  (https://pachterlab.github.io/kallisto/manual, "kallisto bus");
- Smart-seq3, which kb's table lists with two files: kallisto 0.52's own definition
  (src/main.cpp, ``opt.technology == "SMARTSEQ3"``): four files I1, I2, R1, R2; barcode
  I1 + I2 whole; UMI reads start R1 with the tag ``ATTGCGCAATG`` then an 8 bp UMI, and
  their cDNA starts at R1 base 22 (3 bases of the TSO's GGG between); a read whose R1 does
  not start with the tag (Hamming distance > 1, src/ProcessReads.cpp) is an internal read,
  whose whole R1 and R2 are cDNA. kb then counts UMIs of UMI reads and reads of internal
  reads (kb_python/count.py, ``write_smartseq3_capture``: internal reads carry the all-T UMI);
- SPLiT-seq's round-1 barcodes: the third column of kb's bundled on-list
  (ngs_tools ``splitseq_version2_whitelist.txt.gz``) holds 96 oligo-dT barcodes (rows 1-96)
  then 96 random-hexamer barcodes (rows 97-192), well by well: Parse read names pair
  oligo-dT barcode 1 ``CATTCCTA`` with random-hexamer barcode 97 ``CATCATCC`` in well 1
  (examples in divonlan/genozip's read-name flavours). kb merges a cell's two round-1
  barcodes with a replacement list (`kb count -r`, bustools ``correct --replace``; the
  ``*`` prefix replaces the barcode's last bases, which is round 1: kallisto reads the
  barcode parts in the order R2 10-18, 48-56, 78-86). The linkers between the parts are
  SPLiT-seq's (``GTGGCCGATGTTTCGCATCGGCGTACGACT``, ``ATCCACGTGCTTGAGACTGTGG``);
- BD Rhapsody WTA: kb's on-list lists every CLS1 + CLS2 + CLS3 combination (97^3); the
  V1 bead linkers between the 9 bp cell labels are ``ACTGGCCTGCGA`` and
  ``GGTAGCGGTGACA`` (BD Rhapsody bead oligo, as used by STARsolo setups for BD);
- 10x v3 on Ultima: R1 starts with 22 bases of 10x's read-1 primer
  (``CTACACGACGCTCTTCCGATCT``) before the barcode, as kb's table's offset 22 says.

Exact by construction: every cDNA read is cut from a window of a transcript whose every
31-mer (kb ref's k) occurs in the transcripts of that one gene only, on either strand, so
kallisto assigns it to exactly that gene; UMIs are unique within a cell (within the merged
cell for SPLiT-seq); reads carry no sequencing errors. The truth is then exactly what
`kb count` reports: UMIs per cell and gene (Smart-seq3: also internal reads per cell and
gene, in layer ``internal``).

The numbers of molecules per cell and reads per molecule are small test-sized draws
(uniform 20-40 molecules, 1-3 reads each), not a model of any real library: this simulator
checks read layouts, not biology.
"""

from __future__ import annotations

import gzip
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError
from kbagg.kb.technology import (
    SPLITSEQ_ROUND1_WELLS,
    onlist_barcodes,
    splitseq_round1_pairs,
    write_splitseq_replacement,
)
from kbagg.kb.technology import technology as kb_technology
from kbagg.simulate.reads import fastq_record, random_seq, revcomp, write_gz

KMER_LENGTH = 31  # kb ref's default k (kallisto index -k 31)
CDNA_LENGTH = 90  # bases of cDNA per read (the demo's 10x read 2 length)
SMARTSEQ3_TAG = b"ATTGCGCAATG"  # kallisto's default Smart-seq3 UMI tag (src/main.cpp)
SMARTSEQ3_UMI_LENGTH = 8
SMARTSEQ3_INDEX_LENGTH = 10  # I1 and I2 of kb-python's Smart-seq3 test fixture are 10 bp
SMARTSEQ3_CDNA_START = 22  # tag 11 + UMI 8 + GGG 3: kallisto's BUSOptionSubstr(2,22,0)
SPLITSEQ_LINKERS = (b"GTGGCCGATGTTTCGCATCGGCGTACGACT", b"ATCCACGTGCTTGAGACTGTGG")
BDWTA_LINKERS = (b"ACTGGCCTGCGA", b"GGTAGCGGTGACA")
ULTIMA_ADAPTER = b"CTACACGACGCTCTTCCGATCT"
ONLIST_LIMIT = 200_000  # barcodes are drawn from the first this many of kb's on-list
FRAGMENT_LENGTH = (200, 300)  # Smart-seq3 paired fragments, bases (uniform)


@dataclass(frozen=True)
class Part:
    """Bases ``start`` to ``stop`` (0-based, stop exclusive; None: to the read's end) of
    file ``file`` of a lane."""

    file: int
    start: int
    stop: int | None


@dataclass(frozen=True)
class Layout:
    """Where a technology puts barcode, UMI and cDNA in a lane's files.

    Built by `layout`; ``kb_name`` is kb's own spelling, or the technology string."""

    kb_name: str
    n_files: int
    barcode: tuple[Part, ...]
    umi: tuple[Part, ...]
    cdna: tuple[Part, ...]
    onlist: Path | None  # kb's bundled on-list, None when kb has none
    labels: tuple[str, ...]  # file name label per file, in kb's order

    @property
    def barcode_length(self) -> int:
        return sum(p.stop - p.start for p in self.barcode)

    @property
    def umi_length(self) -> int:
        return sum(p.stop - p.start for p in self.umi)


TECHNOLOGY_STRING = re.compile(r"^-?[0-9,\-]+:[0-9,\-]+:[0-9,\-]+$")


def _parts_from_string(text: str, technology: str) -> tuple[Part, ...]:
    """kallisto's ``file,start,stop[,file,start,stop...]`` (stop 0: to the end)."""
    numbers = [int(x) for x in text.split(",")]
    if len(numbers) % 3 or any(n < -1 for n in numbers):
        raise KbaggError(
            f"technology '{technology}': '{text}' is not a list of file,start,stop triples"
        )
    parts = []
    for f, start, stop in zip(numbers[::3], numbers[1::3], numbers[2::3], strict=True):
        if f == -1:
            continue  # kallisto: no such part
        if stop != 0 and stop <= start:
            raise KbaggError(f"technology '{technology}': part {f},{start},{stop} is empty")
        parts.append(Part(f, start, None if stop == 0 else stop))
    return tuple(parts)


def layout(technology: str) -> Layout:
    """The read layout of a technology of kb's table, or of a kallisto technology string.

    Parameters
    ----------
    technology
        A name of kb's table (`kb --list`, any case) or a technology string
        ``barcode:umi:cdna`` such as ``0,0,16:0,16,28:1,0,0``.

    Returns
    -------
    The files per lane and the positions of barcode, UMI and cDNA in them.
    """
    if TECHNOLOGY_STRING.match(technology):
        bc, umi, cdna = (_parts_from_string(t, technology) for t in technology.split(":"))
        if not bc or not umi or not cdna:
            raise KbaggError(
                f"technology '{technology}': the simulator needs a barcode, a UMI and cDNA"
            )
        if any(p.stop is None for p in bc + umi):
            raise KbaggError(f"technology '{technology}': barcode and UMI need a fixed stop")
        n_files = 1 + max(p.file for p in bc + umi + cdna)
        return Layout(technology, n_files, bc, umi, cdna, None, _labels(technology, n_files))
    entry = kb_technology(technology)  # KbaggError naming the known ones if unknown
    name = entry.name.upper()
    if name == "SMARTSEQ3":
        # kallisto's own definition (src/main.cpp), not kb's two-file table entry.
        return Layout(
            entry.name,
            4,
            barcode=(Part(0, 0, SMARTSEQ3_INDEX_LENGTH), Part(1, 0, SMARTSEQ3_INDEX_LENGTH)),
            umi=(Part(2, len(SMARTSEQ3_TAG), len(SMARTSEQ3_TAG) + SMARTSEQ3_UMI_LENGTH),),
            cdna=(Part(2, SMARTSEQ3_CDNA_START, None), Part(3, 0, None)),
            onlist=None,
            labels=("I1", "I2", "R1", "R2"),
        )
    from kb_python.config import TECHNOLOGIES_MAPPING

    parsers = TECHNOLOGIES_MAPPING[entry.name].chemistry._parsers

    def parts(role: str) -> tuple[Part, ...]:
        if role not in parsers:
            return ()
        return tuple(
            Part(d.index, d.start or 0, None if d.length is None else d.start + d.length)
            for d in parsers[role]._definitions
        )

    bc, umi, cdna = parts("cell_barcode"), parts("umi"), parts("cdna")
    if not bc or not umi:
        raise KbaggError(
            f"technology '{technology}': the layout simulator writes barcoded UMI reads; "
            f"kb's table gives {entry.name} no {'barcode' if not bc else 'UMI'}"
        )
    return Layout(
        entry.name, entry.n_files, bc, umi, cdna, entry.onlist, _labels(name, entry.n_files)
    )


def _labels(name: str, n_files: int) -> tuple[str, ...]:
    # Files are numbered in kb's order, which is not always the sequencer's read numbering.
    return tuple(f"R{i + 1}" for i in range(n_files))


# --- reference ---------------------------------------------------------------------------
@dataclass
class Transcriptome:
    """Transcript sequences of a genome FASTA + GTF, as `kb ref` builds its index from."""

    sequences: dict[str, bytes]  # transcript id -> sense-strand sequence
    gene_of: dict[str, str]  # transcript id -> gene id
    gene_names: dict[str, str]  # gene id -> gene name (GTF order)
    unique_windows: dict[str, np.ndarray] = field(default_factory=dict)  # see _windows


def _open_text(path: Path):
    path = Path(path)
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _read_fasta(path: Path) -> dict[str, bytes]:
    seqs: dict[str, list[str]] = {}
    name = None
    with _open_text(path) as handle:
        for line in handle:
            if line.startswith(">"):
                name = line[1:].split()[0]
                seqs[name] = []
            elif name is not None:
                seqs[name].append(line.strip())
    return {k: "".join(v).upper().encode() for k, v in seqs.items()}


_ATTRIBUTE = re.compile(r'(\S+) "([^"]*)"')


def load_transcriptome(fasta: str | Path, gtf: str | Path) -> Transcriptome:
    """Spliced transcripts of `gtf`'s exons on `fasta`'s sequences.

    Parameters
    ----------
    fasta
        Genome FASTA (plain or gzipped), as given to `kb ref`.
    gtf
        Its GTF (plain or gzipped); exons are joined per ``transcript_id`` in genome
        order and reverse-complemented on the minus strand.

    Returns
    -------
    The transcript sequences, their genes, and the gene names in GTF order.
    """
    genome = _read_fasta(Path(fasta))
    exons: dict[str, list[tuple[int, int]]] = defaultdict(list)
    where: dict[str, tuple[str, str]] = {}
    gene_of: dict[str, str] = {}
    gene_names: dict[str, str] = {}
    with _open_text(Path(gtf)) as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 9:
                continue
            attrs = dict(_ATTRIBUTE.findall(cols[8]))
            gene = attrs.get("gene_id")
            if gene is None:
                continue
            gene_names.setdefault(gene, attrs.get("gene_name", gene))
            if cols[2] != "exon" or "transcript_id" not in attrs:
                continue
            tx = attrs["transcript_id"]
            exons[tx].append((int(cols[3]), int(cols[4])))
            where[tx] = (cols[0], cols[6])
            gene_of[tx] = gene
    sequences = {}
    for tx, spans in exons.items():
        chrom, strand = where[tx]
        if chrom not in genome:
            raise KbaggError(f"{gtf}: transcript {tx} lies on '{chrom}', absent from {fasta}")
        seq = b"".join(genome[chrom][s - 1 : e] for s, e in sorted(spans))
        sequences[tx] = revcomp(seq) if strand == "-" else seq
    transcriptome = Transcriptome(sequences, gene_of, gene_names)
    transcriptome.unique_windows = _windows(transcriptome)
    return transcriptome


def _canonical(kmer: bytes) -> bytes:
    rc = revcomp(kmer)
    return min(kmer, rc)


def _windows(tx: Transcriptome) -> dict[str, np.ndarray]:
    """Per transcript, a boolean per position: the 31-mer starting there (either strand)
    occurs in transcripts of this transcript's gene only, and holds only A, C, G, T."""
    owner: dict[bytes, str | None] = {}
    for name, seq in tx.sequences.items():
        gene = tx.gene_of[name]
        for i in range(len(seq) - KMER_LENGTH + 1):
            kmer = _canonical(seq[i : i + KMER_LENGTH])
            if owner.setdefault(kmer, gene) != gene:
                owner[kmer] = None
    acgt = re.compile(rb"^[ACGT]+$")
    out = {}
    for name, seq in tx.sequences.items():
        gene = tx.gene_of[name]
        n = max(len(seq) - KMER_LENGTH + 1, 0)
        ok = np.zeros(n, dtype=bool)
        for i in range(n):
            kmer = seq[i : i + KMER_LENGTH]
            ok[i] = owner[_canonical(kmer)] == gene and bool(acgt.match(kmer))
        out[name] = ok
    return out


def _window_starts(ok: np.ndarray, length: int) -> np.ndarray:
    """Starts s where every 31-mer of [s, s + length) is gene-unique."""
    n_kmers = length - KMER_LENGTH + 1
    if len(ok) < n_kmers:
        return np.zeros(0, dtype=np.int64)
    bad = np.concatenate([[0], np.cumsum(~ok)])
    starts = np.arange(len(ok) - n_kmers + 1)
    return starts[bad[starts + n_kmers] - bad[starts] == 0]


# --- barcodes ----------------------------------------------------------------------------
def _hamming_ok(candidate: str, chosen: list[str], distance: int = 3) -> bool:
    return all(sum(a != b for a, b in zip(candidate, c, strict=True)) >= distance for c in chosen)


def _random_barcodes(rng: np.random.Generator, length: int, n: int) -> list[str]:
    """n barcodes at Hamming distance >= 3 from each other (bustools corrects one mismatch)."""
    chosen: list[str] = []
    while len(chosen) < n:
        candidate = random_seq(rng, length).decode()
        if _hamming_ok(candidate, chosen):
            chosen.append(candidate)
    return chosen


def _onlist_barcodes(rng: np.random.Generator, lay: Layout, n: int) -> list[str]:
    """n barcodes of kb's on-list, distinct in every part, at Hamming distance >= 3."""
    pool = _onlist(lay.kb_name)
    lengths = [p.stop - p.start for p in lay.barcode]
    chosen: list[str] = []
    parts_seen: list[set[str]] = [set() for _ in lengths]
    for idx in rng.permutation(len(pool)):
        candidate = pool[idx]
        if len(candidate) != sum(lengths) or not re.fullmatch("[ACGT]+", candidate):
            continue
        pieces = _split(candidate, lengths)
        if any(p in seen for p, seen in zip(pieces, parts_seen, strict=True)):
            continue
        if _hamming_ok(candidate, chosen):
            chosen.append(candidate)
            for p, seen in zip(pieces, parts_seen, strict=True):
                seen.add(p)
            if len(chosen) == n:
                return chosen
    raise KbaggError(f"technology '{lay.kb_name}': kb's on-list has fewer than {n} usable barcodes")


@cache
def _onlist(name: str) -> list[str]:
    """The first ONLIST_LIMIT barcodes of kb's on-list (read once per process)."""
    return onlist_barcodes(name, limit=ONLIST_LIMIT)


def _split(barcode: str, lengths: list[int]) -> list[str]:
    out, at = [], 0
    for n in lengths:
        out.append(barcode[at : at + n])
        at += n
    return out


def _splitseq_barcodes(
    rng: np.random.Generator, n: int
) -> tuple[list[str], dict[str, str], list[int]]:
    """n SPLiT-seq cells (round 3 + round 2 + oligo-dT round 1, kb's on-list columns in
    kallisto's part order), the random-hexamer round-1 barcode of each oligo-dT one, and
    each cell's round-1 well (1-96)."""
    source = kb_technology("SPLIT-SEQ").onlist
    with gzip.open(source, "rt") as handle:
        rows = [line.split() for line in handle if line.strip()]
    columns = [[r[c] for r in rows if r[c] != "-"] for c in range(2)]
    pairs = splitseq_round1_pairs()
    oligo_dt = [d for d, _ in pairs]
    if n > len(columns[0]):
        raise KbaggError(f"{source}: fewer than {n} round-3 barcodes")
    picks = [rng.choice(len(columns[0]), n, replace=False) for _ in range(2)]
    wells = rng.choice(SPLITSEQ_ROUND1_WELLS, n, replace=False)
    cells = [
        columns[0][picks[0][i]] + columns[1][picks[1][i]] + oligo_dt[wells[i]] for i in range(n)
    ]
    return cells, dict(pairs), [int(w) + 1 for w in wells]


# --- reads -------------------------------------------------------------------------------
@dataclass
class SimulatedLayout:
    """What `simulate_layout` wrote.

    Attributes
    ----------
    truth
        Cells x genes: ``X`` the UMI counts `kb count` must report (obs names: barcodes as kb
        reports them; var: every gene of the GTF, ``gene_name`` column). Smart-seq3: layer
        ``internal``, the internal (non-UMI) read pairs per cell and gene. SPLiT-seq: obs
        ``round1_well``, each cell's round-1 well (1-96, kb's on-list order).
    lanes
        Per lane, its FASTQ files in the order `kb count` takes them.
    technology
        kb's spelling of the technology, or the technology string.
    onlist
        ``cell_barcodes`` when kb bundles no on-list for the technology (give it as `-w`);
        None when kb has its own.
    replacement
        SPLiT-seq: the replacement list merging random-hexamer into oligo-dT round-1
        barcodes (give it as `-r`); None otherwise.
    """

    truth: ad.AnnData
    lanes: list[list[Path]]
    technology: str
    onlist: Path | None = None
    replacement: Path | None = None
    cell_barcodes: Path | None = None  # the cells' barcodes, one a line (truth's obs names)

    @property
    def fastqs(self) -> list[Path]:
        """Every lane's files, lane after lane: the FASTQ arguments of `kb count`."""
        return [path for lane in self.lanes for path in lane]


def _filler(rng: np.random.Generator, n: int) -> bytes:
    return random_seq(rng, n) if n > 0 else b""


def _place(files: list[bytearray], parts: tuple[Part, ...], value: bytes) -> None:
    at = 0
    for p in parts:
        n = p.stop - p.start
        files[p.file][p.start : p.stop] = value[at : at + n]
        at += n


def _fixed_bases(lay: Layout, lengths: list[int]) -> list[bytearray]:
    """Non-barcode, non-UMI bases that are fixed for a technology: its linkers/adapters."""
    files = [bytearray(b"N" * n) for n in lengths]
    name = lay.kb_name.upper()
    if name == "SPLIT-SEQ":
        files[1][18:48], files[1][56:78] = SPLITSEQ_LINKERS
    elif name == "BDWTA":
        files[0][9:21], files[0][30:43] = BDWTA_LINKERS
    elif name == "10XV3_ULTIMA":
        files[0][0:22] = ULTIMA_ADAPTER
    return files


def _file_lengths(lay: Layout) -> list[int]:
    """Each file's read length: up to its last barcode/UMI base, plus CDNA_LENGTH of cDNA
    for a file that holds cDNA to its end."""
    lengths = [0] * lay.n_files
    for p in lay.barcode + lay.umi:
        lengths[p.file] = max(lengths[p.file], p.stop)
    for p in lay.cdna:
        end = p.start + CDNA_LENGTH if p.stop is None else p.stop
        lengths[p.file] = max(lengths[p.file], end)
    return lengths


def _draw_umis(rng: np.random.Generator, length: int, n: int) -> list[bytes]:
    """n distinct UMIs, none a homopolymer (Smart-seq3's internal reads use all-T)."""
    umis: set[bytes] = set()
    while len(umis) < n:
        umi = random_seq(rng, length)
        if len(set(umi)) > 1:
            umis.add(umi)
    return sorted(umis)


def simulate_layout(
    technology: str,
    reference: Transcriptome | tuple[str | Path, str | Path],
    out_dir: str | Path,
    n_cells: int = 4,
    seed: int = 0,
    *,
    n_lanes: int = 1,
    sample: str = "sim",
    molecules_per_cell: tuple[int, int] = (20, 40),
    reads_per_molecule: tuple[int, int] = (1, 3),
) -> SimulatedLayout:
    """Write one sample's FASTQs in `technology`'s layout, and the counts kb must give.

    Parameters
    ----------
    technology
        A name of kb's table with barcode and UMI (10XV1, 10XV2, 10XV3, 10XV3_ULTIMA,
        INDROPSV3, SMARTSEQ3, SPLIT-SEQ, BDWTA, ...) or a kallisto technology string
        ``barcode:umi:cdna`` (e.g. ``0,0,16:0,16,28:1,0,0``).
    reference
        The transcriptome reads are cut from: a `Transcriptome` or a ``(fasta, gtf)`` pair,
        the same files `kb ref` indexes.
    out_dir
        Folder for ``fastq/<sample>_S1_L<lane>_<label>_001.fastq.gz`` (labels R1..Rn in kb's
        file order; I1, I2, R1, R2 for Smart-seq3) and, for SPLiT-seq,
        ``replacement.txt``; always ``cell_barcodes.txt``.
    n_cells
        Number of cells.
    seed
        Seed of the random generator; the same seed writes the same bytes.
    n_lanes
        Lanes; each read goes to a random lane.
    sample
        Sample name in file and read names.
    molecules_per_cell
        Inclusive range of molecules (UMIs) per cell, drawn uniformly.
    reads_per_molecule
        Inclusive range of reads per molecule (PCR duplicates), drawn uniformly.

    Returns
    -------
    The truth, the lanes' files in kb's order, and the on-list/replacement list to pass.
    """
    out_dir = Path(out_dir)
    lay = layout(technology)
    tx = reference if isinstance(reference, Transcriptome) else load_transcriptome(*reference)
    rng = np.random.default_rng(seed)
    name = lay.kb_name.upper()
    smartseq3 = name == "SMARTSEQ3"
    splitseq = name == "SPLIT-SEQ"

    # Transcripts holding at least one gene-unique window of a read's cDNA length.
    read_len = CDNA_LENGTH
    candidates = [t for t in tx.sequences if len(_window_starts(tx.unique_windows[t], read_len))]
    genes = sorted({tx.gene_of[t] for t in candidates})
    if not genes:
        raise KbaggError(f"no transcript of the reference holds a {read_len} bp gene-unique read")
    tx_of_gene = defaultdict(list)
    for t in candidates:
        tx_of_gene[tx.gene_of[t]].append(t)

    replace_map: dict[str, str] = {}
    if splitseq:
        barcodes, replace_map, wells = _splitseq_barcodes(rng, n_cells)
    elif lay.onlist is not None:
        barcodes = _onlist_barcodes(rng, lay, n_cells)
    else:
        barcodes = _random_barcodes(rng, lay.barcode_length, n_cells)
    gene_index = {g: i for i, g in enumerate(tx.gene_names)}
    counts = np.zeros((n_cells, len(gene_index)), dtype=np.int64)
    internal = np.zeros_like(counts)

    lengths = _file_lengths(lay)
    lanes = [[io.BytesIO() for _ in range(lay.n_files)] for _ in range(n_lanes)]
    read_no = 0
    bc_lengths = [p.stop - p.start for p in lay.barcode]

    def fragment(gene: str, length: int) -> bytes:
        """A gene-unique `length`-base slice of a random transcript of `gene`."""
        while True:
            t = tx_of_gene[gene][int(rng.integers(len(tx_of_gene[gene])))]
            starts = _window_starts(tx.unique_windows[t], length)
            if len(starts):
                s = int(starts[rng.integers(len(starts))])
                return tx.sequences[t][s : s + length]

    def smartseq3_pair(gene: str) -> tuple[bytes, bytes]:
        """A fragment's sense start (R1 cDNA) and antisense end (R2), both gene-unique; the
        fragment length is drawn from FRAGMENT_LENGTH, or shortened to the read length when
        the transcript has no such fragment (R1 and R2 then cover the same bases)."""
        t = tx_of_gene[gene][int(rng.integers(len(tx_of_gene[gene])))]
        seq, starts = tx.sequences[t], _window_starts(tx.unique_windows[t], read_len)
        frag = int(rng.integers(FRAGMENT_LENGTH[0], FRAGMENT_LENGTH[1] + 1))
        both = np.intersect1d(starts, starts - (frag - read_len))
        if len(both) == 0:
            frag, both = read_len, starts
        s = int(both[rng.integers(len(both))])
        return seq[s : s + read_len], revcomp(seq[s + frag - read_len : s + frag])

    def emit(files: list[bytearray]) -> None:
        nonlocal read_no
        lane = lanes[int(rng.integers(n_lanes))]
        name_ = f"{sample}:{read_no}"
        for handle, seq in zip(lane, files, strict=True):
            handle.write(fastq_record(name_, bytes(seq)))
        read_no += 1

    for c, barcode in enumerate(barcodes):
        n_molecules = int(rng.integers(molecules_per_cell[0], molecules_per_cell[1] + 1))
        umis = _draw_umis(rng, lay.umi_length, n_molecules)
        order = rng.permutation(n_molecules)
        for m in order:
            gene = genes[int(rng.integers(len(genes)))]
            counts[c, gene_index[gene]] += 1
            read_barcode = barcode
            if splitseq and rng.random() < 0.5:  # primed by a random hexamer in round 1
                read_barcode = barcode[:-8] + replace_map[barcode[-8:]]
            for _ in range(int(rng.integers(reads_per_molecule[0], reads_per_molecule[1] + 1))):
                files = _fixed_bases(lay, lengths)
                for f in files:
                    holes = [j for j in range(len(f)) if f[j] == ord("N")]
                    for j, base in zip(holes, _filler(rng, len(holes)), strict=True):
                        f[j] = base
                _place(files, lay.barcode, read_barcode.encode())
                if smartseq3:
                    r1, r2 = smartseq3_pair(gene)
                    files[2][:] = SMARTSEQ3_TAG + umis[m] + b"GGG" + r1
                    files[3][:] = r2
                else:
                    _place(files, lay.umi, umis[m])
                    for p in lay.cdna:  # every cDNA part gets its own unique slice
                        length = (p.stop or lengths[p.file]) - p.start
                        files[p.file][p.start : p.start + length] = fragment(gene, length)
                emit(files)
        if smartseq3:  # internal reads: no tag, whole R1 and R2 are cDNA, either orientation
            n_internal = int(rng.integers(molecules_per_cell[0], molecules_per_cell[1] + 1))
            for _ in range(n_internal):
                gene = genes[int(rng.integers(len(genes)))]
                r1, r2 = smartseq3_pair(gene)
                if rng.random() < 0.5:
                    r1, r2 = r2, r1
                tag_mismatches = sum(a != b for a, b in zip(r1, SMARTSEQ3_TAG, strict=False))
                if tag_mismatches <= 1:
                    continue  # kallisto would read it as a UMI read
                internal[c, gene_index[gene]] += 1
                files = [bytearray(x.encode()) for x in _split(barcode, bc_lengths)]
                emit([*files, bytearray(r1), bytearray(r2)])

    for lane_no, handles in enumerate(lanes, start=1):
        paths = []
        for handle, label in zip(handles, lay.labels, strict=True):
            path = out_dir / "fastq" / f"{sample}_S1_L{lane_no:03d}_{label}_001.fastq.gz"
            write_gz(path, handle.getvalue())
            paths.append(path)
        lanes[lane_no - 1] = paths

    cell_barcodes = out_dir / "cell_barcodes.txt"
    with atomic_output(cell_barcodes) as tmp:
        tmp.write_text("".join(f"{b}\n" for b in barcodes))
    onlist = cell_barcodes if lay.onlist is None else None
    replacement = None
    if splitseq:
        replacement = out_dir / "replacement.txt"
        write_splitseq_replacement(replacement)  # every well's pair, as the workflow writes it

    var = pd.DataFrame(
        {"gene_name": list(tx.gene_names.values())},
        index=pd.Index(list(tx.gene_names), name="gene_id"),
    )
    obs = pd.DataFrame(index=pd.Index(barcodes, name="barcode"))
    if splitseq:
        obs["round1_well"] = np.asarray(wells, dtype=np.int64)
    layers = {"internal": sp.csr_matrix(internal)} if smartseq3 else {}
    truth = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var, layers=layers)
    truth.uns["technology"] = lay.kb_name
    return SimulatedLayout(truth, lanes, lay.kb_name, onlist, replacement, cell_barcodes)
