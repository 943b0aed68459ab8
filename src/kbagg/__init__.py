"""kbagg: single-cell FASTQs -> kb count -> one aggregated h5ad."""

__version__ = "0.1.0"
