"""kb's nac and lamanno workflows through the whole pipeline (reference rule -> kb count).

nac runs on the demo and must recover the simulated truth (reads come from mature mRNA, so
mature + nascent + ambiguous sums to the true UMI counts). lamanno needs intronic reads,
which the simulator does not make (that keeps the standard truth exact), so it runs on the
real mouse data and is compared with kb's own matrix.
"""

from __future__ import annotations

import gzip
import shutil

import anndata as ad
import numpy as np
import pytest
import yaml
from concat_helpers import named_layers
from conftest import REPO, kb, run_snakemake

from kbagg.simulate.spec import DEMO

pytestmark = pytest.mark.slow


def test_nac_reference_and_counts_recover_the_truth(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    config_path = tmp_path / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["workflow"] = "nac"
    config_path.write_text(yaml.safe_dump(config))
    sample = DEMO.samples[0].name
    run_snakemake(tmp_path, f"results/samples/{sample}/filtered.h5ad")

    reference = tmp_path / "resources" / "reference" / "nac"
    assert {p.name for p in reference.iterdir()} >= {"index.idx", "t2g.txt", "c1.txt", "c2.txt"}
    truth = ad.read_h5ad(tmp_path / "resources" / "demo" / "truth" / f"{sample}.h5ad")
    cells = truth[truth.obs["is_cell"].to_numpy()]
    got = ad.read_h5ad(tmp_path / "results" / "samples" / sample / "filtered.h5ad")
    assert set(named_layers(got)) == {"mature", "nascent", "ambiguous"}
    assert sorted(got.obs_names) == sorted(cells.obs_names)
    got = got[cells.obs_names, cells.var_names]
    expected = cells.X.toarray()
    np.testing.assert_array_equal(got.X.toarray(), expected)
    np.testing.assert_array_equal(sum(got.layers[k].toarray() for k in named_layers(got)), expected)
    assert got.layers["mature"].sum() > 0  # junction reads are recognised as mature


def test_lamanno_on_real_mouse_data_keeps_kbs_layers(tmp_path, testdata):
    mouse = testdata / "mouse_chr19_6mb"
    reads = testdata / "mouse_sampleX_10xv2"
    (tmp_path / "samples.tsv").write_text(
        "sample\tfastq_1\tfastq_2\ttechnology\n"
        f"sampleX\t{reads / 'SampleX_S1_L001_R1_001.fastq.gz'}\t"
        f"{reads / 'SampleX_S1_L001_R2_001.fastq.gz'}\t10xv2\n"
    )
    config = {
        "samples": "samples.tsv",
        "workflow": "lamanno",
        "reference": {
            "fasta": str(next(mouse.glob("*.fa.gz"))),
            "gtf": str(next(mouse.glob("*.gtf.gz"))),
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/samples/sampleX/filtered.h5ad"
    run_snakemake(tmp_path, target, "--configfile", str(tmp_path / "config.yaml"))

    got = ad.read_h5ad(tmp_path / target)
    assert set(named_layers(got)) == {"mature", "nascent"}
    assert got.n_obs > 0 and got.layers["nascent"].sum() > 0

    # kb by hand, in a fresh folder, with this test's own arguments (kb's documented lamanno
    # usage), not the command the workflow recorded nor its kb folder.
    hand = tmp_path / "by_hand"
    ref = hand / "ref"
    ref.mkdir(parents=True)
    kb("ref", "--workflow", "lamanno", "-i", ref / "index.idx", "-g", ref / "t2g.txt",
       "-f1", ref / "cdna.fa", "-f2", ref / "intron.fa",
       "-c1", ref / "cdna_t2c.txt", "-c2", ref / "intron_t2c.txt", "--tmp", ref / "tmp",
       config["reference"]["fasta"], config["reference"]["gtf"])  # fmt: skip
    kb("count", "--workflow", "lamanno", "-i", ref / "index.idx", "-g", ref / "t2g.txt",
       "-c1", ref / "cdna_t2c.txt", "-c2", ref / "intron_t2c.txt", "-x", "10xv2",
       "-o", hand / "count", "--tmp", hand / "count_tmp", "--h5ad", "--filter", "bustools",
       reads / "SampleX_S1_L001_R1_001.fastq.gz",
       reads / "SampleX_S1_L001_R2_001.fastq.gz")  # fmt: skip
    kb_hand = ad.read_h5ad(hand / "count" / "counts_filtered" / "adata.h5ad")
    assert list(got.obs_names) == list(kb_hand.obs_names)
    assert list(got.var_names) == list(kb_hand.var_names)
    for layer in ("mature", "nascent"):
        np.testing.assert_array_equal(
            got.layers[layer].toarray(), kb_hand.layers[layer].toarray(), err_msg=layer
        )
    np.testing.assert_array_equal(got.X.toarray(), kb_hand.X.toarray())
    # Gene names come from the t2g that kb ref wrote from the GENCODE GTF.
    with gzip.open(next(mouse.glob("*.gtf.gz")), "rt") as gtf:
        assert any('gene_name "Malat1"' in line for line in gtf)
    assert "Malat1" in set(got.var["gene_name"])
