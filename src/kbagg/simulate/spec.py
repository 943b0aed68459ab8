"""What the demo data set holds: its samples, and the paths of every file it writes.

Light on purpose (no numpy or anndata): the workflow reads it at parse time to know which
files the simulate_demo rule will write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SampleSpec:
    name: str
    technology: str
    lanes: int
    n_cells: int
    n_empty: int
    metadata: dict = field(default_factory=dict)
    # Genes (by index) that no cell of this sample expresses.
    silent_genes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 7
    n_genes: int = 30
    samples: tuple[SampleSpec, ...] = (
        SampleSpec("pbmc_a", "10xv2", 2, 40, 150, {"condition": "control", "donor": "d1"}),
        SampleSpec("pbmc_b", "10xv3", 2, 30, 120, {"condition": "treated", "donor": "d1"}),
        SampleSpec(
            "pbmc_c",
            "10xv2",
            1,
            25,
            100,
            {"condition": "treated", "donor": "d2"},
            silent_genes=tuple(range(24, 30)),
        ),
    )


DEMO = DemoSpec()


def fastq_path(outdir: Path, sample: str, lane: int, read: int) -> Path:
    return Path(outdir) / "fastq" / f"{sample}_S1_L{lane:03d}_R{read}_001.fastq.gz"


def demo_outputs(outdir: str | Path, spec: DemoSpec = DEMO) -> dict[str, list[Path]]:
    """Every file `write_demo` creates, by kind (so the workflow can declare them as outputs)."""
    outdir = Path(outdir)
    fastqs = [
        fastq_path(outdir, s.name, lane, read)
        for s in spec.samples
        for lane in range(1, s.lanes + 1)
        for read in (1, 2)
    ]
    return {
        "genome": [outdir / "genome.fa"],
        "gtf": [outdir / "genes.gtf"],
        "fastq": fastqs,
        "truth": [outdir / "truth" / f"{s.name}.h5ad" for s in spec.samples],
        "sheet": [outdir / "samples.tsv"],
    }
