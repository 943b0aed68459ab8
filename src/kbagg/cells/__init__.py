"""Cells: per-sample raw and filtered matrices from kb's output, the called cells and their
per-cell QC."""

# obs columns kbagg writes into every sample's filtered matrix (the sheet may not use them)
CELL_COLUMNS = ("n_umis", "n_genes", "pct_mito", "doublet_score", "predicted_doublet")
# obs columns of the crispr modality: the guides called per cell (kbagg.cells.guides)
GUIDE_COLUMNS = ("guide_call", "n_guides", "guide_umis")
