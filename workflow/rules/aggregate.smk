# One h5ad for all samples, by the chunked on-disk concat (scripts/concat_on_disk.py).
AGG = config["aggregate"]


rule sample_metadata:
    output:
        "results/aggregate/sample_metadata.tsv",
    log:
        "logs/sample_metadata.log",
    benchmark:
        "benchmarks/sample_metadata.tsv"
    localrule: True
    conda:
        "../../envs/python.yaml"
    params:
        # The table itself is the parameter: editing a metadata column reruns this rule and
        # the aggregate, and nothing upstream.
        table=json.dumps(SHEET.metadata().to_dict("list")),
        label=AGG["label"],
    shell:
        "$KBAGG_PYTHON $KBAGG_SCRIPTS/sample_metadata.py --label {params.label} --table {params.table:q} -o {output}"
        " > {log} 2>&1"


rule aggregate:
    input:
        matrices=expand(sample_matrix("{{kind}}"), sample=SAMPLES),
        metadata="results/aggregate/sample_metadata.tsv",
        kb_info=expand("results/samples/{sample}/kb/kb_info.json", sample=SAMPLES),
    output:
        "results/aggregate/{kind}.h5ad",
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
        max_elems=max_elems,
    params:
        named=lambda wc, input: " ".join(
            f"{sample}={path}" for sample, path in zip(SAMPLES, input.matrices)
        ),
        kb_info=lambda wc, input: " ".join(
            f"--kb-info {sample}={path}"
            for sample, path in zip(SAMPLES, input.kb_info)
        ),
        join=AGG["join"],
        label=AGG["label"],
        index_unique=AGG["index_unique"],
        config=provenance_config(),
        sheet=provenance_sample_sheet(),
    shell:
        # Provenance (versions, config, sheet, input checksums) goes into uns['kbagg'].
        "prov={resources.tmpdir}/kbagg-provenance-$$.json"
        " && $KBAGG_PYTHON $KBAGG_SCRIPTS/provenance.py --config {params.config:q}"
        " --sample-sheet {params.sheet:q} {params.kb_info} -o $prov {params.named} > {log} 2>&1"
        " && $KBAGG_PYTHON $KBAGG_SCRIPTS/concat_on_disk.py -o {output} --join {params.join}"
        " --label {params.label} --index-unique={params.index_unique:q}"
        " --obs-metadata {input.metadata} --max-elems {resources.max_elems} --uns kbagg=$prov"
        " {params.named} >> {log} 2>&1 || {{ rm -f $prov; tail -n 1 {log} >&2; exit 1; }}"
        "; rm -f $prov"
