"""Deterministic single-cell RNA-seq simulator: the demo data set and the tests' ground truth.

It writes a random genome with multi-exon genes on both strands, a matching GTF, and for each
sample paired 10x FASTQs split across lanes: read 1 holds a barcode taken from kb's own
on-list plus a UMI, read 2 a 90 bp sense-strand slice near the transcript's 3' end. Every
(barcode, UMI) belongs to exactly one gene and reads carry no sequencing errors, so the UMI
counts that kb should report are known exactly and are written next to the reads as
`truth/<sample>.h5ad` (all barcodes, with `obs['is_cell']` marking real cells). Samples with
`SampleSpec.hard` set (see `spec.HARD`) take their counts from `kbagg.simulate.cells` and
their truth also holds `kind`, `cell_type` and `doublet_of`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.atomic import atomic_output
from kbagg.feature_types import GENE_EXPRESSION
from kbagg.kb.technology import onlist_barcodes
from kbagg.simulate.cells import simulate_droplets
from kbagg.simulate.reads import fastq_record, random_seq, revcomp, write_gz
from kbagg.simulate.spec import (
    DEMO,
    DemoSpec,
    SampleSpec,
    demo_outputs,
    fastq_path,
    feature_fastq_path,
    libraries,
)

CHROM = "chrS"
READ2_LENGTH = 90
UMI_LENGTH = {"10xv2": 10, "10xv3": 12}


@dataclass
class Gene:
    gene_id: str
    gene_name: str
    strand: str
    exons: list[tuple[int, int]]  # 1-based inclusive genome coordinates, ascending
    transcripts: dict[str, list[int]]  # transcript id -> indices into exons (ascending)


def _make_genes(rng: np.random.Generator, n_genes: int) -> tuple[bytes, list[Gene]]:
    """A chromosome of random sequence with `n_genes` non-overlapping multi-exon genes."""
    pieces: list[bytes] = []
    genes: list[Gene] = []
    pos = 0  # 0-based length so far

    def add(seq: bytes) -> tuple[int, int]:
        nonlocal pos
        pieces.append(seq)
        start = pos + 1
        pos += len(seq)
        return start, pos

    for g in range(n_genes):
        add(random_seq(rng, int(rng.integers(300, 600))))  # intergenic
        n_exons = int(rng.integers(2, 4))
        exons = []
        for e in range(n_exons):
            exons.append(add(random_seq(rng, int(rng.integers(150, 400)))))
            if e < n_exons - 1:
                intron = bytearray(random_seq(rng, int(rng.integers(120, 300))))
                intron[:2], intron[-2:] = b"GT", b"AG"
                add(bytes(intron))
        strand = "+" if g % 2 == 0 else "-"
        gene_id = f"SIMG{g + 1:05d}"
        transcripts = {f"SIMT{g + 1:05d}.1": list(range(n_exons))}
        if n_exons == 3:
            # A second isoform skipping the middle exon: reads still map to one gene only.
            transcripts[f"SIMT{g + 1:05d}.2"] = [0, 2]
        genes.append(Gene(gene_id, f"Sim{g + 1}", strand, exons, transcripts))
    add(random_seq(rng, 500))
    return b"".join(pieces), genes


def _transcript_seq(genome: bytes, gene: Gene, exon_ids: list[int]) -> bytes:
    seq = b"".join(genome[gene.exons[i][0] - 1 : gene.exons[i][1]] for i in exon_ids)
    return seq if gene.strand == "+" else revcomp(seq)


def _gtf_lines(genes: list[Gene]) -> list[str]:
    lines = []
    for gene in genes:
        attrs = (
            f'gene_id "{gene.gene_id}"; gene_name "{gene.gene_name}"; gene_type "protein_coding";'
        )
        start, end = gene.exons[0][0], gene.exons[-1][1]
        lines.append(f"{CHROM}\tsim\tgene\t{start}\t{end}\t.\t{gene.strand}\t.\t{attrs}")
        for tx_id, exon_ids in gene.transcripts.items():
            tx_attrs = (
                f'{attrs} transcript_id "{tx_id}"; transcript_name "{gene.gene_name}-{tx_id[-1]}";'
            )
            t_start, t_end = gene.exons[exon_ids[0]][0], gene.exons[exon_ids[-1]][1]
            lines.append(
                f"{CHROM}\tsim\ttranscript\t{t_start}\t{t_end}\t.\t{gene.strand}\t.\t{tx_attrs}"
            )
            for n, i in enumerate(exon_ids, start=1):
                s, e = gene.exons[i]
                lines.append(
                    f"{CHROM}\tsim\texon\t{s}\t{e}\t.\t{gene.strand}\t.\t{tx_attrs} exon_number {n};"
                )
    return lines


def _pick_barcodes(
    rng: np.random.Generator, pool: np.ndarray, n: int, taken: list[str] = ()
) -> list[str]:
    """n distinct barcodes at Hamming distance >= 3 from each other and from `taken`.

    bustools corrects barcodes within one mismatch of the filter list, so barcodes closer
    than that could be merged and the truth would no longer be exact.
    """
    if n == 0 or len(pool) == 0:
        return []
    chosen = np.zeros((len(taken) + n, len(pool[0])), dtype=np.uint8)
    for i, barcode in enumerate(taken):
        chosen[i] = np.frombuffer(barcode.encode(), dtype=np.uint8)
    n_chosen = len(taken)
    for idx in rng.permutation(len(pool)):
        candidate = np.frombuffer(pool[idx].encode(), dtype=np.uint8)
        if n_chosen == 0 or (chosen[:n_chosen] != candidate).sum(axis=1).min() >= 3:
            chosen[n_chosen] = candidate
            n_chosen += 1
            if n_chosen == len(chosen):
                break
    return [c.tobytes().decode() for c in chosen[len(taken) : n_chosen]]


def _simulate_counts(
    rng: np.random.Generator, sample: SampleSpec, n_genes: int, profiles: np.ndarray
) -> np.ndarray:
    """UMI counts, barcodes x genes: real cells first, then near-empty droplets."""
    expressed = np.ones(n_genes, dtype=bool)
    expressed[list(sample.silent_genes)] = False
    counts = np.zeros((sample.n_cells + sample.n_empty, n_genes), dtype=np.int64)
    for c in range(sample.n_cells):
        weights = profiles[c % len(profiles)] * expressed
        total = int(rng.integers(150, 400))
        counts[c] = rng.multinomial(total, weights / weights.sum())
    ambient = expressed / expressed.sum()
    for e in range(sample.n_empty):
        counts[sample.n_cells + e] = rng.multinomial(int(rng.integers(1, 4)), ambient)
    return counts


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _simulate_sample(
    rng: np.random.Generator,
    outdir: Path,
    sample: SampleSpec,
    genome: bytes,
    genes: list[Gene],
    profiles: np.ndarray,
) -> ad.AnnData:
    umi_len = UMI_LENGTH[sample.technology]
    pool = np.array(onlist_barcodes(sample.technology))
    layers = {}  # truth beside the counts: ambient-free counts when cells hold ambient RNA
    if sample.hard is None and sample.cell_barcodes:  # cells with given barcodes
        cells = list(sample.cell_barcodes)
        assert len(cells) == sample.n_cells, "n_cells must equal len(cell_barcodes)"
        barcodes = cells + _pick_barcodes(rng, pool, sample.n_empty, taken=cells)
        counts = _simulate_counts(rng, sample, len(genes), profiles)
        is_cell = np.arange(len(barcodes)) < sample.n_cells
        cell_type = np.where(is_cell, np.arange(len(barcodes)) % len(profiles), -1)
        truth_obs = pd.DataFrame({"is_cell": is_cell, "cell_type": cell_type})
    elif sample.hard is None:
        barcodes = _pick_barcodes(rng, pool, sample.n_cells + sample.n_empty)
        counts = _simulate_counts(rng, sample, len(genes), profiles)
        is_cell = np.arange(len(barcodes)) < sample.n_cells
        # cells follow the expression programmes in turn (see _simulate_counts); -1: empty
        cell_type = np.where(is_cell, np.arange(len(barcodes)) % len(profiles), -1)
        truth_obs = pd.DataFrame({"is_cell": is_cell, "cell_type": cell_type})
    else:  # hard cases, with their own cell types (kbagg.simulate.cells)
        droplets = simulate_droplets(rng, len(genes), sample.n_cells, sample.n_empty, sample.hard)
        barcodes = _pick_barcodes(rng, pool, droplets.counts.shape[0])
        counts = droplets.counts.toarray()
        truth_obs = droplets.obs
        if droplets.ambient_free is not None:
            layers["ambient_free"] = droplets.ambient_free
    tx_seqs = [
        [_transcript_seq(genome, g, exon_ids) for exon_ids in g.transcripts.values()] for g in genes
    ]

    lanes = [(io.BytesIO(), io.BytesIO()) for _ in range(sample.lanes)]
    read_no = 0
    for b, barcode in enumerate(barcodes):
        # UMIs unique within a barcode, so no two molecules collapse into one.
        n_umis = int(counts[b].sum())
        umis: set[bytes] = set()
        while len(umis) < n_umis:
            umis.add(random_seq(rng, umi_len))
        umi_iter = iter(sorted(umis))
        for g in np.repeat(np.arange(len(genes)), counts[b]):
            umi = next(umi_iter)
            for _ in range(int(rng.integers(1, 4))):  # PCR duplicates of one molecule
                tx = tx_seqs[g][int(rng.integers(len(tx_seqs[g])))]
                tail = min(len(tx) - READ2_LENGTH, 300)
                start = len(tx) - READ2_LENGTH - int(rng.integers(0, tail + 1))
                read2 = tx[start : start + READ2_LENGTH]
                read1 = barcode.encode() + umi
                r1, r2 = lanes[int(rng.integers(sample.lanes))]
                name = f"{sample.name}:{read_no}"
                r1.write(fastq_record(name, read1))
                r2.write(fastq_record(name, read2))
                read_no += 1
    for lane, (r1, r2) in enumerate(lanes, start=1):
        write_gz(fastq_path(outdir, sample.name, lane, 1), r1.getvalue())
        write_gz(fastq_path(outdir, sample.name, lane, 2), r2.getvalue())

    obs = truth_obs.set_axis(pd.Index(barcodes))
    var = pd.DataFrame(
        {"gene_name": [g.gene_name for g in genes]}, index=pd.Index([g.gene_id for g in genes])
    )
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var, layers=layers)


def sample_sheet(outdir: Path, spec: DemoSpec = DEMO, relative_to: Path | None = None) -> str:
    """The sample sheet for the demo FASTQs (paths relative to `relative_to` when given);
    with a `feature_type` column when a sample has feature-barcode libraries."""
    meta_cols = sorted({k for s in spec.samples for k in s.metadata})
    with_types = any(s.feature_libraries for s in spec.samples)
    rows = []
    for s in spec.samples:
        for feature_type in libraries(s):
            if feature_type == GENE_EXPRESSION:
                pairs = [
                    [fastq_path(outdir, s.name, lane, r) for r in (1, 2)]
                    for lane in range(1, s.lanes + 1)
                ]
            else:
                pairs = [[feature_fastq_path(outdir, s.name, feature_type, r) for r in (1, 2)]]
            for paths in pairs:
                if relative_to is not None:
                    paths = [Path(_relpath(p, relative_to)) for p in paths]
                row = [s.name, *map(str, paths), s.technology]
                row += [feature_type] if with_types else []
                rows.append(row + [s.metadata[k] for k in meta_cols])
    header = ["sample", "fastq_1", "fastq_2", "technology"]
    header += ["feature_type"] if with_types else []
    return "\n".join("\t".join(r) for r in [header + meta_cols, *rows]) + "\n"


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def write_demo(outdir: str | Path, spec: DemoSpec = DEMO) -> dict[str, list[Path]]:
    """Write genome, GTF, FASTQs, truth matrices and a sample sheet under `outdir`."""
    outdir = Path(outdir)
    rng = np.random.default_rng(spec.seed)
    genome, genes = _make_genes(rng, spec.n_genes)
    fasta = "\n".join(
        [f">{CHROM}"] + [genome[i : i + 60].decode() for i in range(0, len(genome), 60)]
    )
    _write_text(outdir / "genome.fa", fasta + "\n")
    _write_text(outdir / "genes.gtf", "\n".join(_gtf_lines(genes)) + "\n")
    # A handful of expression programmes shared by cells, so cells look like cell types.
    profiles = rng.gamma(0.6, 1.0, size=(4, len(genes))) + 0.01
    for sample in spec.samples:
        truth = _simulate_sample(rng, outdir, sample, genome, genes, profiles)
        with atomic_output(outdir / "truth" / f"{sample.name}.h5ad") as tmp:
            truth.write_h5ad(tmp)
        if sample.feature_libraries:
            from kbagg.simulate.features import DEMO_FEATURES, write_feature_libraries

            cells = truth.obs["is_cell"].to_numpy(dtype=bool)
            write_feature_libraries(
                outdir,
                sample.name,
                list(truth.obs_names[cells]),
                truth.obs["cell_type"].to_numpy()[cells],
                DEMO_FEATURES,
                technology=sample.technology,
                feature_types=sample.feature_libraries,
            )
    _write_text(outdir / "samples.tsv", sample_sheet(outdir, spec, relative_to=outdir))
    return demo_outputs(outdir, spec)
