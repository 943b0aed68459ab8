"""Add a per-cell matrix (an embedding, a QC table) to a kbagg SOMA store's obsm.

    python -m kbagg.soma.cli --store STORE --key KEY --table TABLE.tsv
        [--id-column obs_id] [--measurement RNA] [--lock-timeout S]
    python -m kbagg.soma.cli --store STORE --key KEY --npy VALUES.npy
        --obs-ids IDS.txt [--measurement RNA] [--lock-timeout S]

A table (.csv comma-separated, anything else tab-separated) names each cell in its id
column (default: the first) and gives numeric columns; their names are kept with the array.
A .npy holds a 2-d numeric array whose rows are the cells listed one per line in --obs-ids.
Every cell must be in the store. Exit code 0 only when the matrix is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from kbagg.cli import run_cli
from kbagg.soma.lock import StoreError
from kbagg.soma.obsm import add_obsm


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Add a per-cell matrix to a SOMA store's obsm.")
    p.add_argument("--store", required=True, help="the store (a TileDB-SOMA Experiment)")
    p.add_argument("--key", required=True, help="obsm key, e.g. X_umap or qc")
    p.add_argument("--measurement", default="RNA")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--table", type=Path, help="TSV/CSV: an id column and numeric columns")
    source.add_argument("--npy", type=Path, help="2-d numeric array, one row per --obs-ids line")
    p.add_argument("--id-column", help="the table's obs_id column (default: its first column)")
    p.add_argument("--obs-ids", type=Path, help="with --npy: one obs_id per line")
    p.add_argument(
        "--lock-timeout",
        type=float,
        metavar="S",
        help="seconds to wait for another update of the store (default: wait)",
    )
    return p


def read_table(path: Path, id_column: str | None) -> tuple[list[str], pd.DataFrame]:
    """(obs_ids, numeric columns) of a TSV/CSV; StoreError naming a non-numeric column."""
    try:
        table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t")
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: cannot read table ({e})") from e
    id_column = id_column or str(table.columns[0])
    if id_column not in table.columns:
        raise StoreError(f"{path}: no column {id_column!r} (columns: {', '.join(table.columns)})")
    values = table.drop(columns=[id_column])
    for col in values.columns:
        if not pd.api.types.is_numeric_dtype(values[col]):
            raise StoreError(f"{path}: column {col!r} is not numeric")
    return table[id_column].astype(str).tolist(), values.astype(np.float64)


def read_npy(path: Path, obs_ids: Path | None) -> tuple[list[str], np.ndarray]:
    if obs_ids is None:
        raise StoreError(f"{path}: --npy needs --obs-ids (one obs_id per line)")
    try:
        values = np.load(path, allow_pickle=False)
        ids = [line.strip() for line in obs_ids.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path} / {obs_ids}: {e}") from e
    return ids, values


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: _add(build_parser().parse_args(argv)))


def _add(args: argparse.Namespace) -> None:
    if args.table is not None:
        ids, values = read_table(args.table, args.id_column)
    else:
        ids, values = read_npy(args.npy, args.obs_ids)
    add_obsm(
        args.store,
        args.key,
        values,
        ids,
        measurement=args.measurement,
        lock_timeout_s=args.lock_timeout,
    )


if __name__ == "__main__":
    main()
