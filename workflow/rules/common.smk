# Config and sample sheet: validated once at parse time, with errors that name the key,
# the sheet line, the sample and the column.
import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# Paths of this workflow's own files, whatever the working directory or the calling workflow
# (when used as a Snakemake module).
REPO = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[1]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(REPO / "src"))
# Jobs run scripts/ with the conda env's python under --use-conda, else with the Python that
# runs Snakemake (a venv need not be activated). Both reach the jobs through the environment,
# not as paths in params or in the shell template: Snakemake reruns a job when either changes,
# and moving the clone or the venv should not rerun the whole workflow.
from snakemake.settings.types import DeploymentMethod

os.environ.update(
    KBAGG_SCRIPTS=str(SCRIPTS),
    KBAGG_PYTHON=(
        "python"
        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        else sys.executable
    ),
)

from kbagg.kb import KbError, onlist_path_in_package
from kbagg.reference import reference_outputs
from kbagg.samples import SampleSheetError, load_sample_sheet
from kbagg.simulate import demo_outputs

DEMO_DIR = "resources/demo"

validate(config, "../schemas/config.schema.yaml")
if config["workflow"] != "standard" and "index" in config["reference"]:
    for key in ("c1", "c2"):
        if key not in config["reference"]:
            raise WorkflowError(
                f"config reference.{key}: required with workflow '{config['workflow']}' "
                "and a prebuilt reference.index"
            )


def _validate_sheet_rows(table):
    validate(table, "../schemas/samples.schema.yaml", set_default=False)


try:
    SHEET = load_sample_sheet(
        config["samples"],
        config["technology"],
        will_exist=[p for paths in demo_outputs(DEMO_DIR).values() for p in paths],
        validate_rows=_validate_sheet_rows,
    )
    for _sample in SHEET.names:
        onlist_path_in_package(SHEET.technology(_sample))
except (SampleSheetError, KbError) as error:
    raise WorkflowError(str(error))
SAMPLES = SHEET.names
FILTER = config["filter"]["enabled"]


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES),
    kind="raw|filtered",


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
        if onlist_path_in_package(technology)
        else None
    )


def count_inputs(wildcards):
    inputs = {"fastqs": SHEET.fastqs(wildcards.sample), **reference_files()}
    onlist = onlist_file(SHEET.technology(wildcards.sample))
    if onlist:
        inputs["onlist"] = onlist
    return inputs


def sample_matrix(kind):
    return f"results/samples/{{sample}}/{kind}.h5ad"


def final_outputs():
    kinds = (["filtered"] if FILTER else []) + (
        ["raw"] if config["aggregate"]["raw"] or not FILTER else []
    )
    return [f"results/aggregate/{kind}.h5ad" for kind in kinds] + qc_outputs()


def qc_outputs():
    """Per-sample metrics and knee plots, and the cross-sample summary (rules in qc.smk)."""
    per_sample = ["results/qc/{sample}/metrics.tsv", "results/qc/{sample}/knee.png"]
    summary = [f"results/qc/summary.{ext}" for ext in ("tsv", "png", "html")]
    return expand(per_sample, sample=SAMPLES) + summary


# --- aggregate -------------------------------------------------------------------------
def max_elems(wildcards, attempt):
    """Matrix elements the aggregate holds at once: the config's value, else a quarter of
    the job's memory at 16 bytes per element. A resource, not a param: memory (which grows
    with the attempt) must not make Snakemake rerun the aggregate."""
    if config["aggregate"]["max_elems"]:
        return config["aggregate"]["max_elems"]
    memory_mb = mem_mb("aggregate")(wildcards, attempt)
    return max(1_000_000, memory_mb * 2**20 // 4 // 16)


def provenance_config():
    """The config as recorded in uns['kbagg'], without the keys that cannot change the
    aggregate (resources, QC warning thresholds): editing those does not rerun it."""
    kept = {k: v for k, v in config.items() if k not in ("resources", "qc")}
    return json.dumps(kept, sort_keys=True)


def provenance_sample_sheet():
    return json.dumps(
        {
            "lanes": SHEET.lanes.drop(columns="line").to_dict("list"),
            "metadata": SHEET.metadata().to_dict("list"),
        }
    )
