"""`kb count` for one sample: all its lanes in one call, raw and filtered matrices kept.

kb runs in a private folder per attempt, `kb.attempt-<pid>`, with a private `--tmp` (kb's
shared default breaks parallel runs and refuses to start when it exists), while the attempt
holds the sample's lock (`kbagg.count.attempt`). Only when kb's matrices exist does the folder
become `kb/`; a rerun never reuses, or shares a folder with, an earlier attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    for them: every cell of a plate is a cell). Those counted from kb's batch file (SMARTSEQ2,
    BULK, STORMSEQ) get the batch file `outdir/batch.txt` (written by `run_count`) instead of
    FASTQs, and `--parity paired` or `single` (SMARTSEQ2, BULK: kb requires it).

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
    args = ["count", "-i", job.index, "-g", job.t2g, "-x", job.technology]
    args += ["-o", str(outdir), "--tmp", str(tmpdir), "-t", str(job.threads)]
    args += ["-m", kb_memory(job.memory_mb), "--h5ad", "--overwrite"]
    if job.workflow != "standard":
        if not (job.c1 and job.c2):
            raise KbError(f"sample '{job.sample}': workflow {job.workflow} needs c1 and c2 files")
        args += ["--workflow", job.workflow, "-c1", job.c1, "-c2", job.c2]
    if job.onlist:
        args += ["-w", job.onlist]
    if job.filter and not tech.plate:
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


def run_count(job: CountJob, log: Callable[[str], object] = print) -> Path:
    """Run kb count for `job` and install its folder as `job.kb_dir`; returns it."""

    def check(attempt: Path, error: KbError | None) -> None:
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

    return count_in_attempt(
        Path(job.kb_dir),
        job.sample,
        lambda attempt: kb_count_args(job, attempt, attempt / "tmp"),
        check,
        label=job.sample,
        log=log,
    )
