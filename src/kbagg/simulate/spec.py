"""What the demo data set holds: its samples, and the paths of every file it writes.

Light on purpose (no numpy or anndata): the workflow reads it at parse time to know which
files the simulate_demo rule will write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kbagg.feature_types import ANTIBODY_CAPTURE, GENE_EXPRESSION, MODALITY, MULTIPLEXING_CAPTURE


@dataclass(frozen=True)
class HardCells:
    """Hard cases for cell calling (see `kbagg.simulate.cells`): small cells at a fraction
    of normal depth, empty droplets of ambient RNA at realistic depth, and doublets."""

    n_small_cells: int
    doublet_fraction: float = 0.08  # of non-empty droplets
    n_cell_types: int = 6  # normal types; small cells are one more type of their own
    cell_umis_median: float = 2500.0
    cell_umis_sigma: float = 0.35  # log-normal spread of cell depth
    small_cell_depth: float = 0.2  # small cells' depth relative to normal cells
    empty_umis_median: float = 3.0
    empty_umis_sigma: float = 0.9
    empty_umis_max: int = 50
    # Ambient-rich empty droplets: this fraction of the empty droplets takes its depth from
    # a second log-normal (median, sigma), reaching above EmptyDrops' `lower` (100) where
    # the small cells are; still ambient RNA only. 0: none (no extra random draws).
    rich_empty_fraction: float = 0.0
    rich_empty_umis_median: float = 150.0
    rich_empty_umis_sigma: float = 0.5
    # Overdispersed empty droplets: each draws its own profile from Dirichlet(alpha *
    # ambient) before its molecules (a Dirichlet-multinomial, EmptyDrops' null model).
    # None: every empty droplet is a multinomial draw from the ambient profile itself.
    empty_alpha: float | None = None
    # Doublet depth. "sum": all molecules of both parent cells (twice a singlet's depth,
    # which a depth cut alone finds). "singlet": the summed molecules downsampled, without
    # replacement, to the depth of a fresh singlet of the first parent's kind (normal or
    # small), so doublets' UMIs are distributed like singlets' and only their expression
    # mixture tells them apart: Scrublet's own construction of synthetic doublets with
    # `synthetic_doublet_umi_subsampling` < 1 ("the UMI counts are added and then randomly
    # sampled"; Wolock, Lopez & Klein 2019, Cell Systems 8:281, doi:10.1016/j.cels.2018.11.005).
    doublet_umis: str = "sum"
    # Ambient RNA in cell-containing droplets (kbagg.simulate.ambient, where the published
    # ranges are cited): per-droplet fraction of UMIs ~ Beta with this mean and
    # concentration, capped at ambient_fraction_max. 0: none (no extra random draws).
    ambient_fraction: float = 0.0
    ambient_concentration: float = 30.0
    ambient_fraction_max: float = 0.3
    program_fraction: float = 0.1  # genes of each type's own programme ...
    program_off: float = 0.02  # ... at this relative level in the other types


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
    # None: the easy demo model (cells far above empty droplets); else hard cases.
    hard: HardCells | None = None
    # Feature-barcode libraries of the same cells (kbagg.simulate.features), by feature type.
    feature_libraries: tuple[str, ...] = ()
    # The cells' barcodes, when they must be given ones (n_cells of them); else drawn.
    cell_barcodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 7
    n_genes: int = 30
    samples: tuple[SampleSpec, ...] = (
        SampleSpec("pbmc_a", "10xv2", 2, 40, 150, {"condition": "control", "donor": "d1"}),
        # CITE-seq: antibody counts of the same cells
        SampleSpec(
            "pbmc_b",
            "10xv3",
            2,
            30,
            120,
            {"condition": "treated", "donor": "d1"},
            feature_libraries=(ANTIBODY_CAPTURE,),
        ),
        # cell hashing: cells of 4 donors pooled, told apart by their hashtag
        SampleSpec(
            "pbmc_c",
            "10xv3",
            1,
            60,
            100,
            {"condition": "treated", "donor": "pool"},
            silent_genes=tuple(range(24, 30)),
            feature_libraries=(MULTIPLEXING_CAPTURE,),
        ),
    )


DEMO = DemoSpec()

# Hard cases with truth: small cells below the knee, many empty droplets, ~8% doublets.
# 600 genes: Scrublet keeps only its highly variable genes and needs more than its 30
# principal components of them (with 60 genes it kept 18).
HARD = DemoSpec(
    seed=11,
    n_genes=600,
    samples=(
        SampleSpec(
            "hard_a",
            "10xv3",
            1,
            n_cells=150,
            n_empty=2000,
            metadata={"condition": "hard", "donor": "d3"},
            hard=HardCells(
                n_small_cells=40,
                cell_umis_median=1200.0,
                rich_empty_fraction=0.1,
                empty_umis_max=1000,
                doublet_umis="singlet",  # depth-matched: depth alone does not find them
            ),
        ),
    ),
)


def fastq_path(outdir: Path, sample: str, lane: int, read: int) -> Path:
    return Path(outdir) / "fastq" / f"{sample}_S1_L{lane:03d}_R{read}_001.fastq.gz"


def feature_fastq_path(outdir: str | Path, sample: str, feature_type: str, read: int) -> Path:
    """``fastq/<sample>_<modality>_S1_L001_R<read>_001.fastq.gz`` under `outdir`."""
    name = f"{sample}_{MODALITY[feature_type]}_S1_L001_R{read}_001.fastq.gz"
    return Path(outdir) / "fastq" / name


def demo_outputs(outdir: str | Path, spec: DemoSpec = DEMO) -> dict[str, list[Path]]:
    """Every file `write_demo` creates, by kind (so the workflow can declare them as outputs)."""
    outdir = Path(outdir)
    fastqs = [
        fastq_path(outdir, s.name, lane, read)
        for s in spec.samples
        for lane in range(1, s.lanes + 1)
        for read in (1, 2)
    ]
    fastqs += [
        feature_fastq_path(outdir, s.name, feature_type, read)
        for s in spec.samples
        for feature_type in s.feature_libraries
        for read in (1, 2)
    ]
    truth = [outdir / "truth" / f"{s.name}.h5ad" for s in spec.samples]
    truth += [
        outdir / "truth" / f"{s.name}_{MODALITY[t]}.h5ad"
        for s in spec.samples
        for t in s.feature_libraries
    ]
    outputs = {
        "genome": [outdir / "genome.fa"],
        "gtf": [outdir / "genes.gtf"],
        "fastq": fastqs,
        "truth": truth,
        "sheet": [outdir / "samples.tsv"],
    }
    if any(s.feature_libraries for s in spec.samples):
        outputs["feature_reference"] = [outdir / "feature_reference.csv"]
    return outputs


def libraries(sample: SampleSpec) -> list[str]:
    """The sample's library types, gene expression first."""
    return [GENE_EXPRESSION, *sample.feature_libraries]
