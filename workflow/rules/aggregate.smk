# One h5ad for all samples, by the chunked on-disk concat (kbagg.concat).
AGG = config["aggregate"]
# The concat options every aggregate writer shares (kbagg.concat.options.ConcatOptions).
CONCAT = {key: AGG[key] for key in ("join", "label", "index_unique")}


rule aggregate:
    input:
        matrices=expand(sample_matrix("{{kind}}"), sample=SAMPLES),
        kb_info=[kb_file(s, "kb_info.json") for s in SAMPLES],
        checks=[path for sample in SAMPLES for path in all_lane_checks(sample)],
    output:
        aggregate=(
            directory("results/aggregate/{kind}.zarr")
            if AGG["format"] == "zarr"
            else "results/aggregate/{kind}.h5ad"
        ),
        # uns['kbagg'], computed once here and attached by every writer of this aggregate
        provenance="results/aggregate/{kind}.provenance.json",
    log:
        "logs/aggregate/{kind}.log",
    benchmark:
        "benchmarks/aggregate/{kind}.tsv"
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
        format=AGG["format"],
        compression=AGG["compression"],
        # A dict, not a DataFrame: Snakemake's rerun check hashes a DataFrame's values but
        # not its column names, so renaming a metadata column would not rerun this.
        metadata=SHEET.obs_metadata().to_dict("list"),
        config=provenance_config(),
        sample_sheet=provenance_sample_sheet(),
    script:
        script_path("aggregate.py")


rule aggregate_gene_major:
    input:
        "results/aggregate/{kind}.h5ad",
    output:
        "results/aggregate/{kind}.by_gene.h5ad",
    log:
        "logs/aggregate/{kind}_by_gene.log",
    benchmark:
        "benchmarks/aggregate/{kind}_by_gene.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("aggregate")["threads"]
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=rule_resources("aggregate")["runtime"],
        chunk_entries=chunk_entries,
    params:
        compression=AGG["compression"],
    script:
        script_path("aggregate_gene_major.py")


rule aggregate_h5mu:
    input:
        unpack(aggregate_h5mu_inputs),
    output:
        "results/aggregate/filtered.h5mu",
    log:
        "logs/aggregate/filtered_h5mu.log",
    benchmark:
        "benchmarks/aggregate/filtered_h5mu.tsv"
    conda:
        "../../envs/python.yaml"
    threads: rule_resources("aggregate")["threads"]
    resources:
        mem_mb=mem_mb("aggregate"),
        runtime=rule_resources("aggregate")["runtime"],
        chunk_entries=chunk_entries,
    params:
        samples=SAMPLES,
        modalities={s: SHEET.modalities(s) for s in SAMPLES},
        concat=CONCAT,
        metadata=SHEET.obs_metadata().to_dict("list"),
        demultiplexed_metadata=DEMULTIPLEXED_METADATA,
    script:
        script_path("aggregate_h5mu.py")


rule soma_register:
    input:
        matrices=expand(sample_matrix("filtered"), sample=SAMPLES),
    output:
        "results/aggregate/soma_reserved.json",
    log:
        "logs/aggregate/soma_register.log",
    benchmark:
        "benchmarks/aggregate/soma_register.tsv"
    conda:
        "../../envs/soma.yaml"
    threads: rule_resources("soma")["threads"]
    resources:
        mem_mb=mem_mb("soma"),
        runtime=rule_resources("soma")["runtime"],
    params:
        samples=SAMPLES,
        uri=AGG["soma"]["uri"],
        measurement=AGG["soma"]["measurement"],
        layout=AGG["soma"]["layout"],
        concat={key: CONCAT[key] for key in ("label", "index_unique")},
        metadata=SHEET.obs_metadata().to_dict("list"),
    script:
        script_path("soma_register.py")


# One job per sample, no lock: the writers run in parallel (Snakemake -j, SLURM).
rule soma_write:
    input:
        reserved="results/aggregate/soma_reserved.json",
        matrix=sample_matrix("filtered"),
    output:
        "results/aggregate/soma_write/{sample}.json",
    log:
        "logs/aggregate/soma_write/{sample}.log",
    benchmark:
        "benchmarks/aggregate/soma_write/{sample}.tsv"
    conda:
        "../../envs/soma.yaml"
    threads: rule_resources("soma")["threads"]
    resources:
        mem_mb=mem_mb("soma"),
        runtime=rule_resources("soma")["runtime"],
    params:
        uri=AGG["soma"]["uri"],
        layout=AGG["soma"]["layout"],
    script:
        script_path("soma_write.py")


rule soma:
    input:
        reserved="results/aggregate/soma_reserved.json",
        markers=expand("results/aggregate/soma_write/{sample}.json", sample=SAMPLES),
    output:
        "results/aggregate/soma_manifest.json",
    log:
        "logs/aggregate/soma.log",
    benchmark:
        "benchmarks/aggregate/soma.tsv"
    conda:
        "../../envs/soma.yaml"
    threads: rule_resources("soma")["threads"]
    resources:
        mem_mb=mem_mb("soma"),
        runtime=rule_resources("soma")["runtime"],
    params:
        uri=AGG["soma"]["uri"],
        # consolidated in this job, after the writers and under the store's lock
        max_fragments=AGG["soma"]["max_fragments"],
        layout=AGG["soma"]["layout"],
    script:
        script_path("soma.py")
