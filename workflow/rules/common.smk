# Config and sample sheet: read and validated once at parse time, with errors that name the
# key, the sheet line, the sample and the column. Rules get what they need from here as
# Python objects (script: directive), so no sheet or config value passes through a shell.
import re
from importlib import metadata
from pathlib import Path

from snakemake.utils import validate


def _require_kbagg():
    """The kbagg package must be installed, at this workflow's version: its code runs the
    rules. A module loaded from a git source carries no importable Python package."""
    source = Path(workflow.source_path("../../src/kbagg/__init__.py")).read_text()
    wanted = re.search(r'__version__ = "([^"]+)"', source).group(1)
    install = f'pip install "kbagg[workflow] @ git+https://github.com/kbagg/kbagg.git@v{wanted}"'
    try:
        installed = metadata.version("kbagg")
    except metadata.PackageNotFoundError:
        raise WorkflowError(
            f"kbagg {wanted}: the kbagg Python package is not installed in the environment "
            f"that runs Snakemake; install it: {install} (or pip install -e . in a clone)"
        )
    if installed != wanted:
        raise WorkflowError(
            f"this workflow is kbagg {wanted} but the environment running Snakemake has "
            f"kbagg {installed}; install the matching version: {install}"
        )


_require_kbagg()

from kbagg.feature_types import FEATURE_TYPE_OF
from kbagg.concat.options import chunk_entries_for
from kbagg.concat.output import check_output_options
from kbagg.config import (
    check_config,
    check_download,
    check_feature_config,
    check_normalize,
    check_soma_store,
    check_technologies,
    count_extra_args,
    demultiplexed_metadata,
    hashtag_samples,
)
from kbagg.count.kite import kite_mode
from kbagg.errors import KbaggError
from kbagg.kb.technology import technology as kb_technology
from kbagg.lineage.register import check_instance
from kbagg.reference.build import reference_outputs
from kbagg.sheet import load_sample_sheet
from kbagg.simulate.spec import demo_outputs

DEMO_DIR = "resources/demo"


def _planned_feature_reference():
    """The demo's feature reference, which rule simulate_demo writes."""
    from kbagg.simulate.features import DEMO_FEATURES, reference_table

    return reference_table(DEMO_FEATURES)


def _validate_sheet_rows(table):
    validate(table, "../schemas/samples.schema.yaml", set_default=False)


try:
    check_config(config)  # clear messages for what the schema would word obscurely
    validate(config, "../schemas/config.schema.yaml")
    check_download(config)
    check_normalize(config)
    _demo_files = [p for paths in demo_outputs(DEMO_DIR).values() for p in paths]
    SHEET = load_sample_sheet(
        config["samples"],
        config["technology"],
        will_exist=_demo_files,
        validate_rows=_validate_sheet_rows,
    )
    SHEET.check_obs_columns(config["aggregate"]["label"])  # kbagg.obs_columns
    check_technologies(config, SHEET)
    COUNT_EXTRA_ARGS = count_extra_args(config["count"]["extra"])
    check_feature_config(
        config,
        SHEET,
        will_exist=_demo_files,
        planned_reference=_planned_feature_reference,
    )
    HASHTAG_SAMPLES = hashtag_samples(config)
    DEMULTIPLEXED_METADATA = demultiplexed_metadata(config, SHEET.metadata_columns)
    check_output_options(
        config["aggregate"]["format"],
        config["aggregate"]["compression"],
        config["aggregate"]["gene_major"],
    )
    # Once, in the process that plans the run: a job's own process (a cluster job, or the
    # soma job itself) need not open the store again.
    _soma = config["aggregate"]["soma"]
    if _soma["enabled"] and config["filter"]["enabled"] and workflow.is_main_process:
        check_soma_store(_soma["uri"], _soma["measurement"])
    if config["lamindb"]["enabled"]:
        check_instance(config["lamindb"]["instance"], config["lamindb"]["key_prefix"])
except KbaggError as error:
    raise WorkflowError(str(error))
SAMPLES = SHEET.names
FILTER = config["filter"]["enabled"]


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES),
    kind="raw|filtered",
    lane=r"\d+",
    library="rna|prot|hashtag|crispr",
    modality="prot|hashtag|crispr",


RULES_DIR = workflow.current_basedir  # this file's folder, as a source (local or git)


def script_path(name):
    """scripts/<name> for a rule's script: directive. Relative to the rule files, except in a
    module loaded with gitfile(...): there Snakemake 9.27 fails to join a relative script
    path to the git source when it compares script and output times (TypeError in
    LocalGitFile.join), so the script is named by its git URI, which Snakemake fetches
    through its source cache like any remote script. Snakemake evaluates this when the job
    runs, so the folder is taken at parse time (RULES_DIR)."""
    relative = f"../../scripts/{name}"
    if type(RULES_DIR).__name__ == "LocalGitFile":
        return RULES_DIR.join(relative).get_path_or_uri(secret_free=False)
    return relative


def rule_resources(name):
    return config["resources"][name]


def mem_mb(name):
    """Memory grows with the attempt, so --retries after an out-of-memory kill asks for more."""
    base = rule_resources(name)["mem_mb"]
    return lambda wildcards, attempt: base * attempt


# --- reference -------------------------------------------------------------------------
REF_CONFIG = config["reference"]
REF_DIR = f"resources/reference/{config['workflow']}"
if "index" in REF_CONFIG:
    REFERENCE = {
        k: REF_CONFIG[k] for k in ("index", "t2g", "c1", "c2") if k in REF_CONFIG
    }
else:
    REFERENCE = reference_outputs(
        REF_DIR, config["workflow"], download="download" in REF_CONFIG
    )


def reference_files():
    """index, t2g (and c1, c2 for nac/lamanno): what kb count needs."""
    return {k: v for k, v in REFERENCE.items() if k in ("index", "t2g", "c1", "c2")}


# --- per sample --------------------------------------------------------------------------
def onlist_file(technology):
    """The shared on-list for technologies kb has one for; else none."""
    return (
        f"resources/onlists/{technology.lower()}.txt"
        if kb_technology(technology).onlist
        else None
    )


def plate_technology(sample):
    """The sample's technology when it is plate-based (every barcode a cell), else ''."""
    name = SHEET.technology(sample)
    return name if kb_technology(name).plate else ""


def plate_cells(sample):
    """The cell id of each lane of a plate counted from kb's batch file, else []."""
    if kb_technology(SHEET.technology(sample)).batch:
        return SHEET.cells(sample)
    return []


def replacement_file(technology):
    """kb's replacement list (-r) for technologies counted with one (SPLIT-SEQ), written
    once by rule replacement; else none."""
    return (
        f"resources/replacements/{technology.lower()}.txt"
        if kb_technology(technology).replacement
        else None
    )


def count_inputs(wildcards):
    inputs = {"fastqs": SHEET.fastqs(wildcards.sample), **reference_files()}
    technology = SHEET.technology(wildcards.sample)
    onlist = onlist_file(technology)
    if onlist:
        inputs["onlist"] = onlist
    replacement = replacement_file(technology)
    if replacement:
        inputs["replacement"] = replacement
    return inputs


def library_type(wildcards):
    """The feature type of library `wildcards.library` (rna, prot, hashtag, crispr)."""
    return FEATURE_TYPE_OF[wildcards.library]


def lane_fastqs(wildcards):
    """fastq_1 ... fastq_N of lane `wildcards.lane` (1-based, in sheet order) of a library."""
    lanes = SHEET.lane_files(wildcards.sample, library_type(wildcards))
    return list(lanes[int(wildcards.lane) - 1])


def lane_technology(wildcards):
    """The kb technology of the library of lane `wildcards.lane`."""
    return kb_technology(SHEET.technology(wildcards.sample, library_type(wildcards)))


def lane_file_labels(wildcards):
    """What each FASTQ of the lane is, for the check's messages: kb's names (I1, I2, R1,
    R2 for Smart-seq3), R1 and R2 for a pair, else fastq_1 ... fastq_N."""
    names = lane_technology(wildcards).file_names
    n_files = len(lane_fastqs(wildcards))
    if len(names) == n_files:
        return list(names)
    if n_files == 2:
        return ["R1", "R2"]
    return [f"fastq_{i}" for i in range(1, n_files + 1)]


def lane_checks(sample, library="rna"):
    """The FASTQ check record of every lane of one library of `sample` (a SPLiT-seq library
    shared by samples is checked once, as its kb count runs once: SHEET.counted_with).
    """
    n_lanes = len(SHEET.lane_files(sample, FEATURE_TYPE_OF[library]))
    if library == "rna":
        sample = SHEET.counted_with(sample)
    return [
        f"results/samples/{sample}/fastq_check/{library}_lane{lane}.json"
        for lane in range(1, n_lanes + 1)
    ]


def all_lane_checks(sample):
    return [
        path
        for library in SHEET.modalities(sample)
        for path in lane_checks(sample, library)
    ]


def kb_file(sample, name):
    """File `name` of the kb count folder that holds `sample`'s reads: its own, or, for the
    samples sharing one SPLiT-seq library, that of the library's first sample (counted once;
    each sample keeps the cells of its round-1 wells)."""
    return f"results/samples/{SHEET.counted_with(sample)}/kb/{name}"


def sample_kb_file(name):
    """kb_file as an input function of a rule with a {sample} wildcard."""
    return lambda wildcards: kb_file(wildcards.sample, name)


def kb_matrix(kind):
    """kb's own h5ad of `kind` (raw: counts_unfiltered, filtered: counts_filtered)."""
    folder = "counts_unfiltered" if kind == "raw" else "counts_filtered"
    return f"results/samples/{{sample}}/kb/{folder}/adata.h5ad"


def cells_inputs(wildcards):
    sample = wildcards.sample
    inputs = {
        "raw": kb_file(sample, "counts_unfiltered/adata.h5ad"),
        "run_info": kb_file(sample, "run_info.json"),
        "checks": lane_checks(sample),
        "t2g": REFERENCE["t2g"],
    }
    if FILTER:
        inputs["filtered"] = kb_file(sample, "counts_filtered/adata.h5ad")
    # SPLiT-seq: the round-1 wells of each barcode, from the list kb count was given
    replacement = replacement_file(SHEET.technology(sample))
    if replacement:
        inputs["replacement"] = replacement
    return inputs


def feature_count_inputs(wildcards):
    """kb count of one feature library: its FASTQs, its type's index, the on-list kite
    needs, the gene-expression cells to keep, and the library's FASTQ checks."""
    feature_type = FEATURE_TYPE_OF[wildcards.modality]
    technology = SHEET.technology(wildcards.sample, feature_type)
    inputs = {
        "fastqs": SHEET.fastqs(wildcards.sample, feature_type),
        "index": f"resources/features/{wildcards.modality}/index.idx",
        "t2g": f"resources/features/{wildcards.modality}/t2g.txt",
        "reference": config["feature_reference"],
        "cells": f"results/samples/{wildcards.sample}/filtered.h5ad",
        "checks": lane_checks(wildcards.sample, wildcards.modality),
    }
    onlist = onlist_file(kite_mode(technology).onlist_technology)
    if onlist:
        inputs["onlist"] = onlist
    return inputs


def modality_files(sample):
    """Every modality's cells x features of a sample (rna: its filtered.h5ad)."""
    return {
        m: f"results/samples/{sample}/" + ("filtered" if m == "rna" else m) + ".h5ad"
        for m in SHEET.modalities(sample)
    }


def sample_modalities(wildcards):
    return modality_files(wildcards.sample)


def aggregate_h5mu_inputs(wildcards):
    """Per sample, its modality files in the order of SHEET.modalities (params.modalities);
    the provenance of the filtered aggregate (the same rna inputs); and the filtered h5ad
    aggregate as the rna modality when it is one (an uncompressed h5ad)."""
    inputs = {
        "modalities": [p for s in SAMPLES for p in modality_files(s).values()],
        "provenance": "results/aggregate/filtered.provenance.json",
    }
    aggregate = config["aggregate"]
    if aggregate["format"] == "h5ad" and aggregate["compression"] in (None, "none"):
        inputs["rna_aggregate"] = "results/aggregate/filtered.h5ad"
    return inputs


def aggregate_path(kind):
    """results/aggregate/<kind>.h5ad, or .zarr with aggregate.format zarr."""
    return f"results/aggregate/{kind}.{config['aggregate']['format']}"


def sample_matrix(kind):
    return f"results/samples/{{sample}}/{kind}.h5ad"


def final_outputs():
    kinds = (["filtered"] if FILTER else []) + (
        ["raw"] if config["aggregate"]["raw"] or not FILTER else []
    )
    h5mu = []
    if SHEET.has_features and FILTER:
        h5mu = ["results/aggregate/filtered.h5mu"]
        h5mu += [
            f"results/samples/{s}/filtered.h5mu"
            for s in SAMPLES
            if SHEET.feature_libraries(s)
        ]
    soma = (
        ["results/aggregate/soma_manifest.json"]
        if config["aggregate"]["soma"]["enabled"] and FILTER
        else []
    )
    gene_major = (
        [f"results/aggregate/{kind}.by_gene.h5ad" for kind in kinds]
        if config["aggregate"]["gene_major"]
        else []
    )
    lineage = ["results/aggregate/lamindb.json"] if config["lamindb"]["enabled"] else []
    normalized = (
        ["results/aggregate/filtered.normalized.h5ad", "results/qc/normalization.tsv"]
        if config["aggregate"]["normalize"] == "mapped"
        else []
    )
    return (
        [aggregate_path(kind) for kind in kinds]
        + normalized
        + gene_major
        + h5mu
        + soma
        + lineage
        + qc_outputs()
    )


def qc_outputs():
    """Per-sample metrics and knee plots, and the cross-sample summary (rules in qc.smk)."""
    per_sample = ["results/qc/{sample}/metrics.tsv", "results/qc/{sample}/knee.png"]
    summary = [f"results/qc/summary.{ext}" for ext in ("tsv", "png", "html")]
    multiqc = ["results/qc/multiqc_report.html"] if config["qc"]["multiqc"] else []
    hashtags = [
        f"results/qc/{s}/hashtags.{ext}"
        for s in SAMPLES
        if "hashtag" in SHEET.modalities(s)
        for ext in ("tsv", "png")
    ]
    return expand(per_sample, sample=SAMPLES) + summary + multiqc + hashtags


# --- aggregate -------------------------------------------------------------------------
def chunk_entries(wildcards, attempt):
    """Matrix entries (non-zeros) the aggregate holds at once: the config's value, else
    `chunk_entries_for` the job's memory (a quarter of it at the engine's bytes per entry,
    kbagg.concat.options). A resource, not a param: memory (which grows with the attempt)
    must not make Snakemake rerun it.
    """
    if config["aggregate"]["chunk_entries"]:
        return config["aggregate"]["chunk_entries"]
    return chunk_entries_for(mem_mb("aggregate")(wildcards, attempt))


def _sorted(value):
    """Dicts with sorted keys, all the way down: reordering the config's keys is no change."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def provenance_config():
    """The config as recorded in uns['kbagg'], without the keys that cannot change the
    aggregate (resources, QC warning thresholds, lamindb, the depth normalization, which
    writes its own aggregate and records itself there, and the SOMA store, whose manifest
    records its own settings): editing those does not rerun it.
    """
    unused = ("resources", "qc", "lamindb")
    recorded = {k: v for k, v in config.items() if k not in unused}
    recorded["aggregate"] = {
        k: v
        for k, v in recorded["aggregate"].items()
        if k not in ("normalize", "normalize_seed", "soma")
    }
    return _sorted(recorded)


def provenance_sample_sheet():
    """The sheet's lanes and metadata; columns empty in every row (fastq_3 ... of a shorter
    layout, `cell` of droplets) are left out, empty cells of the others are None."""
    lanes = SHEET.lanes.drop(columns="line").dropna(axis="columns", how="all")
    lanes = lanes.astype(object).where(lanes.notna(), None)
    return {
        "lanes": lanes.to_dict("list"),
        "metadata": SHEET.metadata().to_dict("list"),
    }


# --- lineage (rule lineage, config lamindb) ---------------------------------------------
def lineage_inputs(wildcards):
    """The aggregates (and the SOMA store's manifest) of this run, the per-sample matrices
    and the provenance record of the main kind (filtered, or raw without cell calling).
    """
    kind = "filtered" if FILTER else "raw"
    inputs = {
        f"{kind}.{config['aggregate']['format']}": aggregate_path(kind),
        "provenance": f"results/aggregate/{kind}.provenance.json",
        "samples": expand(sample_matrix(kind), sample=SAMPLES),
    }
    if FILTER and config["aggregate"]["raw"]:
        inputs[f"raw.{config['aggregate']['format']}"] = aggregate_path("raw")
    if SHEET.has_features and FILTER:
        inputs["filtered.h5mu"] = "results/aggregate/filtered.h5mu"
    if config["aggregate"]["soma"]["enabled"] and FILTER:
        inputs["soma_manifest"] = "results/aggregate/soma_manifest.json"
    return inputs


def lineage_artifact_names():
    names = lineage_inputs(None).keys()
    return [n for n in names if n not in ("provenance", "samples", "soma_manifest")]
