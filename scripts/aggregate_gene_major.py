"""Rule aggregate_gene_major: the aggregate again with X and layers as CSC (gene-major)."""

from kbagg.concat.gene_major import write_gene_major
from kbagg.rule import run_rule


def main(smk) -> None:
    write_gene_major(
        smk.input[0],
        smk.output[0],
        chunk_entries=smk.resources.chunk_entries,
        compression=smk.params.compression,
        threads=smk.threads,
        progress=True,
    )
    print(f"{smk.input[0]} copied gene-major (CSC) to {smk.output[0]}")


run_rule(snakemake, main)
