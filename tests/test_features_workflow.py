"""A real 10x v3 CRISPR guide-capture library through the workflow equals kb by hand.

The library (`../shared/testdata/crispr_guides_10xv3`) comes without its gene-expression
reads, and kbagg keeps feature counts for the cells called on gene expression. So the test
simulates a gene-expression library whose cells are 200 of the cells the upstream pipeline
called (those whose feature-barcode twin has reads in the 5,000-read subset). The workflow
then counts the real guides with `kb count --workflow kite:10xFB`; the result must equal
`kb ref` + `kb count` run by hand with the test's own arguments in a fresh folder,
restricted to the called cells, and reproduce the figures of the test data's README.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import kb, run_snakemake

from kbagg.count.features import feature_barcode_translation
from kbagg.simulate.demo import write_demo
from kbagg.simulate.spec import DemoSpec, SampleSpec, fastq_path

pytestmark = pytest.mark.slow


N_CELLS = 200


def cells_with_guide_reads(data: Path) -> list[str]:
    with gzip.open(data / "cell_barcodes.tsv.gz", "rt") as handle:
        called = [line.strip().removesuffix("-1") for line in handle]
    with gzip.open(data / "CRISPR_S1_L001_R1_001.fastq.gz", "rt") as handle:
        seen = {line[:16] for n, line in enumerate(handle) if n % 4 == 1}
    twins = feature_barcode_translation(called)
    return sorted(b for b in called if twins[b] in seen)[:N_CELLS]


def test_real_crispr_library_through_the_workflow_equals_kb_by_hand(testdata, tmp_path):
    data = testdata / "crispr_guides_10xv3"
    cells = cells_with_guide_reads(data)
    assert len(cells) == N_CELLS
    spec = DemoSpec(
        seed=3,
        samples=(SampleSpec("crispr", "10xv3", 1, N_CELLS, 50, cell_barcodes=tuple(cells)),),
    )
    sim = tmp_path / "gex"
    write_demo(sim, spec)
    workdir = tmp_path / "work"
    workdir.mkdir()
    guides = [str(data / f"CRISPR_S1_L001_R{r}_001.fastq.gz") for r in (1, 2)]
    rows = [
        ["crispr", str(fastq_path(sim, "crispr", 1, 1)), str(fastq_path(sim, "crispr", 1, 2))]
        + ["10xv3", "Gene Expression"],
        ["crispr", *guides, "10xv3", "CRISPR Guide Capture"],
    ]
    header = ["sample", "fastq_1", "fastq_2", "technology", "feature_type"]
    (workdir / "samples.tsv").write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    config = {
        "samples": "samples.tsv",
        "reference": {"fasta": str(sim / "genome.fa"), "gtf": str(sim / "genes.gtf")},
        "feature_reference": str(data / "features.tsv"),  # kb's TSV: sequence<TAB>name
        "qc": {"multiqc": False},
        "resources": {"kb_count": {"threads": 2, "mem_mb": 2000}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(
        workdir, "results/samples/crispr/crispr.h5ad", "--configfile", str(workdir / "config.yaml")
    )

    counted = ad.read_h5ad(workdir / "results" / "samples" / "crispr" / "crispr.h5ad")
    gex = ad.read_h5ad(workdir / "results" / "samples" / "crispr" / "filtered.h5ad")
    assert list(counted.obs_names) == list(gex.obs_names)
    assert sorted(gex.obs_names) == cells  # the bustools knee calls exactly the simulated cells

    kb_dir = workdir / "results" / "samples" / "crispr" / "kb_crispr"
    # kb by hand, in a fresh folder, with this test's own arguments (kb's documented usage
    # for 10x v3 feature barcoding), not the command the workflow recorded.
    by_hand = tmp_path / "by_hand"
    ref = by_hand / "ref"
    ref.mkdir(parents=True)
    kb("ref", "--workflow", "kite", "-i", ref / "index.idx", "-g", ref / "t2g.txt",
       "-f1", ref / "mismatch.fa", data / "features.tsv")  # fmt: skip
    kb("count", "--workflow", "kite:10xFB", "-i", ref / "index.idx", "-g", ref / "t2g.txt",
       "-x", "10xv3", "-o", by_hand, "--tmp", by_hand / "tmp", "--h5ad", *guides)  # fmt: skip
    hand = ad.read_h5ad(by_hand / "counts_unfiltered" / "adata.h5ad")
    expected = hand.to_df().reindex(
        index=counted.obs_names, columns=counted.var_names, fill_value=0
    )
    np.testing.assert_array_equal(counted.X.toarray(), expected.to_numpy())
    assert list(counted.var_names) == ["RAB1A-2", "NON_TARGET-1"]
    # guide calls per cell (kbagg.cells.guides): this library is too shallow to call any,
    # and the job's log names the sample instead of a silent "no guide"
    assert {"guide_call", "n_guides", "guide_umis"} <= set(counted.obs.columns)
    assert counted.uns["guide_calls"]["min_umis"] == 3
    log = (workdir / "logs" / "count_features" / "crispr_crispr.log").read_text()
    assert "WARNING: sample 'crispr':" in log

    # The figures of ../shared/testdata/README.md: 3,586 of 5,000 reads pseudoalign; 2,708
    # barcodes, 2,587 of them among the upstream calls.
    run_info = json.loads((kb_dir / "run_info.json").read_text())
    assert (run_info["n_processed"], run_info["n_pseudoaligned"]) == (5000, 3586)
    assert counted.uns["feature_counts"]["barcodes_counted"] == hand.n_obs == 2708
    upstream = pd.Index(
        gzip.decompress((data / "cell_barcodes.tsv.gz").read_bytes()).decode().split()
    ).str.removesuffix("-1")
    assert hand.obs_names.isin(upstream).sum() == 2587
    checks = json.loads(
        (workdir / "results/samples/crispr/fastq_check/crispr_lane1.json").read_text()
    )
    assert checks["reads"] == 5000
