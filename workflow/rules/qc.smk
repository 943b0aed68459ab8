# QC per sample (metrics table + knee plot) and across samples (table, bar charts, HTML),
# all marked for `snakemake --report`. Bad samples get warnings, never failures.
QC = config["qc"]


rule qc_sample:
    input:
        **({"filtered": sample_matrix("filtered")} if FILTER else {}),
        raw=sample_matrix("raw"),
        run_info="results/samples/{sample}/kb/run_info.json",
        inspect="results/samples/{sample}/kb/inspect.json",
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
        thresholds=QC,
    script:
        "../../scripts/qc_sample.py"


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
        thresholds=QC,
    script:
        "../../scripts/qc_summary.py"
