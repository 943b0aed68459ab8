"""Rule sample_h5mu: a sample's modalities (rna and its feature libraries) in one .h5mu."""

from kbagg.aggregate.mudata import write_sample_h5mu
from kbagg.rule import run_rule


def main(smk) -> None:
    modalities = dict(smk.input.items())
    write_sample_h5mu(modalities, smk.output[0])
    print(f"{smk.output[0]}: modalities {', '.join(modalities)}")


run_rule(snakemake, main)
