"""Cells: per-sample raw and filtered matrices from kb's output."""
