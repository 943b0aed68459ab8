"""Per-sample matrices from kb's output: `raw.h5ad` (every barcode) and `filtered.h5ad`.

They are written only after the sample's reads are accounted for: kallisto must have
processed exactly the reads that the FASTQ checks counted in all of the sample's lanes
(kb exits 0 on many errors, so its own success is not evidence). `var` is indexed by gene id
(`gene_id`) with a `gene_name` column from the t2g, `obs` by barcode (`barcode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.count.kb_count import KB_MATRICES, kb_raw_matrix
from kbagg.errors import KbaggError
from kbagg.kb.run import read_json_if_present
from kbagg.obs_columns import ROUND1_WELL


def gene_names_from_t2g(t2g: str | Path) -> pd.Series:
    """gene_id -> gene_name from kb's t2g (3rd column; the id itself where there is none)."""
    table = pd.read_csv(t2g, sep="\t", header=None, dtype=str, keep_default_na=False)
    if table.shape[1] < 2:
        raise KbaggError(f"t2g {t2g}: expected at least 2 tab-separated columns (transcript, gene)")
    ids = table[1]
    names = table[2] if table.shape[1] > 2 else ids
    names = names.where(names != "", ids)
    return pd.Series(names.to_numpy(), index=pd.Index(ids, name="gene_id")).groupby(level=0).first()


def with_gene_names(adata: ad.AnnData, gene_names: pd.Series) -> ad.AnnData:
    """kb's matrix with `var` = gene_id index + gene_name, `obs` index named barcode."""
    adata.var.index.name = "gene_id"
    adata.var["gene_name"] = gene_names.reindex(adata.var_names).fillna(
        pd.Series(adata.var_names, index=adata.var_names)
    )
    adata.obs.index.name = "barcode"
    return adata


def check_reads_processed(sample: str, kb_dir: Path, checked_reads: Mapping[str, int]) -> int:
    """kallisto's `n_processed` must equal the reads the FASTQ checks counted, per lane
    summed; returns that number. `checked_reads`: lane label -> read pairs."""
    info = read_json_if_present(Path(kb_dir) / "run_info.json")
    processed = info.get("n_processed")
    expected = sum(checked_reads.values())
    if processed is None:
        raise KbaggError(f"sample '{sample}': {kb_dir}/run_info.json has no n_processed")
    if int(processed) != expected:
        lanes = ", ".join(f"{lane}: {n:,}" for lane, n in checked_reads.items())
        raise KbaggError(
            f"sample '{sample}': kallisto processed {int(processed):,} reads but the FASTQ "
            f"checks counted {expected:,} ({lanes}); the input changed or kb skipped reads"
        )
    return expected


def read_kb_matrices(
    sample: str, kb_dir: str | Path, t2g: str | Path, kinds: tuple[str, ...]
) -> dict[str, ad.AnnData]:
    """kb's matrices of `kinds` ("raw", "filtered"), with gene names from the t2g.

    Parameters
    ----------
    sample
        Sample name, for messages.
    kb_dir
        kb count's output folder.
    t2g
        kb's transcript-to-gene map.
    kinds
        Which matrices: "raw" (counts_unfiltered; counts_unfiltered_modified when kb
        applied a replacement list, `kb_raw_matrix`) and/or "filtered" (counts_filtered).
    """
    names = gene_names_from_t2g(t2g)
    adatas = {}
    for kind in kinds:
        source = kb_raw_matrix(kb_dir) if kind == "raw" else Path(kb_dir) / KB_MATRICES[kind]
        if not source.exists():
            raise KbaggError(f"sample '{sample}': kb's {kind} matrix {source} is missing")
        adatas[kind] = with_gene_names(ad.read_h5ad(source), names)
    return adatas


def write_h5ad(adata: ad.AnnData, output: str | Path) -> None:
    with atomic_output(output) as tmp:
        adata.write_h5ad(tmp)


def name_plate_cells(adata: ad.AnnData, kb_dir: str | Path) -> None:
    """Name the cells of a plate counted from kb's batch file by their cell ids (in place).

    kallisto gives batch row i the barcode on line i of `matrix.sample.barcodes` and its
    cell id on line i of `matrix.cells` (the `cell` column of the sample sheet). Without
    those files (Smart-seq3, whose barcode is its index reads) the barcodes stay.

    Parameters
    ----------
    adata
        kb's matrix of the sample.
    kb_dir
        kb count's output folder.
    """
    barcodes_path = Path(kb_dir) / "matrix.sample.barcodes"
    cells_path = Path(kb_dir) / "matrix.cells"
    if not (barcodes_path.exists() and cells_path.exists()):
        return
    barcodes = barcodes_path.read_text().split()
    cells = cells_path.read_text().split()
    if len(barcodes) != len(cells):
        raise KbaggError(
            f"{kb_dir}: kb's batch barcodes ({len(barcodes)}) and cells ({len(cells)}) differ"
        )
    names = dict(zip(barcodes, cells, strict=True))
    unknown = [b for b in adata.obs_names if b not in names]
    if unknown:
        raise KbaggError(f"{kb_dir}: barcode {unknown[0]} is in no row of kb's batch file")
    adata.obs_names = [names[b] for b in adata.obs_names]


def add_round1_wells(adata: ad.AnnData, sample: str, pairs=None) -> None:
    """obs `round1_well`: each SPLiT-seq barcode's round-1 well, 1-96 in kb's on-list order
    (`kbagg.kb.technology.splitseq_round1_wells`), in place. Wells are how a SPLiT-seq
    library holds several samples: map them to samples from this column.

    Parameters
    ----------
    adata
        A SPLiT-seq sample's matrix (barcodes as kb reports them, after its replacement list).
    sample
        The sample, for messages.
    pairs
        The round-1 pairs, well by well (`kbagg.kb.technology.read_splitseq_replacement`);
        None: from kb's on-list (needs kb-python).
    """
    from kbagg.kb.technology import splitseq_round1_wells

    try:
        wells = splitseq_round1_wells(adata.obs_names, pairs)
    except KbaggError as error:
        raise KbaggError(f"sample '{sample}': {error}") from None
    adata.obs[ROUND1_WELL] = np.asarray(wells, dtype=np.int64)


def keep_round1_wells(adata: ad.AnnData, wells, sample: str, pairs=None) -> ad.AnnData:
    """The barcodes of `adata` in round-1 wells `wells`, with obs `round1_well`: a sample's
    share of the SPLiT-seq library it was loaded into (sample sheet column round1_wells).

    Parameters
    ----------
    adata
        The library's matrix (kb's barcodes, after its replacement list).
    wells
        The sample's wells (1-96); empty: every barcode is the sample's.
    sample
        The sample, for messages.
    pairs
        As for `add_round1_wells`.
    """
    add_round1_wells(adata, sample, pairs)
    if not len(wells):
        return adata
    return adata[adata.obs[ROUND1_WELL].isin(list(wells)).to_numpy()].copy()
