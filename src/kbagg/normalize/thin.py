"""Thin reads in kb's BUS file and recount: ``cellranger aggr --normalize=mapped`` done exactly.

Mapped reads, as kbagg counts them: the ``count`` field summed over the records of kb's
sorted, barcode-corrected BUS file (``kb/output.unfiltered.bus``; after kb's replacement
list, ``kb/output_modified.unfiltered.bus``, for SPLiT-seq) whose barcode is a called
cell, i.e. reads that kallisto pseudoaligned and whose barcode bustools corrected to a called
cell. (Cell Ranger counts reads confidently mapped to the transcriptome; kallisto has no
mapping quality, and a multi-gene record's reads count here though ``bustools count`` does not
count its UMI.) Every sample is thinned to the lowest sample's mapped reads per cell: rate =
min over samples of (mapped reads / called cells) / this sample's. Each record keeps
Binomial(count, rate) of its reads; records left with none are dropped (a UMI survives while
one of its reads does), and the called cells are recounted with the ``bustools count``
arguments kb recorded in ``kb_info.json``.
"""

from __future__ import annotations

import subprocess
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kbagg.count.kb_count import kb_bus
from kbagg.errors import KbaggError
from kbagg.normalize.bus import encode_sequences, iter_records, read_header, write_bus

METHOD = "mapped"
# bustools count's switches that take no value (kb_python.count.bustools_count); the others
# (-o, -g, -e, -t) are paths kbagg gives itself.
COUNT_SWITCHES = ("--genecounts", "--umi-gene", "--multimapping", "--cm", "--em")
RATE_COLUMNS = [
    "sample",
    "cells",
    "mapped_reads",
    "mapped_reads_per_cell",
    "subsampling_rate",
]


def called_barcodes(sample: str, obs_names: Sequence[str], barcode_length: int) -> np.ndarray:
    """The called cells' barcodes (obs names of the sample's filtered.h5ad) as BUS integers."""
    try:
        return encode_sequences(list(obs_names), barcode_length)
    except KbaggError as error:
        raise KbaggError(f"sample '{sample}': filtered.h5ad obs names: {error}") from None


def mapped_reads_per_cell(bus: str | Path, barcodes: np.ndarray) -> np.ndarray:
    """Reads in `bus` of each barcode in `barcodes` (BUS integers), in their order.

    Parameters
    ----------
    bus
        A BUS file.
    barcodes
        The called cells' barcodes (`called_barcodes`).
    """
    order = np.argsort(barcodes)
    ranked = barcodes[order]
    reads = np.zeros(len(barcodes), dtype=np.int64)
    for chunk in iter_records(bus):
        slot, is_cell = _cell_slots(chunk["barcode"], ranked)
        reads += _per_cell(order[slot[is_cell]], chunk["count"][is_cell], len(barcodes))
    return reads


def _per_cell(cell: np.ndarray, reads: np.ndarray, n_cells: int) -> np.ndarray:
    """Reads summed per cell (bincount: exact in float64 below 2**53 reads)."""
    return np.bincount(cell, weights=reads, minlength=n_cells).astype(np.int64)


def _cell_slots(barcodes: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    slot = np.minimum(np.searchsorted(ranked, barcodes), max(len(ranked) - 1, 0))
    is_cell = ranked[slot] == barcodes if len(ranked) else np.zeros(len(barcodes), bool)
    return slot, is_cell


def subsampling_rates(reads: Mapping[str, int], cells: Mapping[str, int]) -> pd.DataFrame:
    """Each sample's mapped reads per cell and its subsampling rate (lowest / its own).

    Parameters
    ----------
    reads
        Sample -> mapped reads of its called cells.
    cells
        Sample -> its called cells.

    Returns
    -------
    One row per sample: `RATE_COLUMNS`. A sample without cells or mapped reads is a
    KbaggError naming it (every other sample would be thinned to nothing).
    """
    for sample in reads:
        if not cells[sample]:
            raise KbaggError(
                f"sample '{sample}': no called cells, so no mapped reads per cell to normalize "
                "to; drop it from the sheet or set aggregate.normalize: none"
            )
        if not reads[sample]:
            raise KbaggError(
                f"sample '{sample}': its {cells[sample]} called cells have no mapped reads; "
                "normalizing to it would thin every sample to nothing"
            )
    per_cell = {s: reads[s] / cells[s] for s in reads}
    lowest = min(per_cell.values())
    return pd.DataFrame(
        [[s, int(cells[s]), int(reads[s]), per_cell[s], lowest / per_cell[s]] for s in reads],
        columns=RATE_COLUMNS,
    )


def sample_rng(seed: int, sample: str) -> np.random.Generator:
    """The thinning's random generator for one sample: seeded by the config's seed and the
    sample's name (CRC-32), so a sample's draw does not depend on the other samples."""
    return np.random.default_rng([int(seed), zlib.crc32(sample.encode())])


def thin_counts(counts: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Binomial(count, rate) reads kept of each record (rate 1 keeps them all)."""
    if rate >= 1.0:
        return counts.copy()
    return rng.binomial(counts.astype(np.int64), rate).astype(counts.dtype)


def thin_bus(
    bus: str | Path,
    output: str | Path,
    barcodes: np.ndarray,
    rate: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Write the called cells' records of `bus` with their reads thinned to `output`.

    Parameters
    ----------
    bus
        kb's sorted BUS file.
    output
        The thinned BUS file (sorted still: records keep their order).
    barcodes
        The called cells' barcodes (BUS integers); other barcodes' records are left out.
    rate
        Each read's chance to be kept.
    rng
        The random generator (`sample_rng`).

    Returns
    -------
    Mapped reads of each called cell before and after thinning, in `barcodes` order.
    """
    order = np.argsort(barcodes)
    ranked = barcodes[order]
    before = np.zeros(len(barcodes), dtype=np.int64)
    after = np.zeros(len(barcodes), dtype=np.int64)

    def thinned():
        for chunk in iter_records(bus):
            slot, is_cell = _cell_slots(chunk["barcode"], ranked)
            chunk, cell = chunk[is_cell], order[slot[is_cell]]
            before[:] += _per_cell(cell, chunk["count"], len(barcodes))
            chunk["count"] = thin_counts(chunk["count"], rate, rng)
            kept = chunk["count"] > 0
            after[:] += _per_cell(cell[kept], chunk["count"][kept], len(barcodes))
            yield chunk[kept]

    write_bus(output, read_header(bus), thinned())
    return before, after


def count_switches(kb_info: Mapping, sample: str) -> list[str]:
    """The value-less switches kb passed to ``bustools count`` for counts_unfiltered, from
    the commands kb recorded in kb_info.json (KbaggError naming the sample when kb counted in
    a way kbagg cannot repeat: no such command, or a nascent/mature split)."""
    counts = [
        c
        for c in kb_info.get("commands", [])
        if " count " in f" {c} " and "counts_unfiltered/cells_x_genes" in c
    ]
    if len(counts) != 1:
        raise KbaggError(
            f"sample '{sample}': kb_info.json records {len(counts)} bustools count commands "
            "for counts_unfiltered, not 1; aggregate.normalize needs workflow standard"
        )
    tokens = counts[0].split()
    if "-s" in tokens:
        raise KbaggError(
            f"sample '{sample}': kb counted nascent and mature RNA (bustools count -s); "
            "aggregate.normalize needs workflow standard"
        )
    return [t for t in tokens if t in COUNT_SWITCHES]


def bustools_count(
    bus: str | Path,
    kb_dir: str | Path,
    t2g: str | Path,
    switches: Sequence[str],
    out_prefix: str | Path,
    bustools: str,
) -> None:
    """Run ``bustools count`` on `bus` with kb's switches, kb's matrix.ec and transcripts.txt
    (argument list, no shell); KbaggError with its last message on failure."""
    kb_dir = Path(kb_dir)
    command = [bustools, "count", "-o", str(out_prefix), "-g", str(t2g)]
    command += ["-e", str(kb_dir / "matrix.ec"), "-t", str(kb_dir / "transcripts.txt")]
    command += [*switches, str(bus)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise KbaggError(f"bustools count on {bus} failed: {' | '.join(last)}")


def read_bustools_matrix(out_prefix: str | Path):
    """bustools count's cells x genes (mtx, barcodes.txt, genes.txt) as a CSR matrix with its
    barcodes and gene ids."""
    import scipy.io
    import scipy.sparse as sp

    prefix = str(out_prefix)
    barcodes = Path(f"{prefix}.barcodes.txt").read_text().split()
    genes = Path(f"{prefix}.genes.txt").read_text().split()
    matrix = scipy.io.mmread(f"{prefix}.mtx", spmatrix=False)
    matrix = sp.csr_matrix(matrix, shape=(len(barcodes), len(genes)))
    return matrix, barcodes, genes


@dataclass(frozen=True)
class NormalizedSample:
    """One sample's thinned counts: cells x genes in the order of its filtered.h5ad, and each
    cell's mapped reads before and after."""

    counts: object  # scipy.sparse.csr_matrix
    reads_before: np.ndarray
    reads_after: np.ndarray


def normalize_sample(
    sample: str,
    kb_dir: str | Path,
    t2g: str | Path,
    kb_info: Mapping,
    obs_names: Sequence[str],
    var_names: Sequence[str],
    rate: float,
    seed: int,
    bustools: str,
    workdir: str | Path | None = None,
) -> NormalizedSample:
    """Thin one sample's BUS file at `rate` and recount its called cells.

    Parameters
    ----------
    sample
        Sample name, for messages and its random stream (`sample_rng`).
    kb_dir
        kb count's output folder (output.unfiltered.bus, matrix.ec, transcripts.txt).
    t2g
        kb's transcript-to-gene map.
    kb_info
        kb's kb_info.json, whose bustools count switches are used (`count_switches`).
    obs_names, var_names
        The called cells' barcodes and the gene ids, in the filtered.h5ad's order.
    rate
        The sample's subsampling rate (`subsampling_rates`).
    seed
        The config's seed (aggregate.normalize_seed).
    bustools
        The bustools executable (the one kb-python ships).
    workdir
        Where the thinned BUS file and bustools' matrix go (deleted after); None: a temp dir.
    """
    import scipy.sparse as sp

    kb_dir = Path(kb_dir)
    bus = kb_bus(kb_dir)
    if not bus.exists():
        raise KbaggError(f"sample '{sample}': kb's BUS file {bus} is missing; rerun kb_count")
    switches = count_switches(kb_info, sample)
    barcodes = called_barcodes(sample, obs_names, read_header(bus).barcode_length)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".normalize-") as tmp:
        thinned = Path(tmp) / "thinned.bus"
        before, after = thin_bus(bus, thinned, barcodes, rate, sample_rng(seed, sample))
        prefix = Path(tmp) / "cells_x_genes"
        bustools_count(thinned, kb_dir, t2g, switches, prefix, bustools)
        matrix, found, genes = read_bustools_matrix(prefix)
    rows = pd.Index(found).get_indexer(list(obs_names))
    columns = pd.Index(genes).get_indexer(list(var_names))
    if (columns < 0).any():
        missing = list(pd.Index(var_names)[columns < 0][:3])
        raise KbaggError(f"sample '{sample}': bustools count gave no column for genes {missing}")
    # Cells left with no reads have no row in bustools' output: they are all zeros.
    padded = sp.vstack([matrix.tocsr(), sp.csr_matrix((1, matrix.shape[1]))]).tocsr()
    counts = padded[np.where(rows < 0, matrix.shape[0], rows)][:, columns]
    return NormalizedSample(sp.csr_matrix(counts), before, after)
