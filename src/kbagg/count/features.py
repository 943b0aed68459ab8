"""`kb count --workflow kite` for one feature-barcode library, restricted to the GEX cells.

Which workflow, from kb-python 0.30.2's own code:

- ``kite:10xFB`` for technology ``10xv3`` (and ``10xFB``, kb's hidden name of the same
  feature-barcoding read layout, run as ``-x 10xv3``): kb accepts ``kite:10xFB`` with
  ``-x 10XV3`` only (`kb_python.main`: "`kite:10xFB` workflow is only supported with
  technology `10XV3`"). Barcodes are corrected against the feature-barcode on-list
  (ngs_tools' ``10x_fb_whitelist``; kbagg passes it decompressed, see
  `kbagg.kb.technology.write_onlist("10xFB", ...)`) and then projected to the
  gene-expression space through `feature_barcode_translation` (``bustools project``).
  10x 3' v3 capture-sequence libraries (TotalSeq-B/C antibodies, CellPlex, CRISPR guide
  capture) need it: on real data plain ``kite`` matched 2 of 2,708 barcodes to the called
  cells, ``kite:10xFB`` 2,587.
- plain ``kite`` for every other technology, and for 10x v3 libraries captured by poly(dT)
  (TotalSeq-A: same bead oligo, so the same barcode as GEX; pass ``translate=False``).
  kb has no translation for 10x 3' v4 (``10xv4``), whose capture-sequence libraries use one
  in Cell Ranger: with kb 0.30.2 their barcodes do not match the GEX cells, which
  `count_features` reports as an error rather than returning an empty matrix.

The result is the feature matrix of exactly the cells called on gene expression (the
barcodes of the sample's filtered GEX h5ad, in that order); cells with no feature counts
get zero rows, feature barcodes that are not cells are dropped.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem

from kbagg.atomic import atomic_output
from kbagg.count.attempt import count_in_attempt
from kbagg.count.kite import (  # noqa: F401  (re-exported)
    TRANSLATED_TECHNOLOGIES,
    FeatureCountError,
    KiteMode,
    kite_mode,
)
from kbagg.errors import KbaggError
from kbagg.kb.run import KbError, read_json_if_present
from kbagg.reference.features import (
    FEATURE_TYPES,
    GENE_EXPRESSION,
    check_feature_type,
    features_of_type,
    read_feature_reference,
)
from kbagg.schema import schema_default

KB_LARGE_FILES = ("10x_feature_barcode_map.txt", "10x_fb_whitelist.txt")  # ~230 + 115 MB


@dataclass(frozen=True)
class FeatureCountJob:
    """One feature-barcode library of one sample.

    ``onlist`` is the decompressed on-list of ``kite_mode(...).onlist_technology`` (for
    ``kite:10xFB`` the feature-barcode space one); None lets kb copy its own (115 MB per
    run for 10x v3). ``reference`` (a feature reference `read_feature_reference` reads)
    gives the output's ``var['feature_name']``; without it the name is the id.
    """

    sample: str
    feature_type: str
    fastqs: list[str]
    index: str
    t2g: str
    technology: str
    kb_dir: Path
    output_h5ad: Path | None  # None: count_features returns the matrix without writing it
    gex_filtered_h5ad: Path | None  # None: the sample has no gene-expression library
    reference: str | None = None
    translate: bool | None = None
    onlist: str | None = None
    threads: int = 1
    memory_mb: int = field(
        default_factory=lambda: schema_default("resources", "kb_count", "mem_mb")
    )
    extra_args: list[str] = field(default_factory=list)


def feature_count_args(job: FeatureCountJob, outdir: Path, tmpdir: Path) -> list[str]:
    """`kb count` arguments for `job`, writing into `outdir` with scratch in `tmpdir`."""
    if len(job.fastqs) % 2 or not job.fastqs:
        raise FeatureCountError(
            f"sample '{job.sample}' ({job.feature_type}): FASTQs must come in R1/R2 pairs: "
            f"{job.fastqs}"
        )
    mode = kite_mode(job.technology, job.translate)
    # bustools sort allocates its whole -m buffer: feature libraries are small, and a 2 GB
    # buffer made each of the four sorts take 13 s instead of 1 s on 5,000 reads.
    memory = f"{max(64, int(job.memory_mb) // 4)}M"
    args = ["count", "-i", job.index, "-g", job.t2g, "-x", mode.technology]
    args += ["--workflow", mode.workflow, "-o", str(outdir), "--tmp", str(tmpdir)]
    args += ["-t", str(job.threads), "-m", memory, "--h5ad", "--overwrite"]
    if job.onlist:
        args += ["-w", job.onlist]
    return [*args, *job.extra_args, *job.fastqs]


def check_feature_libraries(libraries: pd.DataFrame) -> None:
    """Every sample with a feature library also has a gene-expression library.

    Parameters
    ----------
    libraries
        One row per library (or lane): ``sample``, ``feature_type`` and optionally
        ``line`` (the sample sheet's line, named in the error).
    """
    types = libraries["feature_type"].fillna(GENE_EXPRESSION)
    unknown = libraries[~types.isin(FEATURE_TYPES)]
    if len(unknown):
        row = unknown.iloc[0]
        at = f"line {row['line']}: " if "line" in unknown.columns else ""
        raise FeatureCountError(
            f"sample sheet {at}sample '{row['sample']}': feature_type '{row['feature_type']}' "
            "is not one of " + ", ".join(f"'{t}'" for t in FEATURE_TYPES)
        )
    with_gex = set(libraries.loc[types == GENE_EXPRESSION, "sample"])
    orphans = libraries[(types != GENE_EXPRESSION) & ~libraries["sample"].isin(with_gex)]
    if len(orphans):
        row = orphans.iloc[0]
        at = f"line {row['line']}: " if "line" in orphans.columns else ""
        raise FeatureCountError(
            f"sample sheet {at}sample '{row['sample']}' has a '{row['feature_type']}' library "
            "but no 'Gene Expression' library; feature counts are kept for the cells called "
            "on gene expression, so add the sample's gene-expression FASTQs"
        )


def called_cells(gex_filtered_h5ad: str | Path) -> pd.Index:
    """The barcodes (obs_names) of a filtered gene-expression h5ad, without reading X."""
    with h5py.File(gex_filtered_h5ad, "r") as f:
        obs = f["obs"]
        index_key = obs.attrs["_index"]
        return pd.Index(read_elem(obs[index_key]), name="barcode")


def restrict_to_cells(
    counts: ad.AnnData, cells: pd.Index, feature_ids: pd.Index | None = None
) -> ad.AnnData:
    """`counts` (barcodes x features) reindexed to `cells` and `feature_ids` (default: its
    own features); cells and features it lacks get zeros."""
    feature_ids = counts.var_names if feature_ids is None else pd.Index(feature_ids)
    matrix = _selector(counts.obs_names, cells) @ sp.csr_matrix(counts.X)
    matrix = (matrix @ _selector(counts.var_names, feature_ids).T).astype(counts.X.dtype)
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    obs = pd.DataFrame(index=pd.Index(cells, name="barcode"))
    var = pd.DataFrame(index=pd.Index(feature_ids, name=counts.var_names.name))
    return ad.AnnData(matrix, obs=obs, var=var)


def _selector(have: pd.Index, want: pd.Index) -> sp.csr_matrix:
    """0/1 matrix (len(want) x len(have)) picking `want` out of `have`; absent: zero row."""
    positions = have.get_indexer(want)
    found = np.flatnonzero(positions >= 0)
    return sp.csr_matrix(
        (np.ones(len(found), dtype=np.int8), (found, positions[found])),
        shape=(len(want), len(have)),
    )


def count_features(job: FeatureCountJob) -> ad.AnnData:
    """Run kb on the library, keep the GEX cells, write ``job.output_h5ad`` atomically
    (unless it is None).

    Returns
    -------
    Cells x features: ``obs_names`` the GEX cells in their order, ``var_names`` the feature
    ids (reference order when ``job.reference`` is given) with ``feature_name`` and
    ``feature_type``; X as kb wrote it (UMI counts). ``uns['feature_counts']`` holds the
    kb workflow, the feature barcodes kb counted, how many are GEX cells and the fraction
    of UMIs in them.
    """
    check_feature_type(job.feature_type, f"sample '{job.sample}'")
    if job.gex_filtered_h5ad is None:
        raise FeatureCountError(
            f"sample '{job.sample}' has a '{job.feature_type}' library but no gene-expression "
            "library to take the cells from"
        )
    if not Path(job.gex_filtered_h5ad).is_file():
        raise FeatureCountError(
            f"sample '{job.sample}': the gene-expression cells {job.gex_filtered_h5ad} do not "
            "exist; count the sample's gene-expression library first"
        )
    mode = kite_mode(job.technology, job.translate)
    cells = called_cells(job.gex_filtered_h5ad)
    raw = run_kite(job)
    var = _feature_var(job, raw.var_names)
    features = restrict_to_cells(raw, cells, var.index)
    features.var = var
    in_cells = int(np.count_nonzero(raw.obs_names.isin(cells)))
    total = float(raw.X.sum())
    if total > 0 and in_cells == 0:
        raise FeatureCountError(
            f"sample '{job.sample}' ({job.feature_type}): none of the {raw.n_obs:,} feature "
            f"barcodes is one of the {len(cells):,} gene-expression cells; check the technology "
            f"and translation (kb ran --workflow {mode.workflow})"
        )
    features.uns["feature_counts"] = {
        "workflow": mode.workflow,
        "barcodes_counted": raw.n_obs,
        "barcodes_in_cells": in_cells,
        "umi_fraction_in_cells": float(features.X.sum()) / total if total else 0.0,
    }
    print(
        f"[{job.sample} {job.feature_type}] {in_cells:,} of {raw.n_obs:,} feature barcodes are "
        f"gene-expression cells ({len(cells):,} cells)",
        file=sys.stderr,
    )
    if job.output_h5ad is not None:
        with atomic_output(job.output_h5ad) as tmp:
            features.write_h5ad(tmp)
    return features


def run_kite(job: FeatureCountJob, log=print) -> ad.AnnData:
    """`kb count` in a private attempt folder under the library's lock, renamed to
    ``kb_dir`` once the matrix exists (`kbagg.count.attempt.count_in_attempt`).

    Returns kb's unfiltered matrix (all barcodes x features). kb's 10x barcode map and
    on-list copy (together ~350 MB per run) are deleted.
    """
    kb_dir = Path(job.kb_dir)

    def check(attempt: Path, error: KbError | None) -> None:
        info = read_json_if_present(attempt / "run_info.json")
        matrix = attempt / "counts_unfiltered" / "adata.h5ad"
        if info.get("n_pseudoaligned") == 0 or (error is None and not matrix.exists()):
            raise FeatureCountError(_no_reads(job, info)) from error

    count_in_attempt(
        kb_dir,
        job.sample,
        lambda attempt: feature_count_args(job, attempt, attempt / "tmp"),
        check,
        label=f"{job.sample} {job.feature_type}",
        lock_name=f".{kb_dir.name}.lock",
        remove=KB_LARGE_FILES,
        log=log,
    )
    return ad.read_h5ad(kb_dir / "counts_unfiltered" / "adata.h5ad")


def _no_reads(job: FeatureCountJob, info: dict) -> str:
    processed = info.get("n_processed")
    return (
        f"sample '{job.sample}' ({job.feature_type}): kb count wrote no matrix: kallisto "
        f"pseudoaligned {info.get('n_pseudoaligned', '?')} of "
        f"{processed if processed is not None else '?'} reads to the feature barcodes. Check "
        "that the feature reference is this library's and fastq_1/fastq_2 are not swapped."
    )


def _feature_var(job: FeatureCountJob, counted: pd.Index) -> pd.DataFrame:
    if job.reference is None:
        ids = pd.Index(counted, name="feature_id")
        return pd.DataFrame({"feature_name": ids, "feature_type": job.feature_type}, index=ids)
    table = features_of_type(
        read_feature_reference(job.reference, job.feature_type),
        job.feature_type,
        f"feature reference {job.reference}",
    )
    unknown = counted.difference(table["id"])
    if len(unknown):
        raise FeatureCountError(
            f"sample '{job.sample}': kb counted feature(s) {', '.join(unknown[:3])} that are "
            f"not in {job.reference}; the index and the reference do not match"
        )
    ids = pd.Index(table["id"], name="feature_id")
    return pd.DataFrame(
        {"feature_name": table["name"].to_numpy(), "feature_type": job.feature_type}, index=ids
    )


def feature_barcode_translation(gex_barcodes: Iterable[str]) -> dict[str, str]:
    """Gene-expression barcode -> the barcode that 10x v3 feature-barcoding reads carry.

    kb's table (`kb_python.utils.create_10x_feature_barcode_map`): line i of ngs_tools'
    ``10x_fb_whitelist`` is the feature-barcode-space twin of line i of the 10x v3 on-list.
    Both lists are streamed, stopping once every barcode is found.
    """
    import ngs_tools as ngs

    chemistry = ngs.chemistry.get_chemistry("10xFB")
    gex_list = chemistry.chemistry("gex").whitelist_path
    fb_list = chemistry.chemistry("fb").whitelist_path
    wanted = set(gex_barcodes)
    found: dict[str, str] = {}
    with gzip.open(gex_list, "rt") as gex, gzip.open(fb_list, "rt") as fb:
        for gex_line, fb_line in zip(gex, fb, strict=True):
            barcode = gex_line.rstrip()
            if barcode in wanted:
                found[barcode] = fb_line.rstrip()
                if len(found) == len(wanted):
                    break
    missing = wanted.difference(found)
    if missing:
        raise KbaggError(
            f"{len(missing)} barcode(s) are not on the 10x v3 on-list, e.g. {sorted(missing)[0]}"
        )
    return found
