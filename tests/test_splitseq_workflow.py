"""SPLiT-seq through the workflow: kb's `-r` replacement list written and passed for the
sample, and the aggregate equal to `kb count -r` by hand and to the simulator's truth.

A SPLiT-seq cell's reads carry either the oligo-dT or the random-hexamer round-1 barcode of
its well (simulated about half each); only with the replacement list are they one cell.
"""

from __future__ import annotations

import gzip
import json

import anndata as ad
import numpy as np
import pytest
import yaml
from conftest import kb, run_snakemake

from kbagg.simulate.layouts import load_transcriptome, simulate_layout

pytestmark = pytest.mark.slow


def test_splitseq_aggregate_equals_kb_count_with_r_by_hand_and_the_truth(testdata, tmp_path):
    mt = testdata / "human_mt"
    transcriptome = load_transcriptome(mt / "MT.fa.gz", mt / "MT.gtf.gz")
    sim = simulate_layout(
        "SPLIT-SEQ", transcriptome, tmp_path / "sim", n_cells=6, seed=7, n_lanes=2, sample="lib1"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    header = ["sample", "fastq_1", "fastq_2", "technology"]
    rows = [["lib1", *map(str, lane), "SPLIT-SEQ"] for lane in sim.lanes]
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
    from kbagg.kb.technology import technology

    onlist = hand / "onlist.txt"
    onlist.write_bytes(gzip.decompress(technology("SPLIT-SEQ").onlist.read_bytes()))
    kb("count", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-x", "SPLIT-SEQ",
       "-w", onlist, "-r", sim.replacement, "--filter", "bustools", "-o", hand / "count",
       "--tmp", hand / "tmp", "-t", "1", "-m", "1000M", "--h5ad", *sim.fastqs)  # fmt: skip

    aggregate = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad")
    barcodes = aggregate.obs_names.str.removesuffix("-lib1")
    by_hand = ad.read_h5ad(hand / "count" / "counts_filtered" / "adata.h5ad")
    assert list(barcodes) == list(by_hand.obs_names)
    expected = by_hand.to_df().reindex(columns=aggregate.var_names, fill_value=0).to_numpy()
    np.testing.assert_array_equal(aggregate.X.toarray(), expected)
    raw = ad.read_h5ad(workdir / "results" / "samples" / "lib1" / "raw.h5ad")
    by_hand_raw = ad.read_h5ad(hand / "count" / "counts_unfiltered_modified" / "adata.h5ad")
    assert list(raw.obs_names) == list(by_hand_raw.obs_names)
    expected = by_hand_raw.to_df().reindex(columns=raw.var_names, fill_value=0).to_numpy()
    np.testing.assert_array_equal(raw.X.toarray(), expected)

    # The truth: each cell's hexamer and oligo-dT reads are one cell, every cell and gene;
    # its round-1 well is in obs.
    assert sorted(barcodes) == sorted(sim.truth.obs_names)
    truth = sim.truth[list(barcodes)]
    want = truth.to_df().reindex(columns=aggregate.var_names, fill_value=0).to_numpy()
    np.testing.assert_array_equal(aggregate.X.toarray(), want)
    assert want.sum() > 0
    assert aggregate.obs["round1_well"].tolist() == truth.obs["round1_well"].tolist()
    assert raw.obs.loc[list(barcodes), "round1_well"].tolist() == truth.obs["round1_well"].tolist()
    # Without the replacement list kb's own counts_unfiltered splits every cell in two.
    unreplaced = ad.read_h5ad(workdir / "results/samples/lib1/kb/counts_unfiltered/adata.h5ad")
    assert unreplaced.n_obs == 2 * sim.truth.n_obs

    # One sample, so its rate is 1: the normalized aggregate is the aggregate, and the mapped
    # reads of its cells are every read (each well's hexamer reads are its cells' too).
    normalized = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.normalized.h5ad")
    np.testing.assert_array_equal(normalized.X.toarray(), aggregate.X.toarray())
    run_info = json.loads((workdir / "results/samples/lib1/kb/run_info.json").read_text())
    assert normalized.obs["mapped_reads"].sum() == run_info["n_processed"] > 0
