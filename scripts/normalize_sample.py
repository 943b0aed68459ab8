"""Rule normalize_sample: one sample's reads thinned in kb's BUS file, its called cells
recounted with kb's bustools count arguments (kbagg.normalize)."""

from pathlib import Path

from kb_python.config import get_bustools_binary_path

from kbagg.normalize.run import write_normalized_sample
from kbagg.rule import run_rule


def main(smk) -> None:
    sample = smk.wildcards.sample
    write_normalized_sample(
        sample,
        Path(smk.input.bus).parent,
        smk.input.t2g,
        smk.input.kb_info,
        smk.input.filtered,
        smk.input.rates,
        smk.params.seed,
        get_bustools_binary_path(),
        smk.output[0],
    )
    print(f"sample '{sample}': reads thinned and recounted into {smk.output[0]}")


run_rule(snakemake, main)
