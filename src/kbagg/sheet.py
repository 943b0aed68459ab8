"""Sample sheet: one row per lane, rows sharing `sample` are that sample's lanes.

Columns `sample` and `fastq_1` are required, and `fastq_2` ... `fastq_N` as the row's
technology needs: N is the number of FASTQ files per lane that `kb count` takes for it
(`kbagg.kb.technology`: 2 for 10x v2/v3, 3 for 10x v1 and inDrops v3, 1 for 10x v3 on Ultima,
4 for Smart-seq3's I1, I2, R1, R2, in that order). `technology` is optional (else the config
default), a name from `kb --list` or a kallisto technology string. `cell` gives the cell id of
a row of a plate technology counted from kb's batch file (SMARTSEQ2, BULK, STORMSEQ): the rows
of such a sample are the cells of its plate. `round1_wells` (SPLIT-SEQ only) names the
round-1 wells that hold a sample (`1-48`, `1-12,25-36`): samples listing the same lanes with
disjoint wells share one SPLiT-seq library, counted once, and each keeps the cells of its
wells. `feature_type` is optional: Cell Ranger multi's library types (`Gene Expression`,
the default, `Antibody Capture`, `Multiplexing Capture`, `CRISPR Guide Capture`); rows of one
sample with different types are libraries of the same cells, and each library's lanes are
counted together. Every other column is sample metadata that ends up in `obs` of the
aggregate. Relative FASTQ paths resolve against the sheet's folder.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kbagg.errors import KbaggError
from kbagg.feature_types import FEATURE_TYPES, GENE_EXPRESSION, MODALITY
from kbagg.obs_columns import OBS_COLUMNS, OBS_PREFIXES, TECHNOLOGY, written_by_kbagg

REQUIRED_COLUMNS = ("sample", "fastq_1")
LIBRARY_COLUMNS = (TECHNOLOGY, "feature_type")  # per library, not sample metadata
CELL_COLUMN = "cell"  # per lane: a plate row's cell id (kb's batch file), not sample metadata
# per sample: the SPLiT-seq round-1 wells that hold it (`1-48`), not sample metadata
WELLS_COLUMN = "round1_wells"
_FASTQ_COLUMN = re.compile(r"fastq_([1-9][0-9]*)$")


class SampleSheetError(KbaggError):
    """A problem in the sample sheet; the message names the file, line, sample and column."""


@dataclass(frozen=True)
class SampleSheet:
    path: Path
    lanes: (
        pd.DataFrame
    )  # one row per lane: sample, feature_type, fastq_1 ... fastq_N, technology, cell, line
    samples: pd.DataFrame  # one row per sample, indexed by sample: its metadata
    libraries: pd.DataFrame  # one row per (sample, feature_type): technology
    # SPLiT-seq samples given round-1 wells: sample -> its wells (1-96), ascending
    wells: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # sample -> the sample whose kb count holds its reads: itself, except for the later
    # samples of a SPLiT-seq library that several samples share (its first sample in the sheet)
    counted_with_sample: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.samples.index)

    @property
    def metadata_columns(self) -> list[str]:
        return list(self.samples.columns)

    @property
    def fastq_columns(self) -> list[str]:
        """fastq_1 ... fastq_N: the FASTQ columns of the sheet, in order."""
        return [c for c in self.lanes.columns if _FASTQ_COLUMN.match(c)]

    def _rows(self, sample: str, feature_type: str) -> pd.DataFrame:
        lanes = self.lanes
        return lanes[(lanes["sample"] == sample) & (lanes["feature_type"] == feature_type)]

    def lane_files(self, sample: str, feature_type: str = GENE_EXPRESSION) -> list[tuple[str, ...]]:
        """(fastq_1, ..., fastq_N) of lane 1, lane 2, ... of a library, in sheet order; each
        lane has the files its technology takes (the empty columns left out).

        Parameters
        ----------
        sample
            The sample-sheet sample.
        feature_type
            The library's feature type.
        """
        rows = self._rows(sample, feature_type)[self.fastq_columns]
        return [tuple(v for v in row if pd.notna(v)) for row in rows.itertuples(index=False)]

    def lane_pairs(self, sample: str, feature_type: str = GENE_EXPRESSION) -> list[tuple[str, ...]]:
        """The files of each lane (`lane_files`; pairs for two-file technologies)."""
        return self.lane_files(sample, feature_type)

    def fastqs(self, sample: str, feature_type: str = GENE_EXPRESSION) -> list[str]:
        """The files of lane 1, then lane 2, ...: the order `kb count` expects."""
        return [path for lane in self.lane_files(sample, feature_type) for path in lane]

    def cells(self, sample: str, feature_type: str = GENE_EXPRESSION) -> list[str]:
        """The cell id of each lane (plate technologies with kb's batch file), sheet order."""
        return list(self._rows(sample, feature_type)[CELL_COLUMN])

    def round1_wells(self, sample: str) -> tuple[int, ...]:
        """The round-1 wells (1-96) of a SPLiT-seq sample; () when the sheet gives none (all
        of its library's cells are the sample's).

        Parameters
        ----------
        sample
            The sample-sheet sample.
        """
        return self.wells.get(sample, ())

    def counted_with(self, sample: str) -> str:
        """The sample whose `kb count` holds `sample`'s reads: `sample` itself, or the first
        sample (in the sheet) of the SPLiT-seq library `sample` shares with others.

        Parameters
        ----------
        sample
            The sample-sheet sample.
        """
        return self.counted_with_sample.get(sample, sample)

    def technology(self, sample: str, feature_type: str = GENE_EXPRESSION) -> str:
        return self.libraries.loc[(sample, feature_type), "technology"]

    def feature_libraries(self, sample: str) -> list[str]:
        """The feature types of `sample`'s libraries besides gene expression, sheet order."""
        types = self.libraries.loc[sample].index
        return [t for t in types if t != GENE_EXPRESSION]

    def modalities(self, sample: str) -> list[str]:
        """rna, then the modality of each feature library (prot, hashtag, crispr)."""
        return ["rna", *(MODALITY[t] for t in self.feature_libraries(sample))]

    @property
    def has_features(self) -> bool:
        return bool(
            (self.libraries.index.get_level_values("feature_type") != GENE_EXPRESSION).any()
        )

    def check_obs_columns(self, label: str, reserved: Iterable[str] | None = None) -> None:
        """Metadata columns become obs columns: none may take the name of the label column
        (config aggregate.label) or of a column kbagg writes itself, and neither may the
        label.

        Parameters
        ----------
        label
            The label column (config aggregate.label).
        reserved
            The column names kbagg writes; None: the registry (`kbagg.obs_columns`), whose
            message says what kbagg writes there.
        """
        if reserved is None:
            written = written_by_kbagg
            listed = ", ".join([*OBS_COLUMNS, *(f"{p}*" for p in OBS_PREFIXES)])
        else:
            names = tuple(reserved)
            written = dict.fromkeys(names, "a column of that name").get
            listed = ", ".join(names)
        if (what := written(label)) is not None:
            raise KbaggError(
                f"config aggregate.label '{label}': kbagg writes an obs column of that name "
                f"itself ({what}; kbagg writes {listed}); choose another label"
            )
        for column in self.metadata_columns:
            if column == label:
                raise SampleSheetError(
                    f"sample sheet {self.path}: metadata column '{column}' would replace the obs "
                    f"column of that name set by config aggregate.label; rename the column"
                )
            if (what := written(column)) is not None:
                raise SampleSheetError(
                    f"sample sheet {self.path}: metadata column '{column}' would replace the obs "
                    f"column '{column}' kbagg writes ({what}); rename the column"
                )

    def metadata(self) -> pd.DataFrame:
        """One row per sample with a `sample` column and the metadata columns."""
        return self.samples[self.metadata_columns].reset_index()

    def obs_metadata(self) -> pd.DataFrame:
        """`metadata` plus a `technology` column: the technology of each sample's
        gene-expression library as the sheet (or the config default) gives it, so a mixed
        sheet's aggregate tells droplets from plate cells. The obs metadata of every
        aggregate."""
        table = self.metadata()
        table[TECHNOLOGY] = [self._rna_technology(sample) for sample in table["sample"]]
        return table

    def _rna_technology(self, sample: str) -> str:
        types = self.libraries.loc[sample].index
        return self.technology(sample, GENE_EXPRESSION if GENE_EXPRESSION in types else types[0])


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a TSV as strings (so `01` stays `01`), with empty cells as missing."""
    path = Path(path)
    where = f"sample sheet {path}"
    if not path.exists():
        raise SampleSheetError(f"{where}: file not found")
    if not path.is_file():
        raise SampleSheetError(f"{where}: not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not a column name
    except UnicodeDecodeError as error:
        raise SampleSheetError(
            f"{where}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SampleSheetError(
            f"{where}: the file is empty; it needs a header line (sample, fastq_1, fastq_2, ...) "
            "and one row per lane"
        )
    header = lines[0]
    if "\t" not in header and ("," in header or ";" in header):
        separator = "," if "," in header else ";"
        raise SampleSheetError(
            f"{where}: tab-separated expected, but the header line is separated by "
            f"'{separator}' ({header.strip()[:60]}); save the sheet as TSV"
        )
    columns = [c.strip() for c in header.split("\t")]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise SampleSheetError(f"{where}: column(s) {', '.join(duplicated)} appear more than once")
    if "" in columns:
        raise SampleSheetError(
            f"{where}: column {columns.index('') + 1} of the header is empty; name every column"
        )
    table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, comment=None)
    table.columns = columns
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
        raise SampleSheetError(
            f"{where}: only a header line, no rows; add one row per lane (sample, fastq_1, "
            "fastq_2, ...)"
        )
    if validate_rows is not None:
        validate_rows(table)

    table["line"] = range(2, len(table) + 2)  # 1-based file lines, header is line 1
    if "technology" not in table.columns:
        table["technology"] = pd.NA
    table["technology"] = table["technology"].fillna(default_technology)
    if "feature_type" not in table.columns:
        table["feature_type"] = pd.NA
    table["feature_type"] = table["feature_type"].fillna(GENE_EXPRESSION)
    _check_feature_types(table, where)
    fastq_columns = _check_fastq_columns(table, where)
    if CELL_COLUMN not in table.columns:
        table[CELL_COLUMN] = pd.NA
    _check_cells(table, where)
    if WELLS_COLUMN not in table.columns:
        table[WELLS_COLUMN] = pd.NA
    wells = _check_wells(table, where)

    workdir = Path(workdir or os.getcwd()).resolve()
    produced = {Path(p).resolve() for p in will_exist}
    for column in fastq_columns:
        resolved = [
            _resolve_fastq(row, column, path, produced) if pd.notna(row[column]) else None
            for _, row in table.iterrows()
        ]
        table[f"{column}_resolved"] = resolved
        table[column] = [
            _relative_if_inside(p, workdir) if p is not None else pd.NA for p in resolved
        ]
    _check_duplicate_lanes(table, where, fastq_columns)
    counted_with = _shared_libraries(table, where, fastq_columns, wells)
    samples = _per_sample_table(table, where)
    libraries = _per_library_table(table, where)
    columns = ["sample", "feature_type", *fastq_columns, "technology", CELL_COLUMN]
    lanes = table[[*columns, WELLS_COLUMN, "line"]].reset_index(drop=True)
    return SampleSheet(
        path=path,
        lanes=lanes,
        samples=samples,
        libraries=libraries,
        wells=wells,
        counted_with_sample=counted_with,
    )


def _check_fastq_columns(table: pd.DataFrame, where: str) -> list[str]:
    """fastq_1 ... fastq_N with no gap, and each row filled up to the number of files its
    technology takes (`kbagg.kb.technology.check_n_files`): no fewer, no more."""
    from kbagg.kb.technology import check_n_files

    numbers = sorted(int(m.group(1)) for c in table.columns if (m := _FASTQ_COLUMN.match(c)))
    gaps = [n for n in range(1, max(numbers) + 1) if n not in numbers]
    if gaps:
        raise SampleSheetError(
            f"{where}: column fastq_{gaps[0]} is missing but fastq_{max(numbers)} is there; "
            "number the FASTQ columns fastq_1, fastq_2, ... without a gap"
        )
    columns = [f"fastq_{n}" for n in numbers]
    for _, row in table.iterrows():
        context = f"{where}, line {row['line']}, sample '{row['sample']}'"
        filled = [pd.notna(row[c]) for c in columns]
        given = sum(filled)
        if given and not all(filled[:given]):
            empty = columns[filled.index(False)]
            raise SampleSheetError(
                f"{context}, column {empty}: empty, but a later FASTQ column is filled; give "
                "the files of a lane in fastq_1, fastq_2, ... in kb's order"
            )
        allowed = _allowed(row["technology"])
        if allowed is None:
            continue  # an unknown technology: config.check_technologies names it
        try:
            check_n_files(row["technology"], given, context)
        except KbaggError as error:
            needed = max(allowed)
            if needed > len(columns):  # the sheet lacks the column, not just the value
                missing = ", ".join(f"fastq_{n}" for n in range(len(columns) + 1, needed + 1))
                raise SampleSheetError(
                    f"{where}: missing required column(s) {missing} ({error}); found columns: "
                    f"{', '.join(c for c in table.columns if c != 'line')}"
                ) from None
            raise SampleSheetError(str(error)) from None
    return columns


def _known(name: str):
    """The technology `name`, None when kb does not know it (reported by the config check)."""
    from kbagg.kb.technology import technology

    try:
        return technology(name)
    except KbaggError:
        return None


def _allowed(name: str) -> tuple[int, ...] | None:
    found = _known(name)
    return None if found is None else found.allowed_n_files


def _check_cells(table: pd.DataFrame, where: str) -> None:
    """A plate row counted from kb's batch file names its cell, once per sample; other rows
    (droplet lanes, Smart-seq3 whose cells are its index reads) leave `cell` empty."""
    seen: dict[tuple[str, str, str], int] = {}
    for _, row in table.iterrows():
        context = f"{where}, line {row['line']}, sample '{row['sample']}', column {CELL_COLUMN}"
        tech = _known(row["technology"])
        if tech is None:
            continue  # config.check_technologies names it
        cell = row[CELL_COLUMN]
        if tech.batch and pd.isna(cell):
            raise SampleSheetError(
                f"{context}: empty, but technology '{row['technology']}' is plate-based with one "
                "cell per FASTQ set; give each row of the plate its cell id (e.g. the well, A01)"
            )
        if not tech.batch and pd.notna(cell):
            why = (
                "its cells come from the I1/I2 index reads"
                if tech.plate
                else "its cells come from the barcodes in the reads"
            )
            raise SampleSheetError(
                f"{context}: '{cell}' given, but technology '{row['technology']}' takes no cell "
                f"id per row ({why}); leave it empty"
            )
        if pd.notna(cell):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cell):
                raise SampleSheetError(
                    f"{context}: '{cell}' is not a cell id of letters, digits, _ . - (it names "
                    "a row of kb's batch file)"
                )
            key = (row["sample"], row["feature_type"], cell)
            if key in seen:
                raise SampleSheetError(
                    f"{context}: cell '{cell}' of sample '{row['sample']}' is on line "
                    f"{seen[key]} too; a plate's cell ids are distinct"
                )
            seen[key] = row["line"]


def _check_feature_types(table: pd.DataFrame, where: str) -> None:
    """Known library types only, and a gene-expression library for every sample."""
    for _, row in table.iterrows():
        if row["feature_type"] not in FEATURE_TYPES:
            raise SampleSheetError(
                f"{where}, line {row['line']}, sample '{row['sample']}', column feature_type: "
                f"'{row['feature_type']}' is not one of "
                + ", ".join(f"'{t}'" for t in FEATURE_TYPES)
            )
    with_gex = set(table.loc[table["feature_type"] == GENE_EXPRESSION, "sample"])
    for _, row in table[~table["sample"].isin(with_gex)].iterrows():
        raise SampleSheetError(
            f"{where}, line {row['line']}: sample '{row['sample']}' has a "
            f"'{row['feature_type']}' library but no 'Gene Expression' library; feature counts "
            "are kept for the cells called on gene expression, so add its gene-expression FASTQs"
        )


def _relative_if_inside(path: Path, workdir: Path) -> str:
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)


def _resolve_fastq(row: pd.Series, column: str, sheet: Path, produced: set[Path]) -> Path:
    value = row[column]
    context = f"sample sheet {sheet}, line {row['line']}, sample '{row['sample']}', column {column}"
    if pd.isna(value):
        raise SampleSheetError(f"{context}: empty")
    resolved = Path(os.path.normpath(sheet.resolve().parent / Path(value).expanduser()))
    if resolved.exists() and not resolved.is_file():
        raise SampleSheetError(f"{context}: not a file: {value} (resolved to {resolved})")
    if not resolved.is_file() and resolved not in produced:
        raise SampleSheetError(f"{context}: file not found: {value} (resolved to {resolved})")
    return resolved


def _file_identity(path: Path) -> tuple:
    """The same file under two names (symlink, hard link, ../) has one identity."""
    try:
        stat = path.stat()
    except OSError:  # a file a rule will write: its resolved path is its identity
        return ("path", str(path.resolve()))
    return ("inode", stat.st_dev, stat.st_ino)


def _check_duplicate_lanes(table: pd.DataFrame, where: str, fastq_columns: list[str]) -> None:
    """Every FASTQ is used once: not as two reads of a lane, not in two lanes or samples."""
    seen: dict[tuple, tuple[int, str, str]] = {}
    for _, row in table.iterrows():
        used = [c for c in fastq_columns if row[f"{c}_resolved"] is not None]
        identities = [_file_identity(row[f"{c}_resolved"]) for c in used]
        for i, first in enumerate(identities):
            if first in identities[i + 1 :]:
                other = used[identities.index(first, i + 1)]
                raise SampleSheetError(
                    f"{where}, line {row['line']}, sample '{row['sample']}': {used[i]} and "
                    f"{other} are the same file ({row[used[i]]}); give the barcode read (R1) "
                    "and the cDNA read (R2) of the lane"
                )
        for column in used:
            key = _file_identity(row[f"{column}_resolved"])
            if key in seen and not _may_share(seen[key], row):
                line, sample, other_column = seen[key][:3]
                raise SampleSheetError(
                    f"{where}: the file {row[column]} is used twice: line {line} (sample "
                    f"'{sample}', {other_column}) and line {row['line']} (sample "
                    f"'{row['sample']}', {column}); each FASTQ belongs to one lane"
                    + (
                        " (samples sharing one SPLiT-seq library name their round1_wells)"
                        if _is_splitseq(row["technology"]) and sample != row["sample"]
                        else ""
                    )
                )
            seen.setdefault(key, (row["line"], row["sample"], column, pd.notna(row[WELLS_COLUMN])))


def _is_splitseq(name: str) -> bool:
    tech = _known(name)
    return tech is not None and tech.round1_wells


def _may_share(first: tuple, row: pd.Series) -> bool:
    """Two samples may give the same FASTQ when both name their SPLiT-seq round-1 wells: one
    library holding both (`_shared_libraries` checks the rest)."""
    _, sample, _, first_has_wells = first
    return sample != row["sample"] and first_has_wells and pd.notna(row[WELLS_COLUMN])


def parse_wells(text: str) -> tuple[int, ...]:
    """Round-1 wells as the sheet gives them: numbers and ranges, comma-separated
    (`1-12,25-36`, `7`), each well 1-96; ascending, once each. ValueError says what is wrong.

    Parameters
    ----------
    text
        The `round1_wells` value.
    """
    from kbagg.kb.technology import SPLITSEQ_ROUND1_WELLS

    wells: set[int] = set()
    for item in text.replace(" ", "").split(","):
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", item)
        if match is None:
            raise ValueError(
                f"'{item}' is not a well number or range; give e.g. 1-48 or 1-12,25-36"
            )
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"range '{item}' ends before it starts")
        for well in (first, last):
            if not 1 <= well <= SPLITSEQ_ROUND1_WELLS:
                raise ValueError(
                    f"well {well} is outside 1-{SPLITSEQ_ROUND1_WELLS} (round-1 wells, in "
                    "kb's on-list order)"
                )
        wells.update(range(first, last + 1))
    return tuple(sorted(wells))


def _check_wells(table: pd.DataFrame, where: str) -> dict[str, tuple[int, ...]]:
    """`round1_wells` only on SPLiT-seq gene-expression rows, well-formed, the same on every
    lane of a sample; returns sample -> wells."""
    found: dict[str, tuple[tuple[int, ...], int]] = {}
    for _, row in table.iterrows():
        value = row[WELLS_COLUMN]
        if pd.isna(value):
            continue
        context = f"{where}, line {row['line']}, sample '{row['sample']}', column {WELLS_COLUMN}"
        tech = _known(row["technology"])
        if tech is None:
            continue  # config.check_technologies names it
        if not tech.round1_wells or row["feature_type"] != GENE_EXPRESSION:
            raise SampleSheetError(
                f"{context}: '{value}' given, but only SPLIT-SEQ gene-expression rows have "
                f"round-1 wells (technology '{row['technology']}', {row['feature_type']}); "
                "leave it empty"
            )
        try:
            wells = parse_wells(value)
        except ValueError as error:
            raise SampleSheetError(f"{context}: {error}") from None
        sample = row["sample"]
        if sample in found and found[sample][0] != wells:
            raise SampleSheetError(
                f"{context}: '{value}' differs from line {found[sample][1]}; a sample's lanes "
                "give the same wells"
            )
        found.setdefault(sample, (wells, row["line"]))
    for _, row in table[table["sample"].isin(set(found))].iterrows():
        context = f"{where}, line {row['line']}, sample '{row['sample']}'"
        if row["feature_type"] != GENE_EXPRESSION:
            raise SampleSheetError(
                f"{context}: a {row['feature_type']} library, but the sample is defined by "
                "SPLiT-seq round-1 wells (line "
                f"{found[row['sample']][1]}); kbagg counts no feature library for such a sample"
            )
        if pd.isna(row[WELLS_COLUMN]):
            raise SampleSheetError(
                f"{context}, column {WELLS_COLUMN}: empty, but line {found[row['sample']][1]} "
                "gives the sample's wells; give them on every lane of the sample"
            )
    return {sample: wells for sample, (wells, _) in found.items()}


def _shared_libraries(
    table: pd.DataFrame, where: str, fastq_columns: list[str], wells: dict[str, tuple[int, ...]]
) -> dict[str, str]:
    """Samples giving the same FASTQs share one SPLiT-seq library (`_may_share` allowed it):
    each must list exactly the library's lanes, in the same order, and their wells must not
    overlap. Returns sample -> the library's first sample, for the later samples."""
    lanes: dict[str, list[tuple]] = {}
    first_line: dict[str, int] = {}
    for _, row in table.iterrows():
        files = tuple(
            _file_identity(row[f"{c}_resolved"])
            for c in fastq_columns
            if row[f"{c}_resolved"] is not None
        )
        lanes.setdefault(row["sample"], []).append(files)
        first_line.setdefault(row["sample"], row["line"])
    owner_of_file: dict[tuple, str] = {}
    counted_with: dict[str, str] = {}
    for sample, sample_lanes in lanes.items():
        owners = {owner_of_file[f] for lane in sample_lanes for f in lane if f in owner_of_file}
        if not owners:
            for lane in sample_lanes:
                owner_of_file.update(dict.fromkeys(lane, sample))
            continue
        owner = owners.pop()
        context = f"{where}, line {first_line[sample]}, sample '{sample}'"
        if owners or lanes[owner] != sample_lanes:
            raise SampleSheetError(
                f"{context}: shares FASTQs with sample '{owner}' but not all of its lanes; the "
                "samples of one SPLiT-seq library list the same lanes in the same order"
            )
        counted_with[sample] = owner
        sharing = [owner, *(s for s, o in counted_with.items() if o == owner and s != sample)]
        for other in sharing:
            common = sorted(set(wells[sample]) & set(wells[other]))
            if common:
                raise SampleSheetError(
                    f"{context}, column {WELLS_COLUMN}: well {common[0]} is also sample "
                    f"'{other}''s; the samples of one SPLiT-seq library have disjoint wells"
                )
    return counted_with


def _agreed(lanes: pd.DataFrame, column: str, what: str, where: str):
    distinct = lanes[column].drop_duplicates()
    if len(distinct) > 1:
        detail = "; ".join(
            f"line {line}: {value if pd.notna(value) else '(empty)'}"
            for line, value in zip(lanes["line"], lanes[column], strict=False)
        )
        raise SampleSheetError(
            f"{where}: {what} has conflicting values in column {column} across its lanes "
            f"({detail}); they must agree"
        )
    return distinct.iloc[0]


def _per_sample_table(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Collapse lanes to samples; metadata must agree across all of a sample's lanes."""
    fastqs = [c for c in table.columns if _FASTQ_COLUMN.match(c.removesuffix("_resolved"))]
    per_lane = (*fastqs, CELL_COLUMN, WELLS_COLUMN, "line")
    columns = [c for c in table.columns if c not in (*per_lane, *LIBRARY_COLUMNS, "sample")]
    rows = {
        sample: {c: _agreed(lanes, c, f"sample '{sample}'", where) for c in columns}
        for sample, lanes in table.groupby("sample", sort=False)
    }
    # Built row by row: from_dict(orient="index") drops the index when there are no columns.
    samples = pd.DataFrame(list(rows.values()), index=list(rows), columns=columns)
    samples.index.name = "sample"
    return samples


def _per_library_table(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """One row per (sample, feature_type); a library's lanes must agree on the technology."""
    rows = {
        (sample, feature_type): {
            "technology": _agreed(
                lanes, "technology", f"sample '{sample}' ({feature_type} library)", where
            )
        }
        for (sample, feature_type), lanes in table.groupby(["sample", "feature_type"], sort=False)
    }
    libraries = pd.DataFrame.from_dict(rows, orient="index")
    libraries.index = pd.MultiIndex.from_tuples(libraries.index, names=["sample", "feature_type"])
    return libraries
