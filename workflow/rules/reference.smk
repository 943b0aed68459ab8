# kb ref once for all samples, and each technology's barcode on-list (and replacement list,
# SPLIT-SEQ) once for all samples.
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
        script:
            script_path("reference.py")

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
            download=REF_CONFIG["download"],
            workflow=config["workflow"],
        script:
            script_path("reference.py")


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
    script:
        script_path("onlist.py")


rule replacement:
    output:
        "resources/replacements/{technology}.txt",
    log:
        "logs/replacement/{technology}.log",
    benchmark:
        "benchmarks/replacement/{technology}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("onlist")["threads"]
    resources:
        mem_mb=mem_mb("onlist"),
        runtime=rule_resources("onlist")["runtime"],
    script:
        script_path("replacement.py")
