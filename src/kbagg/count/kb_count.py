"""`kb count` for one sample: all its lanes in one call, raw and filtered matrices kept.

kb writes into `<kb_dir>.partial` with a private `--tmp` (kb's shared default breaks parallel
runs and refuses to start when it exists); only when the matrices are verified does the
folder move to `<kb_dir>` and the per-sample h5ad files get renamed into place. A stale
`.partial` from a killed run is removed first, so no intermediate is ever reused.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import pandas as pd

from kbagg.atomic import atomic_output
from kbagg.kb.run import KbError, read_json_if_present, run_kb

WORKFLOWS = ("standard", "nac", "lamanno")


@dataclass(frozen=True)
class CountJob:
    sample: str
    fastqs: list[str]
    index: str
    t2g: str
    technology: str
    kb_dir: Path
    raw_h5ad: Path
    filtered_h5ad: Path | None  # None when filtering is off
    workflow: str = "standard"
    c1: str | None = None
    c2: str | None = None
    onlist: str | None = None
    filter_threshold: int | None = None
    threads: int = 1
    memory_mb: int = 2048
    extra_args: list[str] = field(default_factory=list)


def kb_memory(memory_mb: int) -> str:
    """kb's -m (bustools sort buffer): half the job's memory, the rest is kallisto's index."""
    return f"{max(128, int(memory_mb) // 2)}M"


def kb_count_args(job: CountJob, outdir: Path, tmpdir: Path) -> list[str]:
    if len(job.fastqs) % 2:
        raise KbError(f"sample '{job.sample}': FASTQs must come in R1/R2 pairs: {job.fastqs}")
    args = ["count", "-i", job.index, "-g", job.t2g, "-x", job.technology]
    args += ["-o", str(outdir), "--tmp", str(tmpdir), "-t", str(job.threads)]
    args += ["-m", kb_memory(job.memory_mb), "--h5ad", "--overwrite"]
    if job.workflow != "standard":
        if not (job.c1 and job.c2):
            raise KbError(f"sample '{job.sample}': workflow {job.workflow} needs c1 and c2 files")
        args += ["--workflow", job.workflow, "-c1", job.c1, "-c2", job.c2]
    if job.onlist:
        args += ["-w", job.onlist]
    if job.filtered_h5ad is not None:
        args += ["--filter", "bustools"]
        if job.filter_threshold is not None:
            args += ["--filter-threshold", str(job.filter_threshold)]
    return [*args, *job.extra_args, *job.fastqs]


def gene_names_from_t2g(t2g: str | Path) -> pd.Series:
    """gene_id -> gene_name from kb's t2g (3rd column; the id itself where there is none)."""
    table = pd.read_csv(t2g, sep="\t", header=None, dtype=str, keep_default_na=False)
    if table.shape[1] < 2:
        raise KbError(f"t2g {t2g}: expected at least 2 tab-separated columns (transcript, gene)")
    ids = table[1]
    names = table[2] if table.shape[1] > 2 else ids
    names = names.where(names != "", ids)
    return pd.Series(names.to_numpy(), index=pd.Index(ids, name="gene_id")).groupby(level=0).first()


def why_no_matrix(sample: str, kb_dir: Path) -> str:
    """Explain a missing matrix as specifically as kb's own records allow."""
    info = read_json_if_present(kb_dir / "run_info.json")
    processed, aligned = info.get("n_processed"), info.get("n_pseudoaligned")
    if aligned == 0:
        return (
            f"sample '{sample}': kb count exited 0 but wrote no count matrix: kallisto "
            f"pseudoaligned 0 of {processed:,} reads. Check the technology (-x), that the "
            "reference matches the species, and that fastq_1/fastq_2 are not swapped."
        )
    return f"sample '{sample}': kb count exited 0 but wrote no count matrix (see its log above)"


def with_gene_names(adata: ad.AnnData, gene_names: pd.Series) -> ad.AnnData:
    """kb's matrix with `var` = gene_id index + gene_name, `obs` index named barcode."""
    adata.var.index.name = "gene_id"
    adata.var["gene_name"] = gene_names.reindex(adata.var_names).fillna(
        pd.Series(adata.var_names, index=adata.var_names)
    )
    adata.obs.index.name = "barcode"
    return adata


def write_h5ad_atomic(adata: ad.AnnData, output: Path) -> None:
    with atomic_output(output) as tmp:
        adata.write_h5ad(tmp)


def run_count(job: CountJob) -> dict[str, ad.AnnData]:
    kb_dir = Path(job.kb_dir)
    partial = kb_dir.with_name(kb_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        run_kb(kb_count_args(job, partial, partial / "tmp"), label=job.sample)
    except KbError as error:
        # kallisto >= 0.51 exits 1 on 0 pseudoaligned reads, which kb reports as a generic
        # exception; its run_info.json still says why.
        if read_json_if_present(partial / "run_info.json").get("n_pseudoaligned") == 0:
            raise KbError(why_no_matrix(job.sample, partial)) from error
        raise

    matrices = {"raw": (partial / "counts_unfiltered" / "adata.h5ad", job.raw_h5ad)}
    if job.filtered_h5ad is not None:
        matrices["filtered"] = (partial / "counts_filtered" / "adata.h5ad", job.filtered_h5ad)
    if not matrices["raw"][0].exists():
        raise KbError(why_no_matrix(job.sample, partial))
    if "filtered" in matrices and not matrices["filtered"][0].exists():
        raise KbError(
            f"sample '{job.sample}': kb count wrote the raw matrix but no filtered matrix "
            "(bustools filter failed; see its log above)"
        )

    shutil.rmtree(kb_dir, ignore_errors=True)
    os.replace(partial, kb_dir)
    names = gene_names_from_t2g(job.t2g)
    adatas = {
        kind: with_gene_names(ad.read_h5ad(kb_dir / kb_h5ad.relative_to(partial)), names)
        for kind, (kb_h5ad, _) in matrices.items()
    }
    if "filtered" in adatas and adatas["filtered"].n_obs == 0:
        raise KbError(
            f"sample '{job.sample}': the barcode filter kept 0 cells of "
            f"{adatas['raw'].n_obs} barcodes; set filter.threshold lower or filter.enabled: false"
        )
    for kind, (_, output) in matrices.items():
        write_h5ad_atomic(adatas[kind], output)
    return adatas
