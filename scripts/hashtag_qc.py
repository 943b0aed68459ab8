"""Rule hashtag_qc: the hashtag assignment table and figure of one sample."""

import anndata as ad

from kbagg.qc.hashtags import run_hashtag_qc
from kbagg.rule import run_rule, to_terminal, warning_line


def main(smk) -> None:
    sample = smk.wildcards.sample
    table, warning = run_hashtag_qc(
        ad.read_h5ad(smk.input[0]), sample, smk.output.table, smk.output.figure
    )
    print(table.to_string(index=False))
    if warning:
        to_terminal(warning_line(warning))


run_rule(snakemake, main)
