"""Cells: per-sample raw and filtered matrices from kb's output, the called cells and their
per-cell QC. The obs columns written here are named in the registry, `kbagg.obs_columns`
(`CELL_COLUMNS`, `GUIDE_COLUMNS`)."""
