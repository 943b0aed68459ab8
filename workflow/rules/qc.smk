# QC per sample (metrics table + knee plot) and across samples (table, bar charts, HTML),
# all marked for `snakemake --report`. Bad samples get warnings, never failures.
QC = config["qc"]
# The warning thresholds: editing them reruns QC only.
QC_THRESHOLDS = {k: QC[k] for k in ("min_pct_pseudoaligned", "min_cells")}


rule qc_sample:
    input:
        **({"filtered": sample_matrix("filtered")} if FILTER else {}),
        raw=sample_matrix("raw"),
        run_info=sample_kb_file("run_info.json"),
        inspect=sample_kb_file("inspect.json"),
    output:
        metrics=report(
            "results/qc/{sample}/metrics.tsv",
            caption="../report/metrics.rst",
            category="QC",
            subcategory="{sample}",
            labels={"sample": "{sample}", "result": "metrics table"},
        ),
        knee=report(
            "results/qc/{sample}/knee.png",
            caption="../report/knee.rst",
            category="QC",
            subcategory="{sample}",
            labels={"sample": "{sample}", "result": "knee plot"},
        ),
    log:
        "logs/qc/{sample}.log",
    benchmark:
        "benchmarks/qc/{sample}.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("qc")["threads"]
    resources:
        mem_mb=mem_mb("qc"),
        runtime=rule_resources("qc")["runtime"],
    params:
        thresholds=QC_THRESHOLDS,
    script:
        script_path("qc_sample.py")


rule qc_summary:
    input:
        expand("results/qc/{sample}/metrics.tsv", sample=SAMPLES),
    output:
        table=report(
            "results/qc/summary.tsv",
            caption="../report/summary_table.rst",
            category="QC",
            subcategory="all samples",
            labels={"sample": "all", "result": "summary table (TSV)"},
        ),
        html=report(
            "results/qc/summary.html",
            caption="../report/summary_table.rst",
            category="QC",
            subcategory="all samples",
            labels={"sample": "all", "result": "summary table"},
        ),
        figure=report(
            "results/qc/summary.png",
            caption="../report/summary_figure.rst",
            category="QC",
            subcategory="all samples",
            labels={"sample": "all", "result": "summary figure"},
        ),
    log:
        "logs/qc_summary.log",
    benchmark:
        "benchmarks/qc_summary.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("qc")["threads"]
    resources:
        mem_mb=mem_mb("qc"),
        runtime=rule_resources("qc")["runtime"],
    params:
        thresholds=QC_THRESHOLDS,
    script:
        script_path("qc_summary.py")


rule multiqc:
    input:
        inspect=[kb_file(s, "inspect.json") for s in SAMPLES],
        summary="results/qc/summary.tsv",
    output:
        report(
            "results/qc/multiqc_report.html",
            caption="../report/multiqc.rst",
            category="QC",
            subcategory="all samples",
            labels={"sample": "all", "result": "MultiQC report"},
        ),
    log:
        "logs/multiqc.log",
    benchmark:
        "benchmarks/multiqc.tsv"
    conda:
        "../../envs/multiqc.yaml"
    threads: rule_resources("qc")["threads"]
    resources:
        mem_mb=mem_mb("qc"),
        runtime=rule_resources("qc")["runtime"],
    params:
        samples=SAMPLES,
    script:
        script_path("multiqc.py")


rule hashtag_qc:
    input:
        "results/samples/{sample}/hashtag.h5ad",
    output:
        table=report(
            "results/qc/{sample}/hashtags.tsv",
            caption="../report/hashtags.rst",
            category="QC",
            subcategory="{sample}",
            labels={"sample": "{sample}", "result": "hashtag assignments"},
        ),
        figure=report(
            "results/qc/{sample}/hashtags.png",
            caption="../report/hashtags.rst",
            category="QC",
            subcategory="{sample}",
            labels={"sample": "{sample}", "result": "hashtag figure"},
        ),
    log:
        "logs/qc/{sample}_hashtags.log",
    benchmark:
        "benchmarks/qc/{sample}_hashtags.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("qc")["threads"]
    resources:
        mem_mb=mem_mb("qc"),
        runtime=rule_resources("qc")["runtime"],
    script:
        script_path("hashtag_qc.py")
