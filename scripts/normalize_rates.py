"""Rule normalize_rates: every sample's mapped reads per called cell and subsampling rate."""

from pathlib import Path

from kbagg.normalize.run import write_rates
from kbagg.rule import run_rule


def main(smk) -> None:
    samples = smk.params.samples
    kb_dirs = {s: Path(p).parent for s, p in zip(samples, smk.input.bus, strict=True)}
    filtered = dict(zip(samples, smk.input.filtered, strict=True))
    table = write_rates(kb_dirs, filtered, smk.output[0])
    print(table.to_string(index=False))


run_rule(snakemake, main)
