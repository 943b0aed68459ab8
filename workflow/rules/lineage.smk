# Optional lineage in lamindb (config lamindb.enabled): the run's outputs as artifacts of a
# run of transform kbagg, in a local instance (kbagg.lineage.register).
LAMINDB = config["lamindb"]


rule lineage:
    input:
        unpack(lineage_inputs),
    output:
        "results/aggregate/lamindb.json",
    log:
        "logs/aggregate/lineage.log",
    benchmark:
        "benchmarks/aggregate/lineage.tsv"
    conda:
        "../../envs/lamindb.yaml"
    resources:
        mem_mb=mem_mb("lineage"),
        runtime=rule_resources("lineage")["runtime"],
    params:
        instance=LAMINDB["instance"],
        key_prefix=LAMINDB["key_prefix"],
        samples=SAMPLES,
        artifact_names=lineage_artifact_names(),
        soma_uri=AGG["soma"]["uri"] if AGG["soma"]["enabled"] and FILTER else "",
        soma_name=Path(AGG["soma"]["uri"]).name,
        config=provenance_config(),
    script:
        script_path("lineage.py")
