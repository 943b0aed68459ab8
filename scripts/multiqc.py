"""Rule multiqc: MultiQC over kb's bustools records and kbagg's QC metrics."""

from kbagg.qc.multiqc import run_multiqc
from kbagg.rule import run_rule


def main(smk) -> None:
    inspect = dict(zip(smk.params.samples, smk.input.inspect, strict=True))
    run_multiqc(inspect, smk.input.summary, smk.output[0])
    print(f"MultiQC report of {len(inspect)} samples: {smk.output[0]}")


run_rule(snakemake, main)
