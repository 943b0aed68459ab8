"""Rule onlist: kb's bundled barcode on-list for one technology, once for every sample."""

from kbagg.kb.technology import write_onlist
from kbagg.rule import run_rule


def main(smk) -> None:
    technology, output = smk.wildcards.technology, smk.output[0]
    if write_onlist(technology, output):
        print(f"{technology}: on-list written to {output}")
    else:
        print(f"{technology}: kb has no on-list; kb count builds one per sample")


run_rule(snakemake, main)
