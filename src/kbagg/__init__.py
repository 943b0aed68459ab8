"""kbagg: single-cell FASTQs -> kb count per sample -> one aggregated cell-by-gene store.

The package mirrors the workflow's stages, lower layers first (no module imports upward):

- `errors`, `atomic`: the error type and the write-then-rename helper;
- `kb`: running kb-python and reading its technology table;
- `sheet`: the sample sheet;
- `reference`, `count`: `kb ref`, FASTQ checks and `kb count`;
- `cells`: per-sample matrices from kb's output;
- `aggregate`: the chunked on-disk concat and provenance;
- `qc`: metrics, plots and tables;
- `simulate`: the demo data and the tests' ground truth.
"""

__version__ = "0.2.0"
