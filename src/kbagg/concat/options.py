"""The concat parameters shared by every writer of an aggregate: the engine
(`kbagg.concat.concat_on_disk`), the ``.h5mu`` writer, the SOMA store and ``kbagg-concat``.

Their defaults are the config schema's (``aggregate.join``, ``aggregate.label``,
``aggregate.index_unique`` in ``workflow/schemas/config.schema.yaml``), read from it here and
nowhere else; the chunk budget's default and its bytes per entry are defined here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kbagg.schema import schema_default

# Stored entries (non-zeros) in memory at once, over all chunks in flight: 2**21 entries are
# 16 MB of float32 values + int32 column indices. CSR and dense inputs are read in tasks of
# at most matrix.TASK_ENTRIES (2**18) entries anyway; CSC inputs (and the gene-major copy)
# transpose blocks of up to this many entries.
DEFAULT_CHUNK_ENTRIES = 1 << 21
# Bytes of memory per stored entry on the engine's worst path (a CSC input's transpose: the
# entries in, their sort keys and the entries out), used to size the chunk from a job's memory.
BYTES_PER_ENTRY = 32
MIN_CHUNK_ENTRIES = 500_000


def _default(key: str):
    return dataclasses.field(default_factory=lambda: schema_default("aggregate", key))


def chunk_entries_for(memory_mb: int) -> int:
    """The chunk budget for a job of ``memory_mb`` MB: a quarter of it at `BYTES_PER_ENTRY`
    bytes per entry, and at least `MIN_CHUNK_ENTRIES`."""
    return max(MIN_CHUNK_ENTRIES, memory_mb * 2**20 // 4 // BYTES_PER_ENTRY)


@dataclass(frozen=True)
class ConcatOptions:
    """How samples are concatenated, for every writer of an aggregate.

    Parameters
    ----------
    join
        ``"inner"``: genes in every input; ``"outer"``: genes in any input.
    label
        obs column that holds the sample name (None: no such column).
    index_unique
        obs names become ``<barcode><index_unique><name>``; None or "" (normalised to None)
        keeps the barcodes.
    obs_metadata
        DataFrame (or TSV path) whose ``label`` (else ``sample``) column names the samples;
        its other columns become categorical obs columns. None: no metadata.
    chunk_entries
        Stored entries (non-zeros) held in memory at once, over all chunks in flight.
    """

    join: str = _default("join")
    label: str | None = _default("label")
    index_unique: str | None = _default("index_unique")
    obs_metadata: pd.DataFrame | str | Path | None = None
    chunk_entries: int = DEFAULT_CHUNK_ENTRIES

    def __post_init__(self) -> None:
        if self.join not in ("inner", "outer"):
            raise ValueError(f"join must be 'inner' or 'outer', got {self.join!r}")
        if self.chunk_entries < 1:
            raise ValueError("chunk_entries must be at least 1")
        object.__setattr__(self, "index_unique", self.index_unique or None)

    @classmethod
    def given(cls, options: ConcatOptions | None = None, **fields) -> ConcatOptions:
        """``options`` (default: the schema's) with ``fields`` replaced; a keyword that is
        not a field raises TypeError."""
        return dataclasses.replace(options or cls(), **fields)

    @classmethod
    def from_sheet(cls, metadata: dict[str, list] | pd.DataFrame, **fields) -> ConcatOptions:
        """Options whose obs metadata is the sample sheet's (column -> values, as the
        workflow passes it, with a ``sample`` column), keyed by ``label`` as the engines
        read it; ``fields`` as for `ConcatOptions`."""
        options = cls(**fields)
        table = pd.DataFrame(metadata).rename(columns={"sample": options.label})
        return dataclasses.replace(options, obs_metadata=table)
