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
        filter_threshold=config["filter"]["threshold"],
        extra_args=COUNT_EXTRA_ARGS,
    script:
        "../../scripts/kb_count.py"
