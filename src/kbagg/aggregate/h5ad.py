"""The h5ad aggregate a rule writes: the samples' matrices joined by `kbagg.concat` on disk,
the sample sheet's metadata in ``obs`` and the provenance record in ``uns['kbagg']``; an
inner join's dropped layers are shown as one warning line on the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from kbagg.aggregate.provenance import to_uns
from kbagg.concat import concat_on_disk
from kbagg.concat.engine import DroppedLayersWarning
from kbagg.concat.options import ConcatOptions
from kbagg.rule import warnings_to_terminal

__all__ = ["write_aggregate"]


def write_aggregate(
    matrices: Mapping[str, str | Path],
    output: str | Path,
    provenance: Mapping,
    metadata: dict[str, list] | pd.DataFrame,
    concat: Mapping,
    *,
    chunk_entries: int,
    format: str = "h5ad",  # noqa: A002 - the natural name, as in anndata
    compression: str | None = None,
    threads: int = 1,
) -> None:
    """Join ``matrices`` into ``output`` as `concat_on_disk` does.

    Parameters
    ----------
    matrices
        Sample name -> its h5ad, in the order of the aggregate.
    output
        The aggregate to write (``.h5ad`` or ``.zarr``).
    provenance
        The run's provenance record, written as ``uns['kbagg']`` (`to_uns`).
    metadata
        The sample sheet's metadata, column -> values, with a ``sample`` column.
    concat
        `ConcatOptions` fields from the config (join, label, ...).
    chunk_entries
        Non-zeros per chunk, which bounds the memory of the join.
    format
        ``"h5ad"`` or ``"zarr"``.
    compression
        The output's compression, as for `concat_on_disk`.
    threads
        Worker threads of the concat.
    """
    options = ConcatOptions.from_sheet(metadata, **concat, chunk_entries=chunk_entries)
    with warnings_to_terminal(DroppedLayersWarning):
        concat_on_disk(
            matrices,
            output,
            options,
            uns={"kbagg": to_uns(provenance)},
            format=format,
            compression=compression,
            threads=threads,
        )
