"""Rule hashtag_qc: the hashtag assignment table and figure of one sample."""

from kbagg.qc.hashtags import run_hashtag_qc
from kbagg.rule import run_rule


def main(smk) -> None:
    table = run_hashtag_qc(smk.input[0], smk.wildcards.sample, smk.output.table, smk.output.figure)
    print(table.to_string(index=False))


run_rule(snakemake, main)
