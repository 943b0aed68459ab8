"""`kb count` for one sample: all its lanes in one call, raw and filtered matrices kept.

kb runs in a private folder per attempt, `kb.attempt-<pid>`, with a private `--tmp` (kb's
shared default breaks parallel runs and refuses to start when it exists), while the attempt
holds the sample's lock (`kbagg.count.attempt`). Only when kb's matrices exist does the folder
become `kb/`; a rerun never reuses, or shares a folder with, an earlier attempt.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kbagg.count.attempt import count_in_attempt
from kbagg.kb.run import KbError, read_json_if_present
from kbagg.kb.technology import PARITY_TECHNOLOGIES
from kbagg.kb.technology import technology as kb_technology
from kbagg.schema import schema_default

WORKFLOWS = ("standard", "nac", "lamanno")


@dataclass(frozen=True)
class CountJob:
    sample: str
    fastqs: list[str]
    index: str
    t2g: str
    technology: str
    kb_dir: Path
    filter: bool = True  # kb count --filter bustools
    workflow: str = "standard"
    c1: str | None = None
    c2: str | None = None
    onlist: str | None = None
    filter_threshold: int | None = None
    threads: int = 1
    memory_mb: int = field(
        default_factory=lambda: schema_default("resources", "kb_count", "mem_mb")
    )
    extra_args: list[str] = field(default_factory=list)
    cells: list[str] | None = None  # plate technologies with a batch file: each lane's cell id
    # kb's -r list, for technologies counted with one (`Technology.replacement`: SPLIT-SEQ)
    replacement: str | None = None


BATCH_FILE = "batch.txt"  # kb's batch file, in the attempt's folder


def batch_lines(job: CountJob) -> list[str]:
    """kb's batch file for a plate sample: `cell<TAB>fastq_1[<TAB>fastq_2]` per lane (cell),
    with absolute paths (kb reads them from its own folder)."""
    tech = kb_technology(job.technology)
    n_cells = len(job.cells or [])
    if not n_cells or len(job.fastqs) % n_cells:
        raise KbError(
            f"sample '{job.sample}': technology '{job.technology}' is counted from kb's batch "
            f"file, one cell per lane; got {n_cells} cell ids for {len(job.fastqs)} FASTQs"
        )
    per_cell = len(job.fastqs) // n_cells
    if per_cell not in tech.allowed_n_files:
        raise KbError(
            f"sample '{job.sample}': technology '{job.technology}' takes "
            f"{' or '.join(map(str, tech.allowed_n_files))} FASTQ files per cell, got {per_cell}"
        )
    lines = []
    for i, cell in enumerate(job.cells):
        files = [str(Path(f).resolve()) for f in job.fastqs[i * per_cell : (i + 1) * per_cell]]
        lines.append("\t".join([cell, *files]))
    return lines


def kb_memory(memory_mb: int) -> str:
    """kb's -m (bustools sort buffer): half the job's memory, the rest is kallisto's index."""
    return f"{max(128, int(memory_mb) // 2)}M"


def kb_count_args(job: CountJob, outdir: Path, tmpdir: Path) -> list[str]:
    """`kb count`'s arguments for `job`, as kb needs them for the job's technology.

    Plate technologies (`Technology.plate`) are counted without `--filter` (kb refuses it
    for them: every cell of a plate is a cell). So are those whose on-list kbagg writes by
    part (`Technology.onlist_parts`, BDWTA): `filter_by_allowlist` calls their cells. Those counted from kb's batch file (SMARTSEQ2,
    BULK, STORMSEQ) get the batch file `outdir/batch.txt` (written by `run_count`) instead of
    FASTQs, and `--parity paired` or `single` (SMARTSEQ2, BULK: kb requires it). Those
    counted with a replacement list (`Technology.replacement`, SPLIT-SEQ) get it as `-r`;
    without `job.replacement` they raise KbError rather than count a well's cells twice.

    Parameters
    ----------
    job
        The sample's count job.
    outdir
        kb's output folder (`-o`).
    tmpdir
        kb's private temporary folder (`--tmp`).
    """
    tech = kb_technology(job.technology)
    if not tech.batch and len(job.fastqs) % tech.n_files:
        raise KbError(
            f"sample '{job.sample}': technology '{job.technology}' takes {tech.n_files} FASTQ "
            f"files per lane; got {len(job.fastqs)}, not whole lanes: {job.fastqs}"
        )
    args = ["count", "-i", job.index, "-g", job.t2g, "-x", tech.kallisto_x or job.technology]
    args += ["-o", str(outdir), "--tmp", str(tmpdir), "-t", str(job.threads)]
    args += ["-m", kb_memory(job.memory_mb), "--h5ad", "--overwrite"]
    if job.workflow != "standard":
        if not (job.c1 and job.c2):
            raise KbError(f"sample '{job.sample}': workflow {job.workflow} needs c1 and c2 files")
        args += ["--workflow", job.workflow, "-c1", job.c1, "-c2", job.c2]
    if job.onlist:
        args += ["-w", job.onlist]
    if tech.replacement:
        if not job.replacement:
            raise KbError(
                f"sample '{job.sample}': technology '{job.technology}' needs kb's replacement "
                "list (-r), which kbagg writes (kbagg.kb.technology.write_replacement)"
            )
        args += ["-r", job.replacement]
    if job.filter and not tech.plate and not tech.onlist_parts:
        args += ["--filter", "bustools"]
        if job.filter_threshold is not None:
            args += ["--filter-threshold", str(job.filter_threshold)]
    if tech.batch:
        if tech.name.upper() in PARITY_TECHNOLOGIES:
            paired = len(job.fastqs) == 2 * len(job.cells or [])
            args += ["--parity", "paired" if paired else "single"]
        return [*args, *job.extra_args, str(outdir / BATCH_FILE)]
    return [*args, *job.extra_args, *job.fastqs]


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


KB_MATRICES = {"raw": "counts_unfiltered/adata.h5ad", "filtered": "counts_filtered/adata.h5ad"}
# kb count -r keeps counts_unfiltered and output.unfiltered.bus as before the replacement, and
# writes the replaced ones beside them with `_modified`; its counts_filtered is counted from the
# replaced BUS file. The workflow reads the replaced ones whenever kb wrote them.
KB_REPLACED = {
    "raw": "counts_unfiltered_modified/adata.h5ad",
    "bus": "output_modified.unfiltered.bus",
}
KB_BUS = "output.unfiltered.bus"  # sorted, barcode-corrected: what aggregate.normalize thins


def kb_raw_matrix(kb_dir: str | Path) -> Path:
    """kb's raw matrix in `kb_dir`: counts_unfiltered, or counts_unfiltered_modified when kb
    applied a replacement list (`-r`, SPLIT-SEQ), the barcodes its filtered matrix has.

    Parameters
    ----------
    kb_dir
        kb count's output folder.
    """
    replaced = Path(kb_dir) / KB_REPLACED["raw"]
    return replaced if replaced.exists() else Path(kb_dir) / KB_MATRICES["raw"]


def kb_bus(kb_dir: str | Path) -> Path:
    """kb's sorted, barcode-corrected BUS file in `kb_dir`, after the replacement list when
    kb applied one (`kb_raw_matrix` is counted from it).

    Parameters
    ----------
    kb_dir
        kb count's output folder.
    """
    replaced = Path(kb_dir) / KB_REPLACED["bus"]
    return replaced if replaced.exists() else Path(kb_dir) / KB_BUS


# kb count -x SMARTSEQ3 writes two matrices and no counts_unfiltered: UMI counts of the reads
# with Smart-seq3's UMI tag, and read counts of the internal (non-UMI) reads.
SMARTSEQ3_MATRICES = {
    "umi": "counts_unfiltered_umi/adata.h5ad",
    "nonumi": "counts_unfiltered_internal/adata.h5ad",
}
NONUMI_LAYER = "nonumi_reads"  # Smart-seq3: the internal reads per cell and gene (kb's)


def plate_matrices(kb_dir: Path, technology: str, filtered: bool) -> None:
    """The matrices the workflow reads, for a plate (kb writes others, or none filtered).

    Smart-seq3: `counts_unfiltered/adata.h5ad` holds kb's UMI counts in X and kb's internal
    (non-UMI) read counts in layer `nonumi_reads`, over the barcodes of either (outer join;
    absent is 0). With `filtered`, `counts_filtered/adata.h5ad` is the same matrix: kb takes
    no `--filter` for plates, and every barcode of a plate is a cell. Both are written by
    kbagg (atomically), beside kb's own files, which stay as kb wrote them.

    Parameters
    ----------
    kb_dir
        kb count's output folder of the sample.
    technology
        The sample's technology (a plate technology).
    filtered
        Whether the workflow calls cells (config filter.enabled).
    """
    import anndata as ad

    from kbagg.atomic import atomic_output

    kb_dir = Path(kb_dir)
    raw = kb_dir / KB_MATRICES["raw"]
    if kb_technology(technology).name.upper() == "SMARTSEQ3":
        umi = ad.read_h5ad(kb_dir / SMARTSEQ3_MATRICES["umi"])
        nonumi = ad.read_h5ad(kb_dir / SMARTSEQ3_MATRICES["nonumi"])
        barcodes = umi.obs_names.union(nonumi.obs_names, sort=True)
        if not umi.var_names.equals(nonumi.var_names):
            raise KbError(f"{kb_dir}: kb's UMI and non-UMI matrices have different genes")
        joined = _reindexed(umi, barcodes)
        joined.layers[NONUMI_LAYER] = _reindexed(nonumi, barcodes).X
        raw.parent.mkdir(exist_ok=True)
        with atomic_output(raw) as tmp:
            joined.write_h5ad(tmp)
    if filtered:
        target = kb_dir / KB_MATRICES["filtered"]
        target.parent.mkdir(exist_ok=True)
        with atomic_output(target) as tmp:
            shutil.copyfile(raw, tmp)


def _reindexed(adata, barcodes):
    """`adata` with rows `barcodes` in that order (zeros for barcodes it lacks)."""
    import anndata as ad
    import scipy.sparse as sp

    rows = adata.obs_names.get_indexer(barcodes)
    matrix = sp.csr_matrix(adata.X)
    present = rows >= 0
    take = sp.coo_matrix(
        (np.ones(int(present.sum())), (np.flatnonzero(present), rows[present])),
        shape=(len(barcodes), adata.n_obs),
    ).tocsr()
    out = (take @ matrix).astype(matrix.dtype)
    return ad.AnnData(X=out, obs=pd.DataFrame(index=barcodes), var=adata.var.copy())


FILTER_BARCODES = "filter_barcodes.txt"  # the barcodes bustools' knee keeps, as kb names them


def filter_by_allowlist(kb_dir: Path, job: CountJob, log: Callable[[str], object]) -> None:
    """kb's filtered matrix, for a technology whose on-list kbagg writes by part (BDWTA):
    the raw matrix's barcodes that `bustools allowlist` keeps (the knee kb's `--filter
    bustools` uses), in the raw matrix's order.

    kb's own filter then runs `bustools correct` against those whole barcodes, and for a
    27-base barcode that builds a table of 4^14 entries: 21 GB whatever the list. Here the
    raw matrix, already corrected against the on-list by part, is subset instead; kb's
    step differs only by moving a barcode one mismatch from a kept one into it.

    Parameters
    ----------
    kb_dir
        kb count's output folder (the attempt), holding the sorted BUS file and raw matrix.
    job
        The sample's count job (its `filter_threshold` is bustools' `--threshold`).
    log
        Where the progress line goes.
    """
    import subprocess

    import anndata as ad
    from kb_python.config import get_bustools_binary_path

    barcodes_path = kb_dir / FILTER_BARCODES
    command = [get_bustools_binary_path(), "allowlist", "-o", str(barcodes_path)]
    if job.filter_threshold is not None:
        command += ["--threshold", str(job.filter_threshold)]
    command.append(str(kb_dir / KB_BUS))
    log(f"[{job.sample}] calling cells with bustools allowlist (kb's knee) on {KB_BUS}")
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0 or not barcodes_path.exists():
        raise KbError(
            f"sample '{job.sample}': bustools allowlist failed (exit code {proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}"
        )
    kept = pd.Index(barcodes_path.read_text().split())
    raw = ad.read_h5ad(kb_dir / KB_MATRICES["raw"])
    filtered = raw[raw.obs_names.isin(kept)].copy()
    output = kb_dir / KB_MATRICES["filtered"]
    output.parent.mkdir(parents=True, exist_ok=True)
    filtered.write_h5ad(output)


def run_count(job: CountJob, log: Callable[[str], object] = print) -> Path:
    """Run kb count for `job` and install its folder as `job.kb_dir`; returns it."""

    tech = kb_technology(job.technology)

    def check(attempt: Path, error: KbError | None) -> None:
        if tech.plate and error is None:
            plate_matrices(attempt, job.technology, job.filter)
        if tech.onlist_parts and job.filter and error is None:
            filter_by_allowlist(attempt, job, log)
        info = read_json_if_present(attempt / "run_info.json")
        # kallisto >= 0.51 exits 1 on 0 pseudoaligned reads, which kb reports as a generic
        # exception; its run_info.json still says why.
        if info.get("n_pseudoaligned") == 0 or not (attempt / KB_MATRICES["raw"]).exists():
            if error is None or info.get("n_pseudoaligned") == 0:
                raise KbError(why_no_matrix(job.sample, attempt)) from error
            return
        if job.filter and not (attempt / KB_MATRICES["filtered"]).exists():
            raise KbError(
                f"sample '{job.sample}': kb count wrote the raw matrix but no filtered matrix "
                "(bustools filter failed; see its log above)"
            ) from error
        if tech.replacement and not (attempt / KB_REPLACED["raw"]).exists():
            raise KbError(
                f"sample '{job.sample}': kb count wrote no {KB_REPLACED['raw']} although it "
                "was given the replacement list (-r)"
            ) from error

    def args(attempt: Path) -> list[str]:
        if tech.batch:
            (attempt / BATCH_FILE).write_text("\n".join(batch_lines(job)) + "\n")
        return kb_count_args(job, attempt, attempt / "tmp")

    return count_in_attempt(
        Path(job.kb_dir),
        job.sample,
        args,
        check,
        label=job.sample,
        log=log,
    )
