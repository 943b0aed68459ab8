# Depth normalization like cellranger aggr --normalize=mapped (aggregate.normalize: mapped):
# every sample's reads thinned in kb's BUS file to the lowest sample's mapped reads per called
# cell, recounted with kb's bustools count switches (kbagg.normalize, docs/normalization.md).


rule normalize_rates:
    input:
        bus=[kb_file(s, "output.unfiltered.bus") for s in SAMPLES],
        filtered=expand(sample_matrix("filtered"), sample=SAMPLES),
    output:
        "results/normalize/rates.tsv",
    log:
        "logs/normalize/rates.log",
    benchmark:
        "benchmarks/normalize/rates.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("aggregate")["threads"]
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=rule_resources("aggregate")["runtime"],
    params:
        samples=SAMPLES,
    script:
        script_path("normalize_rates.py")


rule normalize_sample:
    input:
        bus=sample_kb_file("output.unfiltered.bus"),
        kb_info=sample_kb_file("kb_info.json"),
        t2g=REFERENCE["t2g"],
        filtered=sample_matrix("filtered"),
        rates="results/normalize/rates.tsv",
    output:
        "results/samples/{sample}/filtered.normalized.h5ad",
    log:
        "logs/normalize/{sample}.log",
    benchmark:
        "benchmarks/normalize/{sample}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("aggregate")["threads"]
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=rule_resources("aggregate")["runtime"],
    params:
        seed=AGG["normalize_seed"],
    script:
        script_path("normalize_sample.py")


rule aggregate_normalized:
    input:
        matrices=expand(
            "results/samples/{sample}/filtered.normalized.h5ad", sample=SAMPLES
        ),
        kb_info=[kb_file(s, "kb_info.json") for s in SAMPLES],
        rates="results/normalize/rates.tsv",
        provenance="results/aggregate/filtered.provenance.json",
    output:
        aggregate="results/aggregate/filtered.normalized.h5ad",
        table=report(
            "results/qc/normalization.tsv",
            caption="../report/normalization.rst",
            category="QC",
            subcategory="all samples",
            labels={"sample": "all", "result": "depth normalization (TSV)"},
        ),
    log:
        "logs/aggregate/filtered_normalized.log",
    benchmark:
        "benchmarks/aggregate/filtered_normalized.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("aggregate")["threads"]
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=rule_resources("aggregate")["runtime"],
        chunk_entries=chunk_entries,
    params:
        samples=SAMPLES,
        concat=CONCAT,
        seed=AGG["normalize_seed"],
        compression=AGG["compression"] if AGG["format"] == "h5ad" else None,
        metadata=SHEET.obs_metadata().to_dict("list"),
    script:
        script_path("aggregate_normalized.py")
