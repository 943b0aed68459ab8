"""Depth normalization (kbagg.normalize): BUS files, read thinning and the recount, on
simulated BUS files counted by the real bustools that kb-python ships."""

import json
import subprocess

import numpy as np
import pytest
from kb_python.config import get_bustools_binary_path

from kbagg.config import check_normalize
from kbagg.errors import KbaggError
from kbagg.normalize.bus import (
    RECORD,
    BusHeader,
    decode_sequences,
    encode_sequences,
    iter_records,
    read_header,
    write_bus,
)
from kbagg.normalize.thin import (
    count_switches,
    normalize_sample,
    subsampling_rates,
)

BUSTOOLS = get_bustools_binary_path()
HEADER = BusHeader(version=1, barcode_length=16, umi_length=12, text=b"simulated")
GENES = 20
# Reads per molecule (UMI): 10x Genomics' 5k_pbmc_protein_v3 web summary (Cell Ranger,
# 3' v3) reports a sequencing saturation of 52.4%, i.e. 1 / (1 - 0.524) = 2.10 reads per
# UMI. Reads are drawn zero-truncated Poisson around a Gamma(shape 1) (PCR amplification
# bias), its scale solved for that mean (`_reads_per_molecule`).
READS_PER_UMI = 1 / (1 - 0.524)
# bustools count as kb 0.30.2 runs it for the standard workflow (kb_info.json).
KB_COUNT = (
    "bustools count -o kb/counts_unfiltered/cells_x_genes -g t2g.txt -e kb/matrix.ec "
    "-t kb/transcripts.txt --genecounts --umi-gene kb/output.unfiltered.bus"
)


def _reads_per_molecule(rng, n, mean=READS_PER_UMI):
    """n molecules' read counts (>= 1), zero-truncated Poisson-Gamma with mean `mean` (its
    scale fitted on 200,000 draws)."""
    scale = mean - 1  # first guess; truncation lowers the mean, so widen until it fits
    for _ in range(60):
        draws = rng.poisson(rng.gamma(1.0, scale, size=200_000))
        draws = draws[draws > 0]
        if abs(draws.mean() - mean) < 0.01:
            break
        scale *= mean / draws.mean()
    reads = np.empty(0, dtype=np.int64)
    while len(reads) < n:
        more = rng.poisson(rng.gamma(1.0, scale, size=2 * (n - len(reads)) + 10))
        reads = np.concatenate([reads, more[more > 0]])
    return reads[:n]


def _kb_dir(tmp_path, rng, cells, molecules_per_cell, mean_reads=READS_PER_UMI):
    """A kb folder: each gene has two transcripts (ec 2g and 2g+1); a quarter of the
    molecules have their reads split over both, i.e. two records of one UMI. Returns the
    folder, the barcodes and each molecule's (cell, gene, total reads)."""
    kb = tmp_path / "kb"
    kb.mkdir()
    names = [f"T{g}_{i}" for g in range(GENES) for i in (0, 1)]
    (kb / "transcripts.txt").write_text("\n".join(names) + "\n")
    (kb / "matrix.ec").write_text("".join(f"{e}\t{e}\n" for e in range(2 * GENES)))
    (tmp_path / "t2g.txt").write_text("".join(f"{t}\tG{t[1:].split('_')[0]}\n" for t in names))
    (kb / "kb_info.json").write_text(json.dumps({"commands": [KB_COUNT]}))
    barcodes = sorted({"".join(rng.choice(list("ACGT"), 16)) for _ in range(cells)})
    n = len(barcodes) * molecules_per_cell
    cell = np.repeat(np.arange(len(barcodes)), molecules_per_cell)
    gene = rng.integers(0, GENES, n)
    reads = _reads_per_molecule(rng, n, mean_reads)
    umi = rng.choice(4**12, size=n, replace=False).astype(np.uint64)
    split = (rng.random(n) < 0.25) & (reads >= 2)
    first = np.where(split, rng.integers(1, np.maximum(reads, 2)), reads)
    records = np.zeros(n + split.sum(), dtype=RECORD)
    codes = encode_sequences(barcodes, 16)
    records["barcode"] = np.concatenate([codes[cell], codes[cell[split]]])
    records["umi"] = np.concatenate([umi, umi[split]])
    records["ec"] = np.concatenate([2 * gene, 2 * gene[split] + 1])
    records["count"] = np.concatenate([first, (reads - first)[split]])
    records = records[np.lexsort((records["ec"], records["umi"], records["barcode"]))]
    write_bus(kb / "output.unfiltered.bus", HEADER, [records])
    return kb, barcodes, (cell, gene, reads)


def _normalize(tmp_path, kb, barcodes, rate, seed=0):
    return normalize_sample(
        "s",
        kb,
        tmp_path / "t2g.txt",
        json.loads((kb / "kb_info.json").read_text()),
        barcodes,
        [f"G{g}" for g in range(GENES)],
        rate,
        seed,
        BUSTOOLS,
        workdir=tmp_path,
    )


def test_bus_round_trip_reads_as_bustools_text_prints(tmp_path):
    rng = np.random.default_rng(1)
    kb, barcodes, _ = _kb_dir(tmp_path, rng, cells=5, molecules_per_cell=4)
    bus = kb / "output.unfiltered.bus"
    assert read_header(bus) == HEADER
    records = np.concatenate(list(iter_records(bus, chunk_records=3)))
    text = subprocess.run(
        [BUSTOOLS, "text", "-p", str(bus)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert decode_sequences(records["barcode"], 16) == text[0::4]
    assert decode_sequences(records["umi"], 12) == text[1::4]
    assert list(records["ec"]) == list(map(int, text[2::4]))
    assert list(records["count"]) == list(map(int, text[3::4]))
    assert set(decode_sequences(records["barcode"], 16)) == set(barcodes)


def test_rate_one_equals_bustools_count_of_the_untouched_bus(tmp_path):
    rng = np.random.default_rng(2)
    kb, barcodes, _ = _kb_dir(tmp_path, rng, cells=30, molecules_per_cell=50)
    subprocess.run(
        [BUSTOOLS, "count", "-o", str(tmp_path / "m"), "-g", str(tmp_path / "t2g.txt")]
        + ["-e", str(kb / "matrix.ec"), "-t", str(kb / "transcripts.txt")]
        + ["--genecounts", "--umi-gene", str(kb / "output.unfiltered.bus")],
        check=True,
        capture_output=True,
    )
    from kbagg.normalize.thin import read_bustools_matrix

    expected, found, genes = read_bustools_matrix(tmp_path / "m")
    got = _normalize(tmp_path, kb, found, rate=1.0)
    order = [genes.index(f"G{g}") for g in range(GENES)]
    np.testing.assert_array_equal(got.counts.toarray(), expected.toarray()[:, order])
    np.testing.assert_array_equal(got.reads_before, got.reads_after)


def test_thinning_reads_keeps_each_umi_with_its_reads_survival_probability(tmp_path):
    """Mean UMIs after thinning reads at p = sum over molecules of 1 - (1 - p)^r (r: the
    molecule's true reads, over all its records); thinning UMIs at p (the approximation) is
    far off when molecules carry more than one read."""
    rng = np.random.default_rng(3)
    kb, barcodes, (cell, gene, reads) = _kb_dir(tmp_path, rng, cells=40, molecules_per_cell=250)
    p = 0.4
    survival = 1 - (1 - p) ** reads
    expected, sd = survival.sum(), np.sqrt((survival * (1 - survival)).sum())
    baseline = p * len(reads)  # thinning each UMI binomially instead
    got = _normalize(tmp_path, kb, barcodes, rate=p, seed=7).counts.sum()
    assert abs(got - expected) < 4 * sd, (got, expected, sd)
    assert abs(baseline - expected) > 20 * sd, (baseline, expected, sd)
    # per gene too: the survival is per molecule, whatever its gene
    per_gene = np.bincount(gene, weights=survival, minlength=GENES)
    counts = _normalize(tmp_path, kb, barcodes, rate=p, seed=7).counts.toarray().sum(axis=0)
    assert np.all(np.abs(counts - per_gene) < 5 * np.sqrt(per_gene))


def test_normalized_samples_have_equal_mapped_reads_per_cell(tmp_path):
    """Two samples, one sequenced 3x deeper per molecule: after thinning both have the
    lowest sample's mapped reads per cell, within the binomial noise of the thinning."""
    runs = {}
    for name, mean_reads in (("shallow", READS_PER_UMI), ("deep", 3 * READS_PER_UMI)):
        folder = tmp_path / name
        folder.mkdir()
        kb, barcodes, _ = _kb_dir(folder, np.random.default_rng(4), 40, 200, mean_reads)
        runs[name] = (folder, kb, barcodes)
    before = {}
    for name, (folder, kb, barcodes) in runs.items():
        before[name] = _normalize(folder, kb, barcodes, rate=1.0).reads_before
    table = subsampling_rates(
        {s: int(r.sum()) for s, r in before.items()}, {s: len(r) for s, r in before.items()}
    ).set_index("sample")
    assert table.loc["shallow", "subsampling_rate"] == 1.0
    target = table.loc["shallow", "mapped_reads_per_cell"]
    folder, kb, barcodes = runs["deep"]
    rate = table.loc["deep", "subsampling_rate"]
    after = _normalize(folder, kb, barcodes, rate=rate).reads_after
    total = before["deep"].sum()
    sd_per_cell = np.sqrt(total * rate * (1 - rate)) / len(after)
    assert abs(after.mean() - target) < 4 * sd_per_cell, (after.mean(), target, sd_per_cell)
    # without normalization the deep sample is far off (the trivial rule: rate 1)
    assert abs(before["deep"].mean() - target) > 100 * sd_per_cell


def test_same_seed_same_draw_other_seed_other_draw(tmp_path):
    rng = np.random.default_rng(5)
    kb, barcodes, _ = _kb_dir(tmp_path, rng, cells=10, molecules_per_cell=50)
    a, b, c = (_normalize(tmp_path, kb, barcodes, 0.5, seed).counts for seed in (1, 1, 2))
    assert (a != b).nnz == 0 and (a != c).nnz > 0


def test_a_sample_without_mapped_reads_or_cells_is_named():
    with pytest.raises(KbaggError, match="sample 'b': its 3 called cells have no mapped reads"):
        subsampling_rates({"a": 10, "b": 0}, {"a": 2, "b": 3})
    with pytest.raises(KbaggError, match="sample 'b': no called cells"):
        subsampling_rates({"a": 10, "b": 0}, {"a": 2, "b": 0})


def test_count_switches_come_from_kb_and_nascent_counts_are_refused():
    assert count_switches({"commands": [KB_COUNT]}, "s") == ["--genecounts", "--umi-gene"]
    nac = KB_COUNT.replace("--genecounts", "-s nascent.txt --genecounts")
    with pytest.raises(KbaggError, match="sample 's': kb counted nascent and mature"):
        count_switches({"commands": [nac]}, "s")
    with pytest.raises(KbaggError, match="sample 's': kb_info.json records 0 bustools"):
        count_switches({"commands": []}, "s")


def test_config_normalize_needs_called_cells_and_the_standard_workflow():
    check_normalize({"aggregate": {"normalize": "none"}, "workflow": "nac"})
    with pytest.raises(KbaggError, match="aggregate.normalize: mapped needs workflow standard"):
        check_normalize({"aggregate": {"normalize": "mapped"}, "workflow": "nac"})
    with pytest.raises(KbaggError, match="needs filter.enabled: true"):
        check_normalize({"aggregate": {"normalize": "mapped"}, "filter": {"enabled": False}})


def test_barcodes_that_are_not_sequences_are_named():
    with pytest.raises(KbaggError, match="barcode 'AACN' has a base other than"):
        encode_sequences(["AACG", "AACN"], 4)
    with pytest.raises(KbaggError, match="barcode 'AAC' is not 4 bases long"):
        encode_sequences(["AACG", "AAC"], 4)


def test_the_obs_columns_written_are_registered():
    from kbagg.obs_columns import MAPPED_READS, MAPPED_READS_NORMALIZED, written_by_kbagg

    assert written_by_kbagg(MAPPED_READS) and written_by_kbagg(MAPPED_READS_NORMALIZED)
