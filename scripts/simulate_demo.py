"""Rule simulate_demo: the deterministic demo data set (genome, GTF, 10x FASTQs, truth)."""

from kbagg.rule import run_rule
from kbagg.simulate.demo import write_demo


def main(smk) -> None:
    outputs = write_demo(smk.params.outdir)
    print(f"wrote {sum(len(v) for v in outputs.values())} files under {smk.params.outdir}")


run_rule(snakemake, main)
