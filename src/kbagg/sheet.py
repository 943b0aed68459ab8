"""Sample sheet: one row per lane, rows sharing `sample` are that sample's lanes.

Columns `sample`, `fastq_1`, `fastq_2` are required, `technology` is optional (else the config
default), and every other column is sample metadata that ends up in `obs` of the aggregate.
Relative FASTQ paths resolve against the sheet's folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError

REQUIRED_COLUMNS = ("sample", "fastq_1", "fastq_2")
RESERVED_COLUMNS = (*REQUIRED_COLUMNS, "technology")


class SampleSheetError(KbaggError):
    """A problem in the sample sheet; the message names the file, line, sample and column."""


@dataclass(frozen=True)
class SampleSheet:
    path: Path
    lanes: pd.DataFrame  # one row per lane: sample, fastq_1, fastq_2, technology, line
    samples: pd.DataFrame  # one row per sample, indexed by sample: technology + metadata

    @property
    def names(self) -> list[str]:
        return list(self.samples.index)

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.samples.columns if c != "technology"]

    def fastqs(self, sample: str) -> list[str]:
        """R1, R2 of lane 1, then lane 2, ...: the order `kb count` expects."""
        rows = self.lanes[self.lanes["sample"] == sample]
        return [p for _, row in rows.iterrows() for p in (row["fastq_1"], row["fastq_2"])]

    def technology(self, sample: str) -> str:
        return self.samples.loc[sample, "technology"]

    def metadata(self) -> pd.DataFrame:
        """One row per sample with a `sample` column and the metadata columns."""
        return self.samples[self.metadata_columns].reset_index()


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a TSV as strings (so `01` stays `01`), with empty cells as missing."""
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"sample sheet {path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    table.columns = [c.strip() for c in table.columns]
    return table.apply(lambda col: col.str.strip()).replace("", pd.NA)


def load_sample_sheet(
    path: str | Path,
    default_technology: str,
    *,
    workdir: str | Path | None = None,
    will_exist: Iterable[str | Path] = (),
    validate_rows: Callable[[pd.DataFrame], object] | None = None,
) -> SampleSheet:
    """Read, check and normalise a sample sheet.

    `will_exist` lists files that a rule of the workflow produces (the demo data), which
    need not exist yet. `validate_rows` is the JSON-schema check (snakemake.utils.validate),
    run on the raw table. FASTQ paths come back relative to `workdir` when inside it, so that
    they match the outputs of rules, else absolute.
    """
    path = Path(path)
    table = read_table(path)
    where = f"sample sheet {path}"
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise SampleSheetError(
            f"{where}: missing required column(s) {', '.join(missing)}; "
            f"found columns: {', '.join(table.columns)}"
        )
    if table.empty:
        raise SampleSheetError(f"{where}: no rows (one row per sample lane is needed)")
    if validate_rows is not None:
        validate_rows(table)

    table["line"] = range(2, len(table) + 2)  # 1-based file lines, header is line 1
    if "technology" not in table.columns:
        table["technology"] = pd.NA
    table["technology"] = table["technology"].fillna(default_technology)

    workdir = Path(workdir or os.getcwd()).resolve()
    produced = {Path(p).resolve() for p in will_exist}
    for column in ("fastq_1", "fastq_2"):
        table[column] = [
            _resolve_fastq(row, column, path, workdir, produced) for _, row in table.iterrows()
        ]
    _check_duplicate_lanes(table, where)
    samples = _per_sample_table(table, where)
    lanes = table[["sample", "fastq_1", "fastq_2", "technology", "line"]].reset_index(drop=True)
    return SampleSheet(path=path, lanes=lanes, samples=samples)


def _resolve_fastq(
    row: pd.Series, column: str, sheet: Path, workdir: Path, produced: set[Path]
) -> str:
    value = row[column]
    context = f"sample sheet {sheet}, line {row['line']}, sample '{row['sample']}', column {column}"
    if pd.isna(value):
        raise SampleSheetError(f"{context}: empty")
    resolved = Path(os.path.normpath(sheet.resolve().parent / Path(value).expanduser()))
    if not resolved.is_file() and resolved not in produced:
        raise SampleSheetError(f"{context}: file not found: {value} (resolved to {resolved})")
    try:
        return str(resolved.relative_to(workdir))
    except ValueError:
        return str(resolved)


def _check_duplicate_lanes(table: pd.DataFrame, where: str) -> None:
    for column in ("fastq_1", "fastq_2"):
        dup = table[table.duplicated(column, keep=False)]
        if not dup.empty:
            lines = ", ".join(map(str, dup["line"]))
            raise SampleSheetError(
                f"{where}, lines {lines}: the same {column} file {dup[column].iloc[0]} is listed "
                "more than once"
            )


def _per_sample_table(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Collapse lanes to samples; technology and metadata must agree across a sample's lanes."""
    per_sample_columns = [c for c in table.columns if c not in ("fastq_1", "fastq_2", "line")]
    per_sample_columns.remove("sample")
    rows = {}
    for sample, lanes in table.groupby("sample", sort=False):
        values = {}
        for column in per_sample_columns:
            distinct = lanes[column].drop_duplicates()
            if len(distinct) > 1:
                detail = "; ".join(
                    f"line {line}: {value if pd.notna(value) else '(empty)'}"
                    for line, value in zip(lanes["line"], lanes[column], strict=False)
                )
                raise SampleSheetError(
                    f"{where}: sample '{sample}' has conflicting values in column {column} "
                    f"across its lanes ({detail}); a sample's lanes must agree"
                )
            values[column] = distinct.iloc[0]
        rows[sample] = values
    samples = pd.DataFrame.from_dict(rows, orient="index", columns=per_sample_columns)
    samples.index.name = "sample"
    return samples


def write_metadata_table(table: dict[str, list], label: str, output: str | Path) -> pd.DataFrame:
    """Write the per-sample metadata TSV (`label` column + metadata) atomically."""
    frame = pd.DataFrame(table).rename(columns={"sample": label})
    with atomic_output(output) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)
    return frame
