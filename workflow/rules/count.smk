# Per lane of every library: the FASTQ check, beside kb count (not before it). Per sample:
# kb count of the gene-expression library with all of its lanes, into kb's own folder.


rule fastq_check:
    input:
        fastqs=lane_fastqs,
    output:
        "results/samples/{sample}/fastq_check/{library}_lane{lane}.json",
    log:
        "logs/fastq_check/{sample}/{library}_lane{lane}.log",
    benchmark:
        "benchmarks/fastq_check/{sample}/{library}_lane{lane}.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("fastq_check")["threads"]
    resources:
        mem_mb=mem_mb("fastq_check"),
        runtime=rule_resources("fastq_check")["runtime"],
    params:
        min_lengths=lambda wc: lane_technology(wc).min_lengths,
        labels=lambda wc: lane_file_labels(wc),
    script:
        script_path("fastq_check.py")


rule kb_count:
    input:
        unpack(count_inputs),
    output:
        **({"filtered": kb_matrix("filtered")} if FILTER else {}),
        raw=kb_matrix("raw"),
        # sorted, barcode-corrected: what aggregate.normalize thins
        bus="results/samples/{sample}/kb/output.unfiltered.bus",
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
        filter=FILTER,
        filter_threshold=config["filter"]["threshold"],
        extra_args=COUNT_EXTRA_ARGS,
        cells=lambda wc: plate_cells(wc.sample),
    script:
        script_path("kb_count.py")
