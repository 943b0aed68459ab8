"""Feature references (antibodies, hashtags, CRISPR guides) and their `kb ref --workflow kite`.

Three file formats are read into one table (`FEATURE_COLUMNS` + the file line of each row):

- 10x's feature-reference CSV, header ``id,name,read,pattern,sequence,feature_type`` (more
  columns, e.g. ``target_gene_id``, are kept; ``#`` lines are comments);
- kite's CSV, header ``Feature Barcode names,Feature Barcode sequences``;
- kb's TSV, no header, ``sequence<TAB>name`` (kb 0.30.2 reads this order only; the other
  fails in kb with "Encountered non-ATCG basepairs").

The last two have no feature type: the caller gives it (the sample sheet's ``feature_type``).

What kb/kallisto need, read from kb-python 0.30.2 (`kb_python.ref.generate_kite_fasta`,
`ref_kite`) and measured (tests/test_features_kb.py):

- kb writes every barcode plus its Hamming-1 variants (dropping variants that collide with
  another barcode or its variants) and indexes them with k = the shortest barcode length
  (minus one when even). Barcodes of one feature type need NOT have one length: kb only
  warns, and reads of 15- and 21-base barcodes in one index were all counted exactly. What
  breaks is a barcode that sits inside a longer one (up to one mismatch): its reads share
  k-mers with the longer barcode's targets and were all counted for the longer one. That
  is the error here (`check_barcode_containment`). Different feature types get different
  indices, so they never interfere.
- kb names index targets after the TSV's second column and splits FASTA headers at
  whitespace, so kbagg gives kb the feature `id`, which must be unique and free of
  whitespace, commas and quotes (Cell Ranger's rule for ids).
- kallisto's k is at most 31, so barcodes may be at most 32 bases.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.errors import KbaggError
from kbagg.feature_types import (  # noqa: F401  (re-exported)
    ANTIBODY_CAPTURE,
    BARCODED_FEATURE_TYPES,
    CRISPR_GUIDE_CAPTURE,
    FEATURE_TYPES,
    GENE_EXPRESSION,
    MODALITY,
    MULTIPLEXING_CAPTURE,
)
from kbagg.reference.build import run_ref_into_place

TENX_COLUMNS = ("id", "name", "read", "pattern", "sequence", "feature_type")
KITE_COLUMNS = ("feature barcode names", "feature barcode sequences")
FEATURE_COLUMNS = (*TENX_COLUMNS, "line")
MAX_BARCODE_BASES = 32  # kallisto's largest k is 31; kb uses k = length - 1 for even lengths
BAD_ID = re.compile(r"[\s,'\"]")
NOT_ACGT = re.compile(r"[^ACGT]")


class FeatureReferenceError(KbaggError):
    """A problem in a feature reference; the message names the file and line."""


def check_feature_type(feature_type: str, where: str, allow_gene_expression: bool = False) -> str:
    """`feature_type` if it is one of Cell Ranger multi's names, else a FeatureReferenceError."""
    allowed = FEATURE_TYPES if allow_gene_expression else BARCODED_FEATURE_TYPES
    if feature_type not in allowed:
        raise FeatureReferenceError(
            f"{where}: feature_type '{feature_type}' is not one of "
            + ", ".join(f"'{t}'" for t in allowed)
        )
    return feature_type


def read_feature_reference(
    path: str | Path, default_feature_type: str | None = None
) -> pd.DataFrame:
    """Read and check a feature reference in any of the three formats.

    Parameters
    ----------
    path
        10x feature-reference CSV, kite CSV or kb TSV (see the module docstring).
    default_feature_type
        Feature type of every row of a file without a ``feature_type`` column (kite CSV,
        kb TSV); required for those, ignored for 10x CSVs.

    Returns
    -------
    One row per feature with columns ``id, name, read, pattern, sequence, feature_type,
    line`` (``line``: 1-based line in the file) plus any extra 10x columns, in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureReferenceError(f"feature reference {path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        lines = [(n, line) for n, line in enumerate(handle, start=1)]
    content = [(n, line) for n, line in lines if line.strip() and not line.startswith("#")]
    if not content:
        raise FeatureReferenceError(f"feature reference {path}: empty file (no features)")
    first = content[0][1]
    if "\t" in first or "," not in first:
        table = _read_kb_tsv(path, content, default_feature_type)
    else:
        table = _read_csv(path, content, default_feature_type)
    _check_table(path, table)
    return table


def _read_kb_tsv(path: Path, content, default_feature_type) -> pd.DataFrame:
    feature_type = _default_type(path, default_feature_type, "kb's sequence<TAB>name TSV")
    rows = []
    for n, line in content:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise FeatureReferenceError(
                f"feature reference {path}: line {n}: expected 2 tab-separated columns "
                f"(sequence<TAB>name, kb's TSV), found {len(fields)}: {line.strip()!r}"
            )
        sequence, name = (f.strip() for f in fields)
        if NOT_ACGT.search(sequence) and not NOT_ACGT.search(name):
            raise FeatureReferenceError(
                f"feature reference {path}: line {n}: the columns are swapped: kb's TSV is "
                f"sequence<TAB>name (found '{sequence}<TAB>{name}')"
            )
        rows.append((name, name, "R2", "", sequence, feature_type, n))
    return pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))


def _read_csv(path: Path, content, default_feature_type) -> pd.DataFrame:
    lines = dict(content)
    numbers = iter(n for n, _ in content)
    reader = csv.reader(line for _, line in content)
    header = [h.strip() for h in next(reader)]
    header_line = next(numbers)
    lowered = [h.lower() for h in header]
    kite = all(c in lowered for c in KITE_COLUMNS)
    if not kite:
        missing = [c for c in TENX_COLUMNS if c not in header]
        if missing:
            raise FeatureReferenceError(
                f"feature reference {path}: line {header_line}: missing column(s) "
                f"{', '.join(missing)}; a 10x feature reference has the header "
                f"{','.join(TENX_COLUMNS)} (kite's has '{KITE_COLUMNS[0]},{KITE_COLUMNS[1]}', "
                "kb's TSV is sequence<TAB>name without a header)"
            )
    rows = []
    for fields, n in zip(reader, numbers, strict=True):
        if len(fields) != len(header):
            raise FeatureReferenceError(
                f"feature reference {path}: line {n}: {len(fields)} fields, the header has "
                f"{len(header)}: {lines[n].strip()!r}"
            )
        rows.append([f.strip() for f in fields] + [n])
    if not rows:
        raise FeatureReferenceError(
            f"feature reference {path}: only a header, no features (line {header_line})"
        )
    table = pd.DataFrame(rows, columns=[*header, "line"])
    if kite:
        feature_type = _default_type(path, default_feature_type, "kite's CSV")
        names = table[header[lowered.index(KITE_COLUMNS[0])]]
        sequences = table[header[lowered.index(KITE_COLUMNS[1])]]
        table = pd.DataFrame(
            {
                "id": names,
                "name": names,
                "read": "R2",
                "pattern": "",
                "sequence": sequences,
                "feature_type": feature_type,
                "line": table["line"],
            }
        )
    extra = [c for c in table.columns if c not in FEATURE_COLUMNS]
    return table[[*FEATURE_COLUMNS, *extra]]


def _default_type(path: Path, feature_type: str | None, fmt: str) -> str:
    where = f"feature reference {path}"
    if feature_type is None:
        raise FeatureReferenceError(
            f"{where}: {fmt} has no feature_type column; give the feature type "
            "(the sample sheet's feature_type) or use 10x's feature-reference CSV"
        )
    return check_feature_type(feature_type, where)


def _check_table(path: Path, table: pd.DataFrame) -> None:
    where = f"feature reference {path}"
    for row in table.itertuples(index=False):
        at = f"{where}: line {row.line}"
        if not row.id:
            raise FeatureReferenceError(f"{at}: empty id")
        if BAD_ID.search(row.id):
            raise FeatureReferenceError(
                f"{at}: id '{row.id}' contains whitespace, a comma or a quote (kb names index "
                "targets after it)"
            )
        if not row.sequence or NOT_ACGT.search(row.sequence):
            raise FeatureReferenceError(
                f"{at}: sequence '{row.sequence}' of feature '{row.id}' must be A, C, G, T only"
            )
        if len(row.sequence) > MAX_BARCODE_BASES:
            raise FeatureReferenceError(
                f"{at}: sequence of feature '{row.id}' has {len(row.sequence)} bases; kallisto "
                f"indexes barcodes of at most {MAX_BARCODE_BASES}"
            )
        check_feature_type(row.feature_type, at)
    for column in ("id", "sequence"):
        repeated = table[table[column].duplicated(keep=False)]
        if len(repeated):
            value = repeated[column].iloc[0]
            lines = repeated.loc[repeated[column] == value, "line"].tolist()
            raise FeatureReferenceError(
                f"{where}: line {lines[1]}: duplicate {column} '{value}' (also on line {lines[0]})"
            )
    for _, rows in table.groupby("feature_type", sort=False):
        check_barcode_containment(rows, where)


def check_barcode_containment(rows: pd.DataFrame, where: str) -> None:
    """No barcode lies within one mismatch of a stretch of a longer barcode of `rows`.

    kb's kite index shares such a barcode's k-mers with the longer barcode's targets, and
    kallisto then counts its reads for the longer one (measured: all of them).
    """
    lengths = rows["sequence"].str.len()
    for short_len in sorted(lengths.unique()):
        longer = rows[lengths > short_len]
        if longer.empty:
            break
        long_bases = _bases(longer["sequence"])
        windows = np.lib.stride_tricks.sliding_window_view(long_bases, short_len, axis=1)
        for row in rows[lengths == short_len].itertuples(index=False):
            short = _bases([row.sequence])[0]
            mismatches = (windows != short).sum(axis=2)  # longer x offsets
            hits = np.flatnonzero((mismatches <= 1).any(axis=1))
            if len(hits):
                other = longer.iloc[hits[0]]
                raise FeatureReferenceError(
                    f"{where}: line {row.line}: barcode of '{row.id}' ({short_len} bases) is "
                    f"inside that of '{other['id']}' (line {other['line']}, "
                    f"{len(other['sequence'])} bases) up to one mismatch; kb's kite index "
                    f"would count the reads of '{row.id}' for '{other['id']}'"
                )


def _bases(sequences) -> np.ndarray:
    """Equal-length sequences as a (n, length) uint8 array."""
    return np.frombuffer("".join(sequences).encode(), dtype=np.uint8).reshape(len(sequences), -1)


def features_of_type(table: pd.DataFrame, feature_type: str, where: str) -> pd.DataFrame:
    """The rows of one feature type; an error naming `where` when there are none."""
    check_feature_type(feature_type, where)
    rows = table[table["feature_type"] == feature_type]
    if rows.empty:
        present = ", ".join(f"'{t}'" for t in table["feature_type"].unique())
        raise FeatureReferenceError(
            f"{where}: no '{feature_type}' features (the reference has {present})"
        )
    return rows.reset_index(drop=True)


def write_kb_features(features: pd.DataFrame, output: str | Path) -> Path:
    """Write kb's kite TSV (``sequence<TAB>id``, no header) atomically; returns `output`."""
    text = "".join(f"{s}\t{i}\n" for s, i in zip(features["sequence"], features["id"], strict=True))
    with atomic_output(output) as tmp:
        tmp.write_text(text)
    return Path(output)


def feature_index_outputs(outdir: str | Path, feature_type: str) -> dict[str, str]:
    """Files of one feature type's kite reference, under `outdir`/<modality>/."""
    folder = Path(outdir) / MODALITY[check_feature_type(feature_type, "feature_index_outputs")]
    return {
        "features": str(folder / "features.tsv"),
        "index": str(folder / "index.idx"),
        "t2g": str(folder / "t2g.txt"),
        "mismatch_fasta": str(folder / "mismatch.fa"),
    }


def build_feature_index(
    reference: str | Path,
    feature_type: str,
    outputs: dict[str, str],
    *,
    threads: int = 1,
) -> pd.DataFrame:
    """`kb ref --workflow kite` for one feature type; outputs appear only when all exist.

    Parameters
    ----------
    reference
        Feature reference in any format `read_feature_reference` reads (a file without a
        ``feature_type`` column is taken to hold `feature_type` features only).
    feature_type
        Which features to index (one index per feature type).
    outputs
        Paths for ``features`` (kb's TSV, written first), ``index``, ``t2g`` and
        ``mismatch_fasta`` (the barcodes and Hamming-1 variants kb indexes); see
        `feature_index_outputs`.
    threads
        kb ref's ``-t``.

    Returns
    -------
    The features of `feature_type` (rows of `read_feature_reference`).
    """
    table = read_feature_reference(reference, default_feature_type=feature_type)
    features = features_of_type(table, feature_type, f"feature reference {reference}")
    tsv = write_kb_features(features, outputs["features"])
    staged = {k: outputs[k] for k in ("index", "t2g", "mismatch_fasta")}
    run_ref_into_place(
        lambda staging: ["--tmp", str(staging / "tmp"), str(tsv)],
        staged,
        "kite",
        label=f"feature reference {MODALITY[feature_type]}",
        threads=threads,
    )
    return features
