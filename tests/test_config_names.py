"""Every config value that names something is checked against what it names before any
job runs: hashtag ids against the feature reference, pools and demultiplexed samples
against the sample sheet and each other, technologies against kb, the label against the
obs columns kbagg writes, SOMA stores and measurements, compression and format options.

Each row of docs/bad_input.md that these checks make has a test here: the check function
directly, and the workflow's wiring through `snakemake -n` (and, for the two cases of
issue 22, a real run on a fresh copy of the demo that stops before any job).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import copy_tree, run_snakemake

from kbagg.concat.output import check_output_options
from kbagg.config import (
    check_download,
    check_feature_config,
    check_soma_store,
    check_technologies,
)
from kbagg.errors import KbaggError
from kbagg.sheet import SampleSheetError, load_sample_sheet

# The demo's feature reference: six antibodies and four hashtags.
REFERENCE = """id,name,read,pattern,sequence,feature_type
ADT1,ADT1,R2,^NNNNNNNNNN(BC)NNNNNNNNN,AATCGGGACACTGAG,Antibody Capture
HTO1,HTO1,R2,5P(BC),ACAATAGACTCCATA,Multiplexing Capture
HTO2,HTO2,R2,5P(BC),CAATACCAGGTATAA,Multiplexing Capture
HTO3,HTO3,R2,5P(BC),GTTGACTGAGAGACC,Multiplexing Capture
HTO4,HTO4,R2,5P(BC),TGCTCTCTGTAAAGC,Multiplexing Capture
"""
HEADER = ["sample", "fastq_1", "fastq_2", "technology", "feature_type", "condition"]
# pool1 and pool2 are pools (hashtag libraries), cite has antibodies, plain has neither.
LIBRARIES = [
    ("plain", "10xv2", "Gene Expression"),
    ("cite", "10xv3", "Gene Expression"),
    ("cite", "10xv3", "Antibody Capture"),
    ("pool1", "10xv3", "Gene Expression"),
    ("pool1", "10xv3", "Multiplexing Capture"),
    ("pool2", "10xv3", "Gene Expression"),
    ("pool2", "10xv3", "Multiplexing Capture"),
]
FULL_MAP = {"HTO1": "d1", "HTO2": "d2", "HTO3": "d3", "HTO4": "d4"}
OTHER_MAP = {"HTO1": "e1", "HTO2": "e2", "HTO3": "e3", "HTO4": "e4"}


def write_inputs(folder: Path, libraries=LIBRARIES) -> None:
    """A sample sheet over empty FASTQs, the feature reference, an empty FASTA and GTF:
    enough for every check that runs before a job (FASTQ contents are checked by jobs)."""
    rows = ["\t".join(HEADER)]
    for n, (sample, technology, feature_type) in enumerate(libraries):
        pair = [f"fq/{sample}_{n}_R{read}.fq.gz" for read in (1, 2)]
        for name in pair:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"")
        rows.append("\t".join([sample, *pair, technology, feature_type, "x"]))
    (folder / "samples.tsv").write_text("\n".join(rows) + "\n")
    (folder / "features.csv").write_text(REFERENCE)
    for name in ("genome.fa", "genes.gtf"):
        (folder / name).write_bytes(b"")


def sheet_with(folder: Path, libraries=LIBRARIES):
    write_inputs(folder, libraries)
    return load_sample_sheet(folder / "samples.tsv", "10xv3", workdir=folder)


@pytest.fixture
def sheet(tmp_path):
    return sheet_with(tmp_path)


def feature_config(tmp_path: Path, hashtags) -> dict:
    return {"feature_reference": str(tmp_path / "features.csv"), "hashtags": hashtags}


def both_mapped(**changes) -> dict:
    hashtags = {"pool1": dict(FULL_MAP), "pool2": dict(OTHER_MAP)}
    for key, value in changes.items():
        pool, hashtag = key.split("__")
        if value is None:
            del hashtags[pool][hashtag]
        else:
            hashtags[pool][hashtag] = value
    return hashtags


# --- hashtag maps ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("hashtags", "message"),
    [
        (
            both_mapped(pool1__HTO9="d9"),
            "config hashtags.pool1.HTO9: no hashtag 'HTO9' in the feature reference {ref} "
            "(its Multiplexing Capture features: HTO1, HTO2, HTO3, HTO4)",
        ),
        (
            {"pool1": {"HTO01": "d1", "HTO2": "d2", "HTO3": "d3", "HTO4": "d4"}, "pool2": {}},
            "config hashtags.pool1.HTO01: no hashtag 'HTO01' in the feature reference {ref} "
            "(did you mean 'HTO1'?)",
        ),
        (
            both_mapped(pool1__HTO4=None),
            "config hashtags.pool1: no sample for hashtag(s) HTO4 of the feature reference",
        ),
        (
            both_mapped(pool1__HTO1={"sample": "plain"}),
            "config hashtags.pool1.HTO1: demultiplexed sample 'plain' is a sample of the "
            "sample sheet; its cells would join sample 'plain' in the .h5mu but stay 'pool1' "
            "in the h5ad aggregate",
        ),
        (
            both_mapped(pool1__HTO1="pool2"),
            "config hashtags.pool1.HTO1: demultiplexed sample 'pool2' is a sample of the "
            "sample sheet",
        ),
        (
            both_mapped(pool1__HTO2="pool1"),
            "config hashtags.pool1.HTO2: demultiplexed sample 'pool1' is the pool's own name",
        ),
        (
            both_mapped(pool2__HTO3="d1"),
            "config hashtags.pool2.HTO3: demultiplexed sample 'd1' is also named by config "
            "hashtags.pool1.HTO1; a demultiplexed sample comes from one pool",
        ),
        (
            {},
            "config hashtags: samples pool1, pool2 have Multiplexing Capture libraries but no "
            "hashtag map",
        ),
        (
            {"pool1": FULL_MAP, "pool2": {}, "plain": FULL_MAP},
            "config hashtags.plain: the sample sheet has no sample 'plain' with a "
            "'Multiplexing Capture' library (samples with one: pool1, pool2)",
        ),
        (
            {"pool1": {"HTO1": "HTO1", "HTO2": "d2", "HTO3": "d3", "HTO4": "d4"}},
            "config hashtags (no map for 'pool2': hashtag HTO1 names its cells): demultiplexed "
            "sample 'HTO1' is also named by config hashtags.pool1.HTO1",
        ),
    ],
    ids=[
        "hashtag-not-in-reference",
        "hashtag-typo",
        "hashtag-without-sample",
        "into-a-sheet-sample",
        "into-another-pool",
        "pool-own-name",
        "same-name-two-pools",
        "two-pools-without-map",
        "not-a-pool",
        "unmapped-pool-ids-clash",
    ],
)
def test_hashtag_maps_are_checked_against_the_reference_and_the_sheet(
    tmp_path, sheet, hashtags, message
):
    message = message.format(ref=tmp_path / "features.csv")
    with pytest.raises(KbaggError, match=re.escape(message)):
        check_feature_config(feature_config(tmp_path, hashtags), sheet)


@pytest.mark.parametrize(
    "hashtags",
    [
        both_mapped(),
        # several hashtags of one pool may mark one sample, with its own metadata
        both_mapped(pool1__HTO2="d1", pool1__HTO3={"sample": "d1", "condition": "y"}),
        {"pool1": FULL_MAP},  # pool2 without a map: its cells are named HTO1..HTO4
    ],
    ids=["two-maps", "two-hashtags-one-sample", "one-pool-unmapped"],
)
def test_good_hashtag_maps_pass(tmp_path, sheet, hashtags):
    check_feature_config(feature_config(tmp_path, hashtags), sheet)


@pytest.mark.parametrize(
    ("pool2", "message"),
    [
        (
            {**OTHER_MAP, "HTO1": {"sample": "e1", "tissue": "blood"}},
            "config hashtags.pool2.HTO1: tissue is not a metadata column of the sample sheet "
            "(its metadata columns: condition)",
        ),
        (
            {
                **OTHER_MAP,
                "HTO1": {"sample": "e1", "condition": "a"},
                "HTO2": {"sample": "e1", "condition": "b"},
            },
            "config hashtags.pool2.HTO2: sample 'e1' has other metadata elsewhere in config "
            "hashtags",
        ),
    ],
    ids=["unknown-column", "conflicting-values"],
)
def test_metadata_of_demultiplexed_samples_is_checked(sheet, pool2, message):
    from kbagg.config import demultiplexed_metadata

    config = {"hashtags": {"pool1": FULL_MAP, "pool2": pool2}}
    with pytest.raises(KbaggError, match=re.escape(message)):
        demultiplexed_metadata(config, sheet.metadata_columns)


def test_a_sheet_sample_named_like_a_hashtag_of_an_unmapped_pool_is_an_error(tmp_path):
    sheet = sheet_with(tmp_path, [("HTO2", "10xv3", "Gene Expression"), *LIBRARIES[3:5]])
    with pytest.raises(
        KbaggError,
        match=re.escape(
            "config hashtags (no map for 'pool1': hashtag HTO2 names its cells): "
            "demultiplexed sample 'HTO2' is a sample of the sample sheet"
        ),
    ):
        check_feature_config(feature_config(tmp_path, {}), sheet)


def test_a_reference_a_rule_will_write_is_checked_as_planned(tmp_path, sheet):
    """The demo's reference does not exist before simulate_demo runs: the workflow gives
    the table that rule will write."""
    import pandas as pd

    planned = tmp_path / "later.csv"
    config = {"feature_reference": str(planned), "hashtags": both_mapped(pool1__HTO9="d9")}
    table = pd.read_csv(tmp_path / "features.csv")
    with pytest.raises(KbaggError, match="no hashtag 'HTO9' in the feature reference"):
        check_feature_config(config, sheet, will_exist=[planned], planned_reference=lambda: table)
    config["hashtags"] = both_mapped()
    check_feature_config(config, sheet, will_exist=[planned], planned_reference=lambda: table)


def test_the_planned_demo_reference_is_the_one_simulate_demo_writes(tmp_path):
    import pandas as pd

    from kbagg.simulate.features import DEMO_FEATURES, reference_table, write_feature_libraries

    write_feature_libraries(
        tmp_path, "s", ["AAACCCAAGAAACACT"], [0], DEMO_FEATURES, feature_types=()
    )
    written = pd.read_csv(tmp_path / "feature_reference.csv", dtype=str)
    pd.testing.assert_frame_equal(written, reference_table(DEMO_FEATURES).astype(str))


# --- feature references ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            None,
            "the sample sheet has Antibody Capture, Multiplexing Capture libraries: set config "
            "feature_reference",
        ),
        ("missing.csv", "config feature_reference: file not found: missing.csv"),
        (
            "bad.csv",
            "feature reference bad.csv: line 2: sequence 'ACGTN' of feature 'HTO1' must be A, "
            "C, G, T only",
        ),
        (
            "adt_only.csv",
            "feature reference adt_only.csv: no 'Multiplexing Capture' features (the reference "
            "has 'Antibody Capture')",
        ),
    ],
    ids=["not-set", "not-found", "bad-line", "missing-feature-type"],
)
def test_feature_reference_errors_stop_before_any_job(
    tmp_path, sheet, monkeypatch, reference, message
):
    monkeypatch.chdir(tmp_path)
    Path("bad.csv").write_text(
        REFERENCE.splitlines()[0] + "\nHTO1,HTO1,R2,5P(BC),ACGTN,Multiplexing Capture\n"
    )
    Path("adt_only.csv").write_text("\n".join(REFERENCE.splitlines()[:2]) + "\n")
    config = {"hashtags": both_mapped()}
    if reference:
        config["feature_reference"] = reference
    with pytest.raises(KbaggError, match=re.escape(message)):
        check_feature_config(config, sheet)


# --- technologies, label, download ------------------------------------------------------------
def test_technology_of_every_library_is_checked(tmp_path):
    sheet = sheet_with(tmp_path, [*LIBRARIES[:2], ("cite", "10xv9", "Antibody Capture")])
    with pytest.raises(
        SampleSheetError,
        match=re.escape(
            "sample 'cite' (Antibody Capture library), column technology: technology '10xv9' "
            "is not known to kb"
        ),
    ):
        check_technologies({"technology": "10xv3"}, sheet)
    with pytest.raises(KbaggError, match="config technology: technology '10xv3x' is not known"):
        check_technologies({"technology": "10xv3x"}, sheet)


def test_a_feature_library_with_three_fastqs_per_lane_is_named(tmp_path):
    sheet = sheet_with(
        tmp_path, [("s", "10xv3", "Gene Expression"), ("s", "10xfb", "Antibody Capture")]
    )
    check_technologies({"technology": "10xv3"}, sheet)
    with pytest.raises(
        SampleSheetError,
        match=re.escape(
            "missing required column(s) fastq_3 (sample sheet "
            f"{tmp_path / 'samples.tsv'}, line 3, sample 's': technology '10xv1' takes 3 "
            "FASTQ files per lane, given 2; fill columns fastq_1, fastq_2, fastq_3)"
        ),
    ):
        sheet_with(
            tmp_path, [("s", "10xv3", "Gene Expression"), ("s", "10xv1", "Antibody Capture")]
        )


@pytest.mark.parametrize("label", ["n_umis", "library", "hashtag_sample", "bustools_cell"])
def test_a_label_named_like_a_kbagg_column_is_an_error(sheet, label):
    reserved = ("n_umis", "bustools_cell", "library", "hashtag_sample")
    with pytest.raises(
        KbaggError, match=f"config aggregate.label '{label}': kbagg writes an obs column"
    ):
        sheet.check_obs_columns(label, reserved=reserved)


def test_download_of_a_workflow_kb_has_no_index_for_is_an_error():
    check_download({"workflow": "nac", "reference": {"download": "human"}})
    with pytest.raises(KbaggError, match="config reference.download 'human': .* not 'lamanno'"):
        check_download({"workflow": "lamanno", "reference": {"download": "human"}})


# --- compression and format ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "compression", "gene_major", "message"),
    [
        ("h5ad", "blosc", False, "config aggregate.compression: compression 'blosc' is not"),
        ("zarr", "lzf", False, "config aggregate.compression: compression 'lzf' is not"),
        ("h5ad", "gzip:12", False, "config aggregate.compression: compression 'gzip:12': level"),
        ("h5ad", "zip", False, "config aggregate.compression: compression 'zip' is not"),
        ("zarr", None, True, "config aggregate.gene_major: the gene-major copy is an h5ad"),
    ],
)
def test_compression_and_format_options_are_named(fmt, compression, gene_major, message):
    with pytest.raises(KbaggError, match=re.escape(message)):
        check_output_options(fmt, compression, gene_major)


# --- SOMA stores -------------------------------------------------------------------------------
@pytest.fixture
def soma_store(tmp_path):
    """A small TileDB-SOMA experiment (measurement RNA) of project 'P'."""
    pytest.importorskip("tiledbsoma", reason="the SOMA store needs tiledbsoma (extra 'soma')")
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    from kbagg.soma.store import update_store

    sample = tmp_path / "s1.h5ad"
    var = {"gene_name": ["G1", "G2"]}
    adata = ad.AnnData(sp.csr_matrix(np.eye(3, 2)), var=var)
    adata.var_names = ["ENSG1", "ENSG2"]
    adata.var.index.name = "gene_id"
    adata.write_h5ad(sample)
    store = tmp_path / "store.soma"
    update_store(
        store,
        {"s1": sample},
        run_id="r",
        manifest_path=tmp_path / "m.json",
        project="P",
        log=lambda line: None,
    )
    return store


def test_soma_uri_that_is_a_file_or_another_folder_is_named(tmp_path):
    check_soma_store(str(tmp_path / "new.soma"), "RNA")  # created by the rule
    (tmp_path / "file.soma").write_text("x")
    with pytest.raises(KbaggError, match=r"aggregate.soma.uri .*file.soma: a file, not a"):
        check_soma_store(str(tmp_path / "file.soma"), "RNA")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(
        KbaggError,
        match=r"folder: not a TileDB-SOMA store \(a folder without "
        r"__tiledb_group.tdb, holding notes.txt\)",
    ):
        check_soma_store(str(tmp_path / "folder"), "RNA")
    with pytest.raises(KbaggError, match="only local stores are supported"):
        check_soma_store("s3://bucket/atlas.soma", "RNA")


def test_soma_store_with_another_measurement_is_named_unless_it_is_ours(tmp_path, soma_store):
    check_soma_store(str(soma_store), "RNA", workdir=tmp_path)
    with pytest.raises(
        KbaggError,
        match=r"config aggregate.soma.measurement 'GEX': the store .* has measurement\(s\) RNA "
        "and cells of other projects",
    ):
        check_soma_store(str(soma_store), "GEX", workdir=tmp_path)
    (tmp_path / ".kbagg_project").write_text("P\n")  # this project's own store: rebuilt
    check_soma_store(str(soma_store), "GEX", workdir=tmp_path)
    from kbagg.soma.store import update_store

    manifest = update_store(
        soma_store,
        {"s1": tmp_path / "s1.h5ad"},
        run_id="r2",
        manifest_path=tmp_path / "m2.json",
        measurement="GEX",
        project="P",
        log=lambda line: None,
    )
    assert manifest["action"] == "rebuilt"
    assert manifest["reason"] == "measurement changed from 'RNA' to 'GEX'"


# --- through Snakemake: each check is wired in before any job -------------------------------------
def dry_run(tmp_path: Path, **config):
    write_inputs(tmp_path)
    settings = {
        "samples": "samples.tsv",
        "reference": {"fasta": "genome.fa", "gtf": "genes.gtf"},
        "feature_reference": "features.csv",
        "hashtags": both_mapped(),
        **config,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    return run_snakemake(tmp_path, "--configfile", str(tmp_path / "config.yaml"), "-n", check=False)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hashtags": both_mapped(pool1__HTO9="d9")}, "config hashtags.pool1.HTO9: no hashtag"),
        ({"technology": "10xv9"}, "config technology: technology '10xv9' is not known to kb"),
        ({"aggregate": {"label": "n_umis"}}, "config aggregate.label 'n_umis': kbagg writes"),
        (
            {"workflow": "lamanno", "reference": {"download": "mouse"}},
            "config reference.download 'mouse': kb ref -d has prebuilt indices",
        ),
        ({"aggregate": {"compression": "zstd"}}, "config aggregate.compression: compression"),
        (
            {"aggregate": {"soma": {"enabled": True, "uri": "genome.fa"}}},
            "config aggregate.soma.uri genome.fa: a file, not a TileDB-SOMA store",
        ),
        (
            {"workflow": "nac", "aggregate": {"normalize": "mapped"}},
            "config aggregate.normalize: mapped needs workflow standard, not 'nac'",
        ),
    ],
    ids=["hashtags", "technology", "label", "download", "compression", "soma-uri", "normalize"],
)
def test_snakemake_stops_on_bad_names_before_any_job(tmp_path, config, message):
    proc = dry_run(tmp_path, **config)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert message in said, said[-3000:]
    assert "Traceback" not in said
    assert not (tmp_path / "results").exists()


def test_snakemake_dry_run_passes_with_good_names(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_normalize_mapped_plans_its_jobs(tmp_path):
    proc = dry_run(tmp_path, aggregate={"normalize": "mapped"})
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    for rule in ("normalize_rates", "normalize_sample", "aggregate_normalized"):
        assert rule in said, said[-3000:]


# --- the two cases of issue 22, on a fresh copy of the demo ---------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"HTO9": {"sample": "donor_9"}},
            "config hashtags.pbmc_c.HTO9: no hashtag 'HTO9' in the feature reference "
            "resources/demo/feature_reference.csv (its Multiplexing Capture features: HTO1, "
            "HTO2, HTO3, HTO4)",
        ),
        (
            {"HTO1": {"sample": "pbmc_a"}},
            "config hashtags.pbmc_c.HTO1: demultiplexed sample 'pbmc_a' is a sample of the "
            "sample sheet; its cells would join sample 'pbmc_a' in the .h5mu but stay 'pbmc_c' "
            "in the h5ad aggregate",
        ),
    ],
    ids=["hashtag-not-in-reference", "into-a-sheet-sample"],
)
def test_the_demo_with_a_bad_hashtag_map_stops_before_any_job(tmp_path, change, message):
    clone = copy_tree(tmp_path / "kbagg")
    config_path = clone / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["hashtags"]["pbmc_c"].update(change)
    config_path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(clone, check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert message in said, said[-3000:]
    assert "Traceback" not in said
    for folder in ("resources", "results", "logs", "benchmarks"):
        assert not (clone / folder).exists(), f"{folder}/ was written: a job ran"
