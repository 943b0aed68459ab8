"""Rule kb_count: `kb count` for one sample with all its lanes; raw and filtered h5ad."""

from pathlib import Path

from kbagg.count.kb_count import CountJob, run_count
from kbagg.rule import run_rule


def main(smk) -> None:
    inputs, output, params = smk.input, smk.output, smk.params
    onlist = inputs.get("onlist")
    job = CountJob(
        sample=smk.wildcards.sample,
        fastqs=list(inputs.fastqs),
        index=inputs.index,
        t2g=inputs.t2g,
        technology=params.technology,
        workflow=params.workflow,
        c1=inputs.get("c1"),
        c2=inputs.get("c2"),
        # An empty on-list file marks a technology kb has no on-list for.
        onlist=onlist if onlist and Path(onlist).stat().st_size else None,
        kb_dir=Path(output.run_info).parent,
        raw_h5ad=Path(output.raw),
        filtered_h5ad=Path(output.filtered) if output.get("filtered") else None,
        filter_threshold=params.filter_threshold,
        threads=smk.threads,
        memory_mb=smk.resources.mem_mb,
        extra_args=params.extra_args,
    )
    written = run_count(job)
    shapes = ", ".join(f"{k} {a.n_obs} cells x {a.n_vars} genes" for k, a in written.items())
    print(f"sample '{job.sample}': {shapes}")


run_rule(snakemake, main)
