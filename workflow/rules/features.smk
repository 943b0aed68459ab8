# Feature-barcode libraries (sheet column feature_type): one kite index per feature type,
# kb count --workflow kite(:10xFB) per library, counts kept for the cells called on gene
# expression, hashtags demultiplexed, guides called per cell, and MuData per sample.


rule feature_index:
    input:
        reference=config.get("feature_reference", []),
    output:
        features="resources/features/{modality}/features.tsv",
        index="resources/features/{modality}/index.idx",
        t2g="resources/features/{modality}/t2g.txt",
        mismatch_fasta="resources/features/{modality}/mismatch.fa",
    log:
        "logs/feature_index/{modality}.log",
    benchmark:
        "benchmarks/feature_index/{modality}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("reference")["threads"]
    resources:
        mem_mb=mem_mb("reference"),
        runtime=rule_resources("reference")["runtime"],
    params:
        feature_type=lambda wc: FEATURE_TYPE_OF[wc.modality],
    script:
        script_path("feature_index.py")


rule count_features:
    input:
        unpack(feature_count_inputs),
    output:
        h5ad="results/samples/{sample}/{modality}.h5ad",
        run_info="results/samples/{sample}/kb_{modality}/run_info.json",
    log:
        "logs/count_features/{sample}_{modality}.log",
    benchmark:
        "benchmarks/count_features/{sample}_{modality}.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("kb_count")["threads"]
    resources:
        mem_mb=mem_mb("kb_count"),
        runtime=rule_resources("kb_count")["runtime"],
    params:
        feature_type=lambda wc: FEATURE_TYPE_OF[wc.modality],
        technology=lambda wc: SHEET.technology(wc.sample, FEATURE_TYPE_OF[wc.modality]),
        hashtags=lambda wc: HASHTAG_SAMPLES.get(wc.sample, {}),
        guide_min_umis=config["guides"]["min_umis"],
        extra_args=COUNT_EXTRA_ARGS,
    script:
        script_path("count_features.py")


rule sample_h5mu:
    input:
        unpack(sample_modalities),
    output:
        "results/samples/{sample}/filtered.h5mu",
    log:
        "logs/sample_h5mu/{sample}.log",
    benchmark:
        "benchmarks/sample_h5mu/{sample}.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("cells")["threads"]
    resources:
        mem_mb=mem_mb("cells"),
        runtime=rule_resources("cells")["runtime"],
    script:
        script_path("sample_h5mu.py")
