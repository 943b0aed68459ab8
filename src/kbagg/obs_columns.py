"""The obs and var columns kbagg writes itself, and what it writes there: one registry.

A sample-sheet metadata column becomes an obs column of every aggregate, so it may not take
one of these names (the sheet is checked against this registry when the workflow parses it,
`kbagg.sheet.SampleSheet.check_obs_columns`), nor may config ``aggregate.label``. Every
writer's columns are tested to be listed here (tests/test_obs_columns.py).
"""

from __future__ import annotations

# per-cell QC: obs of every sample's filtered.h5ad and so of every aggregate (kbagg.cells)
CELL_QC_COLUMNS: dict[str, str] = {
    "n_umis": "each cell's UMI count (per-cell QC)",
    "n_genes": "each cell's number of detected genes (per-cell QC)",
    "pct_mito": "each cell's percentage of mitochondrial UMIs (per-cell QC)",
    "doublet_score": "each cell's Scrublet doublet score (per-cell QC)",
    "predicted_doublet": "whether Scrublet calls the cell a doublet (per-cell QC)",
}
# CRISPR guide calls: obs of the crispr modality of the .h5mu (kbagg.cells.guides)
GUIDE_CALL_COLUMNS: dict[str, str] = {
    "guide_call": "each cell's guide call (crispr modality)",
    "n_guides": "each cell's number of called guides (crispr modality)",
    "guide_umis": "each cell's UMIs of its called guides (crispr modality)",
}

# obs column -> what kbagg writes there (and where). The label column (config
# aggregate.label, "sample" by default) is not listed: its name is the config's.
OBS_COLUMNS: dict[str, str] = {
    **CELL_QC_COLUMNS,
    # ambient RNA removal with config ambient.method (kbagg.cells.ambient)
    "ambient_fraction": "each cell's estimated share of ambient RNA (ambient.method)",
    # depth normalization with config aggregate.normalize (kbagg.normalize)
    "mapped_reads": "each cell's reads in kb's BUS file (filtered.normalized.h5ad)",
    "mapped_reads_normalized": "each cell's reads left after thinning (filtered.normalized.h5ad)",
    # cell calling, every sample's raw.h5ad (kbagg.cells.call)
    "bustools_cell": "whether kb/bustools called the barcode a cell (raw.h5ad)",
    "emptydrops_cell": "whether EmptyDrops called the barcode a cell (raw.h5ad)",
    "emptydrops_fdr": "EmptyDrops' FDR of the barcode (raw.h5ad)",
    # hashtag demultiplexing: the hashtag modality of the .h5mu (kbagg.cells.demux)
    "hashtag": "each cell's hashtag call (hashtag modality)",
    "hashtag_class": "each cell's hashtag class: singlet, doublet or negative",
    "hashtag_confidence": "the confidence of each cell's hashtag call",
    "hashtag_margin": "the margin of each cell's hashtag call",
    "hashtag_sample": "the demultiplexed sample of each cell's hashtag",
    **GUIDE_CALL_COLUMNS,
    # the aggregate .h5mu's global obs (kbagg.aggregate.mudata)
    "library": "the sample-sheet sample (library) of each cell, in the .h5mu's global obs",
    # SPLiT-seq samples' raw.h5ad and filtered.h5ad (kbagg.cells.matrices.add_round1_wells)
    "round1_well": "each SPLiT-seq cell's round-1 well, 1-96 in kb's on-list order",
    # every aggregate (kbagg.sheet.SampleSheet.obs_metadata): a lane column of the sheet
    "technology": "the sheet's technology of each cell's sample (its gene-expression library)",
    # the TileDB-SOMA store's obs (kbagg.soma)
    "kbagg_run": "the kbagg run that added the cell to the SOMA store",
    "obs_id": "each cell's name, the SOMA store's obs index",
    "soma_joinid": "tiledbsoma's row number of each cell in the SOMA store",
}

# Prefixes kbagg keeps for columns it writes (new demultiplexing columns among them).
OBS_PREFIXES: dict[str, str] = {
    "hashtag_": "hashtag demultiplexing columns (hashtag modality)",
    "clr:": "each cell's CLR-normalised count of one hashtag (hashtag modality)",
    "prob:": "each cell's probability of carrying one hashtag (hashtag modality)",
}

# var column -> what kbagg writes there.
VAR_COLUMNS: dict[str, str] = {
    "gene_id": "the gene (or feature) id, the var index (the SOMA store's var index)",
    "gene_name": "each gene's name from the reference's t2g",
    "feature_id": "the feature id, the var index of a feature modality (prot, hashtag, crispr)",
    "feature_name": "each feature's name from the feature reference",
    "feature_type": "each feature's library type from the feature reference",
    "ambient_profile": "each gene's share of the sample's ambient RNA (ambient.method)",
    "soma_joinid": "tiledbsoma's row number of each gene in the SOMA store",
}

# The names writers use (importable, so a writer never spells them twice).
CELL_COLUMNS = tuple(CELL_QC_COLUMNS)  # the per-cell QC columns, in the order written
GUIDE_COLUMNS = tuple(GUIDE_CALL_COLUMNS)  # the guide-call columns, in the order written
LIBRARY = "library"
TECHNOLOGY = "technology"
ROUND1_WELL = "round1_well"
RUN_COLUMN = "kbagg_run"
OBS_ID = "obs_id"
VAR_ID = "gene_id"
MAPPED_READS = "mapped_reads"
MAPPED_READS_NORMALIZED = "mapped_reads_normalized"


def written_by_kbagg(column: str) -> str | None:
    """What kbagg writes in obs column ``column``, or None when it writes nothing there."""
    if column in OBS_COLUMNS:
        return OBS_COLUMNS[column]
    for prefix, what in OBS_PREFIXES.items():
        if column.startswith(prefix):
            return what
    return None
