"""Rule replacement: kb's barcode replacement list (`kb count -r`) for one technology, once
for every sample of it (SPLIT-SEQ: each round-1 well's random-hexamer barcode -> its
oligo-dT barcode, from kb's on-list; kbagg.kb.technology)."""

from kbagg.kb.technology import write_replacement
from kbagg.rule import run_rule


def main(smk) -> None:
    technology, output = smk.wildcards.technology, smk.output[0]
    write_replacement(technology, output)
    print(f"{technology}: replacement list written to {output}")


run_rule(snakemake, main)
