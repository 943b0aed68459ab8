# kb ref once for all samples, and each technology's barcode on-list once for all samples.
if "fasta" in REF_CONFIG:

    rule reference:
        input:
            fasta=REF_CONFIG["fasta"],
            gtf=REF_CONFIG["gtf"],
        output:
            **REFERENCE,
        log:
            "logs/reference.log",
        benchmark:
            "benchmarks/reference.tsv"
        conda:
            "../../envs/kb.yaml"
        threads: rule_resources("reference")["threads"]
        resources:
            mem_mb=mem_mb("reference"),
            runtime=rule_resources("reference")["runtime"],
        params:
            workflow=config["workflow"],
            outdir=lambda wc, output: Path(output.index).parent,
        shell:
            "$KBAGG_PYTHON $KBAGG_SCRIPTS/kb_ref.py --fasta-gtf {input.fasta} {input.gtf}"
            " --workflow {params.workflow} --outdir {params.outdir}"
            " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"

elif "download" in REF_CONFIG:

    rule reference_download:
        output:
            **REFERENCE,
        log:
            "logs/reference_download.log",
        benchmark:
            "benchmarks/reference_download.tsv"
        conda:
            "../../envs/kb.yaml"
        threads: rule_resources("reference")["threads"]
        resources:
            mem_mb=mem_mb("reference"),
            runtime=rule_resources("reference")["runtime"],
        params:
            name=REF_CONFIG["download"],
            workflow=config["workflow"],
            outdir=lambda wc, output: Path(output.index).parent,
        shell:
            "$KBAGG_PYTHON $KBAGG_SCRIPTS/kb_ref.py --download {params.name}"
            " --workflow {params.workflow} --outdir {params.outdir}"
            " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}"


rule onlist:
    output:
        "resources/onlists/{technology}.txt",
    log:
        "logs/onlist/{technology}.log",
    benchmark:
        "benchmarks/onlist/{technology}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("onlist")["threads"]
    resources:
        mem_mb=mem_mb("onlist"),
        runtime=rule_resources("onlist")["runtime"],
    shell:
        "$KBAGG_PYTHON $KBAGG_SCRIPTS/prepare_onlist.py {wildcards.technology} {output} > {log} 2>&1"
