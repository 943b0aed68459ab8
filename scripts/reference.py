"""Rules reference and reference_download: the kallisto index and t2g, by `kb ref`."""

from kbagg.reference.build import build_reference, download_reference
from kbagg.rule import run_rule


def main(smk) -> None:
    outputs = dict(smk.output.items())
    if smk.input.get("fasta"):
        build_reference(smk.input.fasta, smk.input.gtf, smk.params.workflow, outputs, smk.threads)
    else:
        download_reference(smk.params.download, smk.params.workflow, outputs, smk.threads)
    print(f"reference ready: {', '.join(outputs.values())}")


run_rule(snakemake, main)
