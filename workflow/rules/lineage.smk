# Optional lineage in lamindb (config lamindb.enabled): the run's outputs as artifacts of a
# run of transform kbagg, in a local instance (kbagg.lineage.register).
LAMINDB = config["lamindb"]


def lineage_inputs(wildcards):
    """The aggregates (and the SOMA store's manifest) of this run, the per-sample matrices
    and the provenance record of the main kind (filtered, or raw without cell calling).
    """
    kind = "filtered" if FILTER else "raw"
    inputs = {
        f"{kind}.{AGG['format']}": aggregate_path(kind),
        "provenance": f"results/aggregate/{kind}.provenance.json",
        "samples": expand(sample_matrix(kind), sample=SAMPLES),
    }
    if FILTER and AGG["raw"]:
        inputs[f"raw.{AGG['format']}"] = aggregate_path("raw")
    if SHEET.has_features and FILTER:
        inputs["filtered.h5mu"] = "results/aggregate/filtered.h5mu"
    if AGG["soma"]["enabled"] and FILTER:
        inputs["soma_manifest"] = "results/aggregate/soma_manifest.json"
    return inputs


def lineage_artifact_names():
    names = lineage_inputs(None).keys()
    return [n for n in names if n not in ("provenance", "samples", "soma_manifest")]


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
