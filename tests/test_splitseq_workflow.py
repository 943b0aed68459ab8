"""SPLiT-seq through the workflow: kb's `-r` replacement list written and passed, one library
holding two samples told apart by their round-1 wells, counted once; the aggregate equal to
`kb count -r` by hand and to the simulator's truth.

A SPLiT-seq cell's reads carry either the oligo-dT or the random-hexamer round-1 barcode of
its well (simulated about half each); only with the replacement list are they one cell.
"""

from __future__ import annotations

import gzip
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import kb, run_snakemake

from kbagg.kb.technology import technology
from kbagg.simulate.layouts import load_transcriptome, simulate_layout

pytestmark = pytest.mark.slow
# Seed 7 puts the six cells in wells 24, 26, 32, 43, 67 and 95: three for each sample.
WELLS = {"ctrl": ("1-30,40-48", {24, 26, 43}), "trt": ("31-39,49-96", {32, 67, 95})}


def test_splitseq_library_of_two_samples_equals_kb_count_with_r_by_hand_and_the_truth(
    testdata, tmp_path
):
    mt = testdata / "human_mt"
    transcriptome = load_transcriptome(mt / "MT.fa.gz", mt / "MT.gtf.gz")
    sim = simulate_layout(
        "SPLIT-SEQ", transcriptome, tmp_path / "sim", n_cells=6, seed=7, n_lanes=2, sample="lib1"
    )
    truth_wells = sim.truth.obs["round1_well"]
    assert {s: set(truth_wells[truth_wells.isin(w)]) for s, (_, w) in WELLS.items()} == {
        s: w for s, (_, w) in WELLS.items()
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    header = ["sample", "fastq_1", "fastq_2", "technology", "round1_wells", "donor"]
    rows = [
        [sample, *map(str, lane), "SPLIT-SEQ", wells, f"donor_{sample}"]
        for sample, (wells, _) in WELLS.items()
        for lane in sim.lanes
    ]
    (workdir / "samples.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": str(mt / "MT.fa.gz"), "gtf": str(mt / "MT.gtf.gz")},
        "qc": {"multiqc": False, "doublets": False},
        "resources": {"kb_count": {"threads": 1, "mem_mb": 2000}},
        # depth normalization thins kb's BUS file: the replaced one (kbagg.count.kb_bus)
        "aggregate": {"normalize": "mapped"},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/aggregate/filtered.h5ad", "results/aggregate/filtered.normalized.h5ad"]
    run_snakemake(workdir, *targets, "--configfile", str(workdir / "config.yaml"))

    # One kb count (and one FASTQ check per lane) for the library, under its first sample.
    results = workdir / "results" / "samples"
    assert (results / "ctrl" / "kb" / "run_info.json").exists()
    assert not (results / "trt" / "kb").exists() and not (results / "trt" / "fastq_check").exists()
    # The workflow's replacement list is the simulator's (every well's hexamer -> oligo-dT).
    listed = workdir / "resources" / "replacements" / "split-seq.txt"
    assert listed.read_bytes() == sim.replacement.read_bytes()

    # kb by hand, in a fresh folder, with the arguments the workflow gives kb: kb's on-list
    # (-w), the replacement list (-r), bustools' filter, the two lanes in order.
    hand = tmp_path / "by_hand"
    ref = hand / "ref"
    ref.mkdir(parents=True)
    kb("ref", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-f1", ref / "cdna.fa",
       mt / "MT.fa.gz", mt / "MT.gtf.gz")  # fmt: skip
    onlist = hand / "onlist.txt"
    onlist.write_bytes(gzip.decompress(technology("SPLIT-SEQ").onlist.read_bytes()))
    kb("count", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-x", "SPLIT-SEQ",
       "-w", onlist, "-r", sim.replacement, "--filter", "bustools", "-o", hand / "count",
       "--tmp", hand / "tmp", "-t", "1", "-m", "1000M", "--h5ad", *sim.fastqs)  # fmt: skip
    by_hand = ad.read_h5ad(hand / "count" / "counts_filtered" / "adata.h5ad")
    by_hand_raw = ad.read_h5ad(hand / "count" / "counts_unfiltered_modified" / "adata.h5ad")
    hand_wells = {b: truth_wells.get(b) for b in by_hand_raw.obs_names}

    aggregate = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad")
    assert aggregate.obs["sample"].value_counts().to_dict() == {"ctrl": 3, "trt": 3}
    for sample, (_, wells) in WELLS.items():
        cells = aggregate[(aggregate.obs["sample"] == sample).to_numpy()]
        barcodes = list(cells.obs_names.str.removesuffix(f"-{sample}"))
        # kb by hand, value for value: its filtered cells of the sample's wells
        mine = [b for b in by_hand.obs_names if hand_wells[b] in wells]
        assert barcodes == mine, sample
        expected = by_hand[mine].to_df().reindex(columns=cells.var_names, fill_value=0)
        np.testing.assert_array_equal(cells.X.toarray(), expected.to_numpy(), err_msg=sample)
        raw = ad.read_h5ad(results / sample / "raw.h5ad")
        mine_raw = [b for b in by_hand_raw.obs_names if hand_wells[b] in wells]
        assert list(raw.obs_names) == mine_raw, sample
        expected = by_hand_raw[mine_raw].to_df().reindex(columns=raw.var_names, fill_value=0)
        np.testing.assert_array_equal(raw.X.toarray(), expected.to_numpy(), err_msg=sample)
        # The truth: each cell's hexamer and oligo-dT reads are one cell, every gene.
        truth = sim.truth[barcodes]
        assert set(truth.obs["round1_well"]) == wells
        want = truth.to_df().reindex(columns=cells.var_names, fill_value=0).to_numpy()
        np.testing.assert_array_equal(cells.X.toarray(), want, err_msg=sample)
        assert want.sum() > 0
        assert cells.obs["round1_well"].tolist() == truth.obs["round1_well"].tolist()
        assert set(cells.obs["donor"].astype(str)) == {f"donor_{sample}"}
    assert sorted(aggregate.obs_names.str.replace(r"-(ctrl|trt)$", "", regex=True)) == sorted(
        sim.truth.obs_names
    )
    # Without the replacement list kb's own counts_unfiltered splits every cell in two.
    unreplaced = ad.read_h5ad(results / "ctrl" / "kb" / "counts_unfiltered" / "adata.h5ad")
    assert unreplaced.n_obs == 2 * sim.truth.n_obs

    # Depth normalization: the two samples' mapped reads are every read of the library (each
    # well's hexamer reads are its cells' too), and the lower sample (rate 1) is unchanged.
    normalized = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.normalized.h5ad")
    run_info = json.loads((results / "ctrl" / "kb" / "run_info.json").read_text())
    assert normalized.obs["mapped_reads"].sum() == run_info["n_processed"] > 0
    rates = pd.read_csv(workdir / "results" / "qc" / "normalization.tsv", sep="\t", index_col=0)
    lowest = rates["subsampling_rate"].idxmax()
    assert rates.loc[lowest, "subsampling_rate"] == 1
    rows = (aggregate.obs["sample"] == lowest).to_numpy()
    np.testing.assert_array_equal(normalized.X[rows].toarray(), aggregate.X[rows].toarray())
