# kb count once per sample with all of its lanes; raw and (optionally) filtered matrices.


rule kb_count:
    input:
        unpack(count_inputs),
    output:
        **({"filtered": sample_matrix("filtered")} if FILTER else {}),
        raw=sample_matrix("raw"),
        run_info="results/samples/{sample}/kb/run_info.json",
        inspect="results/samples/{sample}/kb/inspect.json",
        kb_info="results/samples/{sample}/kb/kb_info.json",
    log:
        "logs/kb_count/{sample}.log",
    benchmark:
        "benchmarks/kb_count/{sample}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("kb_count")["threads"]
    resources:
        mem_mb=mem_mb("kb_count"),
        runtime=rule_resources("kb_count")["runtime"],
    params:
        technology=lambda wc: SHEET.technology(wc.sample),
        workflow=config["workflow"],
        capture=lambda wc, input: (
            f"--c1 {input.c1} --c2 {input.c2}" if "c1" in input.keys() else ""
        ),
        onlist=lambda wc, input: (
            f"--onlist {input.onlist}" if "onlist" in input.keys() else ""
        ),
        filtered=lambda wc, output: (
            f"--filtered {output.filtered}" if "filtered" in output.keys() else ""
        ),
        threshold=(
            f"--filter-threshold {config['filter']['threshold']}"
            if config["filter"]["threshold"] is not None
            else ""
        ),
        extra=config["count"]["extra"],
        kb_dir=lambda wc, output: Path(output.run_info).parent,
    shell:
        "$KBAGG_PYTHON $KBAGG_SCRIPTS/kb_count.py --sample {wildcards.sample}"
        " --index {input.index} --t2g {input.t2g} --technology {params.technology}"
        " --workflow {params.workflow} {params.capture} {params.onlist}"
        " --kb-dir {params.kb_dir} --raw {output.raw} {params.filtered} {params.threshold}"
        " --threads {threads} --memory-mb {resources.mem_mb} --extra={params.extra:q}"
        " {input.fastqs} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"
