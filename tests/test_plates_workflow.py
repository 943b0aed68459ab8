"""Real plate-based reads through the workflow equal `kb count` by hand, value for value.

`../shared/testdata/smartseq3_human/data.*` is one Smart-seq3 plate (I1, I2, R1, R2: the cell
barcode is the index reads); `smartseq_human/` (a real paired Smart-seq cell) and the R1/R2 of
`smartseq3_human/data2.*` are two cells of a Smart-seq2 plate, counted from kb's batch file
with `--parity paired`. Both against the human mitochondrial genome, whose transcripts are
the only ones these human reads can pseudoalign to. Plate cells are cells by construction:
no knee, no EmptyDrops.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import yaml
from conftest import kb, run_snakemake

from kbagg.cell_calling_record import UNS_KEY, CellCallingRecord
from kbagg.simulate.layouts import load_transcriptome, simulate_layout

pytestmark = pytest.mark.slow
CUSTOM = "0,0,16:0,16,28:1,0,0"
# droplet layouts of three files (10x v1, inDrops v3), one file (10x v3 on Ultima) and BD
# Rhapsody's three-part barcode beside the plates, simulated on human_mt with their truth
SIMULATED = {"v1": "10XV1", "indrops": "INDROPSV3", "ultima": "10XV3_ULTIMA", "bdwta": "BDWTA"}


def by_hand_matrix(path, obs_names, var_names):
    hand = ad.read_h5ad(path)
    return hand.to_df().reindex(index=obs_names, columns=var_names, fill_value=0).to_numpy()


def test_smartseq3_and_smartseq2_plates_equal_kb_by_hand(testdata, tmp_path):
    ss3 = testdata / "smartseq3_human"
    ss3_files = [str(ss3 / f"data.{f}.fastq.gz") for f in ("I1", "I2", "R1", "R2")]
    cells = {
        "A01": [str(testdata / "smartseq_human" / f"R{r}.fastq.gz") for r in (1, 2)],
        "B01": [str(ss3 / f"data2.R{r}.fastq.gz") for r in (1, 2)],
    }
    workdir = tmp_path / "work"
    workdir.mkdir()
    header = ["sample", "fastq_1", "fastq_2", "fastq_3", "fastq_4", "technology", "cell"]
    rows = [["ss3", *ss3_files, "SMARTSEQ3", ""]]
    rows += [["ss2", *files, "", "", "SMARTSEQ2", cell] for cell, files in cells.items()]
    # a droplet library beside the plates, with 10x v3's layout as a kallisto string
    pbmc = testdata / "human_pbmc_cellplex_10xv3"
    droplet = [str(pbmc / f"PBMC1_S2_L001_R{r}_001.fastq.gz") for r in (1, 2)]
    rows += [["pbmc", *droplet, "", "", CUSTOM, ""]]
    mt = testdata / "human_mt"
    transcriptome = load_transcriptome(mt / "MT.fa.gz", mt / "MT.gtf.gz")
    simulated = {
        sample: simulate_layout(tech, transcriptome, tmp_path / sample, seed=5, sample=sample)
        for sample, tech in SIMULATED.items()
    }
    for sample, sim in simulated.items():
        pad = [""] * (4 - len(sim.lanes[0]))  # fastq_1..4: 3 files, or Ultima's one
        rows += [[sample, *map(str, lane), *pad, SIMULATED[sample], ""] for lane in sim.lanes]
    (workdir / "samples.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": str(mt / "MT.fa.gz"), "gtf": str(mt / "MT.gtf.gz")},
        "qc": {"multiqc": False, "doublets": False},
        # outer: the default inner join drops nonumi_reads, a layer the droplets lack
        "aggregate": {"join": "outer"},
        "resources": {"kb_count": {"threads": 1, "mem_mb": 2000}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/aggregate/filtered.h5ad"]
    run_snakemake(workdir, *targets, "--configfile", str(workdir / "config.yaml"))

    # kb by hand, in a fresh folder, with this test's own arguments (kb's documented usage).
    by_hand = tmp_path / "by_hand"
    ref = by_hand / "ref"
    ref.mkdir(parents=True)
    kb("ref", "-i", ref / "index.idx", "-g", ref / "t2g.txt", "-f1", ref / "cdna.fa",
       mt / "MT.fa.gz", mt / "MT.gtf.gz")  # fmt: skip
    index = ["-i", ref / "index.idx", "-g", ref / "t2g.txt"]
    kb("count", *index, "-x", "SMARTSEQ3", "-o", by_hand / "ss3", "--tmp", by_hand / "t3",
       "--h5ad", *ss3_files)  # fmt: skip
    batch = by_hand / "batch.txt"
    batch.write_text("".join(f"{c}\t{f[0]}\t{f[1]}\n" for c, f in cells.items()))
    kb("count", *index, "-x", "SMARTSEQ2", "--parity", "paired", "-o", by_hand / "ss2",
       "--tmp", by_hand / "t2", "--h5ad", batch)  # fmt: skip
    kb("count", *index, "-x", CUSTOM, "-o", by_hand / "pbmc", "--tmp", by_hand / "tp",
       "--h5ad", *droplet)  # fmt: skip
    # Smart-seq3: X holds kb's UMI counts, layer nonumi_reads kb's internal-read counts.
    got = ad.read_h5ad(workdir / "results" / "samples" / "ss3" / "filtered.h5ad")
    hand_dir = by_hand / "ss3"
    umi = by_hand_matrix(
        hand_dir / "counts_unfiltered_umi" / "adata.h5ad", got.obs_names, got.var_names
    )
    nonumi = by_hand_matrix(
        hand_dir / "counts_unfiltered_internal" / "adata.h5ad", got.obs_names, got.var_names
    )
    np.testing.assert_array_equal(got.X.toarray(), umi)
    np.testing.assert_array_equal(got.layers["nonumi_reads"].toarray(), nonumi)
    umi_cells = ad.read_h5ad(hand_dir / "counts_unfiltered_umi" / "adata.h5ad").obs_names
    nonumi_cells = ad.read_h5ad(hand_dir / "counts_unfiltered_internal" / "adata.h5ad").obs_names
    assert set(got.obs_names) == set(umi_cells) | set(nonumi_cells)
    run_info = json.loads((workdir / "results/samples/ss3/kb/run_info.json").read_text())
    # ../shared/testdata/README.md: 653 of 25,000 reads pseudoalign
    assert (run_info["n_processed"], run_info["n_pseudoaligned"]) == (25_000, 653)
    assert umi.sum() + nonumi.sum() > 0
    record = CellCallingRecord.from_json(got.uns[UNS_KEY])
    assert record.method == "plate" and record.n_cells == got.n_obs == record.n_barcodes
    assert "no knee and no EmptyDrops" in record.params["reason"]

    # Smart-seq2: cells named by the sheet's cell column, counts equal kb's.
    got = ad.read_h5ad(workdir / "results" / "samples" / "ss2" / "filtered.h5ad")
    hand = ad.read_h5ad(by_hand / "ss2" / "counts_unfiltered" / "adata.h5ad")
    names = dict(
        zip(
            (by_hand / "ss2" / "matrix.sample.barcodes").read_text().split(),
            (by_hand / "ss2" / "matrix.cells").read_text().split(),
            strict=True,
        )
    )
    hand.obs_names = [names[b] for b in hand.obs_names]
    assert set(got.obs_names) <= set(cells) and list(got.obs_names) == list(hand.obs_names)
    expected = hand.to_df().reindex(columns=got.var_names, fill_value=0).to_numpy()
    np.testing.assert_array_equal(got.X.toarray(), expected)
    assert got.X.sum() > 0
    kb_info = json.loads((workdir / "results/samples/ss2/kb/kb_info.json").read_text())
    assert any("--batch" in c and "-x BULK" in c for c in kb_info["commands"])

    # The custom string: the raw matrix equals kb's; the mixed sheet aggregates into one
    # outer-joined h5ad with every sample's cells.
    got = ad.read_h5ad(workdir / "results" / "samples" / "pbmc" / "raw.h5ad")
    expected = by_hand_matrix(
        by_hand / "pbmc" / "counts_unfiltered" / "adata.h5ad", got.obs_names, got.var_names
    )
    np.testing.assert_array_equal(got.X.toarray(), expected)
    assert got.X.sum() > 0
    aggregate = ad.read_h5ad(workdir / "results" / "aggregate" / "filtered.h5ad")
    per_sample = {
        s: ad.read_h5ad(workdir / "results" / "samples" / s / "filtered.h5ad").n_obs
        for s in ("ss3", "ss2", "pbmc", *SIMULATED)
    }
    counts = aggregate.obs["sample"].value_counts()
    assert {s: int(counts.get(s, 0)) for s in per_sample} == per_sample

    # The technology of each cell's sample in obs, as the sheet gives it.
    technology = aggregate.obs.groupby("sample", observed=True)["technology"]
    assert technology.agg(lambda v: set(v.astype(str))).to_dict() == {
        "ss3": {"SMARTSEQ3"},
        "ss2": {"SMARTSEQ2"},
        "pbmc": {CUSTOM},
        **{sample: {tech} for sample, tech in SIMULATED.items()},
    }
    # Smart-seq3's nonumi_reads layer under the outer join: the plate's own values, and no
    # stored entry (zero) for the cells of the samples without the layer (docs/technologies.md).
    ss3 = ad.read_h5ad(workdir / "results" / "samples" / "ss3" / "filtered.h5ad")
    in_ss3 = (aggregate.obs["sample"] == "ss3").to_numpy()
    layer = aggregate.layers["nonumi_reads"]
    assert list(aggregate.obs_names[in_ss3]) == [f"{c}-ss3" for c in ss3.obs_names]
    own = ad.AnnData(ss3.layers["nonumi_reads"], obs=ss3.obs[[]], var=ss3.var[[]]).to_df()
    expected = own.reindex(columns=aggregate.var_names, fill_value=0).to_numpy()
    np.testing.assert_array_equal(layer[in_ss3].toarray(), expected)
    assert layer[~in_ss3].nnz == 0 and (~in_ss3).sum() > 0

    # The simulated samples: each raw matrix equals the simulator's truth, every barcode and
    # gene (tests/test_simulate_layouts.py shows `kb count` by hand, with the -x and -w of
    # docs/technologies.md, gives exactly that truth; so a wrong -x or -w here fails), and the
    # aggregate's cells equal the truth of the cells called.
    for sample, sim in simulated.items():
        raw = ad.read_h5ad(workdir / "results" / "samples" / sample / "raw.h5ad")
        assert set(raw.obs_names) == set(sim.truth.obs_names), sample
        want = sim.truth[list(raw.obs_names)].to_df().reindex(columns=raw.var_names, fill_value=0)
        np.testing.assert_array_equal(raw.X.toarray(), want.to_numpy(), err_msg=sample)
        assert raw.X.sum() > 0, sample
        cells = aggregate[(aggregate.obs["sample"] == sample).to_numpy()]
        barcodes = cells.obs_names.str.removesuffix(f"-{sample}")
        assert sorted(barcodes) == sorted(sim.truth.obs_names), sample
        want = sim.truth[list(barcodes)].to_df().reindex(columns=cells.var_names, fill_value=0)
        np.testing.assert_array_equal(cells.X.toarray(), want.to_numpy(), err_msg=sample)
        assert want.to_numpy().sum() > 0
