"""Rule cells: a sample's raw.h5ad and filtered.h5ad, once its reads are accounted for."""

from pathlib import Path

from kbagg.count.fastq_check import read_lane_record

from kbagg.cells.matrices import check_reads_processed, write_sample_matrices
from kbagg.rule import run_rule


def main(smk) -> None:
    sample = smk.wildcards.sample
    kb_dir = Path(smk.input.run_info).parent
    lanes = [read_lane_record(path) for path in smk.input.checks]
    reads = check_reads_processed(sample, kb_dir, {f"lane {r.lane}": r.reads for r in lanes})
    outputs = {kind: smk.output[kind] for kind in ("raw", "filtered") if smk.output.get(kind)}
    written = write_sample_matrices(sample, kb_dir, smk.input.t2g, outputs)
    shapes = ", ".join(f"{k} {a.n_obs} barcodes x {a.n_vars} genes" for k, a in written.items())
    print(f"sample '{sample}': {reads:,} reads, all processed by kallisto; {shapes}")


run_rule(snakemake, main)
