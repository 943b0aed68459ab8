"""Rule kb_count: `kb count` for one sample with all its lanes, into kb's own folder."""

from pathlib import Path

from kbagg.count.kb_count import CountJob, run_count
from kbagg.rule import run_rule


def main(smk) -> None:
    inputs, params = smk.input, smk.params
    onlist = inputs.get("onlist")
    job = CountJob(
        sample=smk.wildcards.sample,
        fastqs=list(inputs.fastqs),
        index=inputs.index,
        t2g=inputs.t2g,
        technology=params.technology,
        kb_dir=Path(smk.output.run_info).parent,
        filter=params.filter,
        workflow=params.workflow,
        c1=inputs.get("c1"),
        c2=inputs.get("c2"),
        # An empty on-list file marks a technology kb has no on-list for.
        onlist=onlist if onlist and Path(onlist).stat().st_size else None,
        filter_threshold=params.filter_threshold,
        threads=smk.threads,
        memory_mb=smk.resources.mem_mb,
        extra_args=params.extra_args,
        cells=list(params.cells) if params.cells else None,
        replacement=inputs.get("replacement"),
    )
    kb_dir = run_count(job)
    print(f"sample '{job.sample}': kb count finished in {kb_dir}")


run_rule(snakemake, main)
