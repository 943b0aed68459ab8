"""Feature-barcode libraries with known truth: antibodies, hashtags and CRISPR guides.

Given the cells of a gene-expression sample (their barcodes and cell types, e.g. from the
demo simulator), `simulate_feature_counts` draws UMI counts per library:

- Antibody Capture: per-cell-type expression (each antibody high in some cell types) plus
  background in every cell; the last antibody is an isotype control (background only);
- Multiplexing Capture: each cell carries one hashtag (singlet), two (doublet) or none
  (negative, background only), with a per-cell labelling efficiency;
- CRISPR Guide Capture: zero, one or two guides per cell, and a little background.

`write_feature_libraries` turns them into 10x 3' v3 feature-barcoding FASTQs whose
`kb count --workflow kite:10xFB` counts equal the truth exactly: read 1 holds the cell's
barcode in the *feature-barcode space* (kb's translation table read backwards, see
`kbagg.count.features.feature_barcode_translation`) and a UMI unique within the barcode;
read 2 holds the feature barcode where its 10x pattern puts it, and filler bases that
share no k-mer (either strand) with any barcode or Hamming-1 variant kb indexes. Barcodes
that are not cells (empty droplets) get a few reads too. Feature barcodes are random, at
Hamming distance >= 3 from each other. Counts are written next to the reads as
`truth/<sample>_<modality>.h5ad` (barcodes x features, `obs['is_cell']`, and for hashtags
the true `hashtag` / `hashtag_class`), with a 10x feature-reference CSV for all libraries.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kbagg.atomic import atomic_output
from kbagg.count.features import feature_barcode_translation
from kbagg.kb.technology import onlist_barcodes
from kbagg.reference.features import (
    ANTIBODY_CAPTURE,
    CRISPR_GUIDE_CAPTURE,
    MODALITY,
    MULTIPLEXING_CAPTURE,
)
from kbagg.simulate.reads import BASES, fastq_record, random_seq, revcomp, write_gz
from kbagg.simulate.spec import feature_fastq_path

UMI_LENGTH = {"10XV2": 10, "10XV3": 12}
# 10x feature-reference patterns: TotalSeq-B/C antibodies, CellPlex CMOs, CRISPR capture 1.
TOTALSEQ_B_PATTERN = "^NNNNNNNNNN(BC)NNNNNNNNN"
CELLPLEX_PATTERN = "5P(BC)"
CRISPR_PATTERN = "(BC)GTTTAAGAGCTAAGCTGGAAACAGCATAGCAAGTT"
MAX_GUIDE_OFFSET = 30  # unanchored patterns: the guide starts at R2 base 0..30


@dataclass(frozen=True)
class LibrarySpec:
    """One feature library: how many features, their barcode length and 10x pattern."""

    feature_type: str
    n_features: int
    barcode_bases: int
    pattern: str
    prefix: str  # feature ids are <prefix><n>


@dataclass(frozen=True)
class FeatureSimSpec:
    """What `simulate_feature_counts` draws; rates are per cell."""

    seed: int = 11
    libraries: tuple[LibrarySpec, ...] = (
        LibrarySpec(ANTIBODY_CAPTURE, 6, 15, TOTALSEQ_B_PATTERN, "ADT"),
        LibrarySpec(MULTIPLEXING_CAPTURE, 4, 15, CELLPLEX_PATTERN, "HTO"),
        LibrarySpec(CRISPR_GUIDE_CAPTURE, 3, 20, CRISPR_PATTERN, "sg"),
    )
    # Antibodies: mean UMIs of a positive / background antibody (scaled per cell).
    antibody_positive_umis: float = 40.0
    antibody_background_umis: float = 2.0
    # Hashtags: mean UMIs of the cell's own hashtag(s) (times a labelling efficiency drawn
    # from 0.5-1; negative binomial, size 8) and of ambient background in every hashtag
    # (size 10), both times the cell's size factor (log-normal, sd 0.3). Chosen by hand so
    # that positives stand well above the background, with a tail of weak singlets that
    # every method in tests/benchmarks/bench_demux.py misses in part (0.1-0.6 %).
    hashtag_signal_umis: float = 150.0
    hashtag_background_umis: float = 4.0
    doublet_fraction: float = 0.08
    negative_fraction: float = 0.05
    # Guides: fraction of cells with 0 and with 2 guides (the rest have 1).
    no_guide_fraction: float = 0.15
    two_guide_fraction: float = 0.10
    guide_umis: float = 20.0
    guide_background_umis: float = 0.2
    # Barcodes with a few feature reads that are not GEX cells (empty droplets).
    n_empty: int = 20
    read2_bases: int = 90


DEFAULT_FEATURES = FeatureSimSpec()
# The demo's libraries: antibodies (CITE-seq) and hashtags; one reference for both.
DEMO_FEATURES = FeatureSimSpec(libraries=DEFAULT_FEATURES.libraries[:2])


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, size: float) -> np.ndarray:
    """Counts with the given means and variance mean + mean**2 / size."""
    mean = np.asarray(mean, dtype=float)
    return rng.negative_binomial(size, size / (size + mean)).astype(np.int64)


def feature_barcodes(rng: np.random.Generator, spec: FeatureSimSpec) -> pd.DataFrame:
    """Random feature barcodes, >= 3 mismatches apart, as a 10x feature-reference table."""
    rows, chosen = [], []
    for lib in spec.libraries:
        n = 0
        while n < lib.n_features:
            seq = random_seq(rng, lib.barcode_bases)
            if re.search(rb"(.)\1\1\1", seq):  # no homopolymer runs of 4
                continue
            if any(
                len(seq) == len(c) and sum(a != b for a, b in zip(seq, c, strict=True)) < 3
                for c in chosen
            ):
                continue
            chosen.append(seq)
            n += 1
            fid = f"{lib.prefix}{n}"
            rows.append((fid, fid, "R2", lib.pattern, seq.decode(), lib.feature_type))
    return pd.DataFrame(rows, columns=["id", "name", "read", "pattern", "sequence", "feature_type"])


def reference_table(spec: FeatureSimSpec = DEFAULT_FEATURES) -> pd.DataFrame:
    """The feature reference `write_feature_libraries` writes for `spec` (its first draw),
    without writing anything: the workflow checks config `hashtags` against the demo's
    reference before the rule that writes it has run."""
    return feature_barcodes(np.random.default_rng(spec.seed), spec)


def simulate_feature_counts(
    rng: np.random.Generator,
    cell_types: np.ndarray,
    features: pd.DataFrame,
    spec: FeatureSimSpec = DEFAULT_FEATURES,
) -> dict[str, ad.AnnData]:
    """True UMI counts of the cells, per feature type (cells x features, in cell order).

    Parameters
    ----------
    rng
        The random generator (all draws come from it, in a fixed order).
    cell_types
        Integer cell type per cell; antibody expression depends on it.
    features
        The feature table of `feature_barcodes`.
    spec
        Rates and means.

    Returns
    -------
    Feature type -> AnnData with integer counts; the hashtag one has ``obs['hashtag']``
    (hashtag id, ``doublet`` or ``negative``), ``obs['hashtag_class']``
    (singlet/doublet/negative) and ``obs['hashtags']`` (the true ids, ``+``-joined).
    """
    cell_types = np.asarray(cell_types)
    n_cells = len(cell_types)
    out = {}
    for lib in spec.libraries:
        ids = features.loc[features["feature_type"] == lib.feature_type, "id"].to_numpy()
        size_factor = rng.lognormal(0.0, 0.3, n_cells)
        obs = pd.DataFrame(index=pd.RangeIndex(n_cells).astype(str))
        if lib.feature_type == ANTIBODY_CAPTURE:
            counts = _antibodies(rng, cell_types, len(ids), size_factor, spec)
        elif lib.feature_type == MULTIPLEXING_CAPTURE:
            counts, obs = _hashtags(rng, n_cells, ids, size_factor, spec, obs)
        else:
            counts = _guides(rng, n_cells, len(ids), spec)
        var = pd.DataFrame({"feature_type": lib.feature_type}, index=pd.Index(ids))
        out[lib.feature_type] = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    return out


def _antibodies(rng, cell_types, n_features, size_factor, spec):
    n_types = int(cell_types.max()) + 1 if len(cell_types) else 1
    positive = rng.random((n_types, n_features)) < 0.4
    positive[:, -1] = False  # an isotype control
    for f in range(n_features - 1):  # every marker is high in at least one cell type
        if not positive[:, f].any():
            positive[rng.integers(n_types), f] = True
    means = np.where(positive, spec.antibody_positive_umis, spec.antibody_background_umis)
    means = means[cell_types] * size_factor[:, None]
    return _negative_binomial(rng, means, 5.0)


def _hashtags(rng, n_cells, ids, size_factor, spec, obs):
    draw = rng.random(n_cells)
    kind = np.where(
        draw < spec.negative_fraction,
        "negative",
        np.where(draw < spec.negative_fraction + spec.doublet_fraction, "doublet", "singlet"),
    )
    n = len(ids)
    signal = np.zeros((n_cells, n))
    labels, carried = [], []
    for c in range(n_cells):
        if kind[c] == "singlet":
            tags = [int(rng.integers(n))]
        elif kind[c] == "doublet":
            tags = sorted(rng.choice(n, 2, replace=False).tolist())
        else:
            tags = []
        signal[c, tags] = spec.hashtag_signal_umis * rng.uniform(0.5, 1.0, len(tags))
        labels.append(ids[tags[0]] if kind[c] == "singlet" else kind[c])
        carried.append("+".join(ids[t] for t in tags))
    # Specific labelling plus ambient hashtags: two independent negative binomials.
    specific = _negative_binomial(rng, signal * size_factor[:, None], 8.0)
    ambient = np.full((n_cells, n), spec.hashtag_background_umis) * size_factor[:, None]
    counts = specific + _negative_binomial(rng, ambient, 10.0)
    obs = obs.assign(hashtag=labels, hashtag_class=kind, hashtags=carried)
    return counts, obs


def _guides(rng, n_cells, n_features, spec):
    n_guides = np.ones(n_cells, dtype=int)
    draw = rng.random(n_cells)
    n_guides[draw < spec.no_guide_fraction] = 0
    n_guides[draw > 1 - spec.two_guide_fraction] = 2
    means = np.full((n_cells, n_features), spec.guide_background_umis)
    for c in range(n_cells):
        means[c, rng.choice(n_features, n_guides[c], replace=False)] = spec.guide_umis
    return rng.poisson(means).astype(np.int64)


def _kmer_length(barcode_bases: int) -> int:
    """kb's k for a kite index: the barcode length, minus one when even."""
    return barcode_bases if barcode_bases % 2 else barcode_bases - 1


def _indexed_kmers(sequences: list[str]) -> set[bytes]:
    """Every k-mer (both strands) of the barcodes and Hamming-1 variants kb would index."""
    k = _kmer_length(min(len(s) for s in sequences))
    kmers: set[bytes] = set()
    for seq in sequences:
        seq_b = seq.encode()
        variants = [seq_b] + [
            seq_b[:i] + bytes([b]) + seq_b[i + 1 :]
            for i in range(len(seq_b))
            for b in b"ACGT"
            if b != seq_b[i]
        ]
        for v in variants:
            for i in range(len(v) - k + 1):
                kmers.add(v[i : i + k])
                kmers.add(revcomp(v[i : i + k]))
    return kmers


@dataclass(frozen=True)
class _Layout:
    anchored: bool
    before: int  # N bases before the barcode (anchored patterns)
    after: bytes  # what follows the barcode (N: random)


def _layout(pattern: str) -> _Layout:
    match = re.fullmatch(r"(\^|5P)?(N*)\(BC\)([ACGTN]*)", pattern)
    if not match:
        raise ValueError(f"pattern {pattern!r} is not one the simulator writes")
    anchor, before, after = match.groups()
    return _Layout(anchor is not None, len(before), after.encode())


class _Read2Maker:
    """Read 2 of one library: the barcode where the pattern puts it, safe filler around it."""

    def __init__(self, pattern: str, sequences: list[str], read2_bases: int):
        self.layout = _layout(pattern)
        self.kmers = _indexed_kmers(sequences)
        self.k = _kmer_length(min(len(s) for s in sequences))
        self.read2_bases = read2_bases

    def make(self, rng: np.random.Generator, barcode: bytes) -> bytes:
        lay = self.layout
        for _ in range(1000):
            start = lay.before if lay.anchored else int(rng.integers(0, MAX_GUIDE_OFFSET + 1))
            after = bytes(b if b != ord("N") else BASES[rng.integers(4)] for b in lay.after)
            head = random_seq(rng, start)
            body = head + barcode + after
            read = body + random_seq(rng, max(0, self.read2_bases - len(body)))
            read = read[: self.read2_bases]
            if self._only_barcode_hits(read, start, len(barcode)):
                return read
        raise RuntimeError(f"no read 2 without stray barcode k-mers for {barcode!r}")

    def _only_barcode_hits(self, read: bytes, start: int, length: int) -> bool:
        k = self.k
        for i in range(len(read) - k + 1):
            inside = start <= i and i + k <= start + length
            if not inside and read[i : i + k] in self.kmers:
                return False
        return True


def pick_empty_barcodes(
    rng: np.random.Generator, cells: list[str], n: int, technology: str = "10xv3"
) -> list[str]:
    """`n` on-list barcodes that are not cells, >= 3 mismatches from cells and each other."""
    pool = np.array(onlist_barcodes(technology))
    taken = np.array([np.frombuffer(c.encode(), dtype=np.uint8) for c in cells]).reshape(-1, 16)
    chosen = []
    for idx in rng.permutation(len(pool)):
        candidate = np.frombuffer(pool[idx].encode(), dtype=np.uint8)
        if len(taken) and (np.count_nonzero(taken != candidate, axis=1) < 3).any():
            continue
        chosen.append(pool[idx])
        taken = np.vstack([taken, candidate])
        if len(chosen) == n:
            break
    return chosen


def _empty_counts(rng: np.random.Generator, n_empty: int, n_features: int) -> np.ndarray:
    totals = rng.integers(1, 4, n_empty)
    return np.array([rng.multinomial(t, np.full(n_features, 1 / n_features)) for t in totals])


def write_feature_libraries(
    outdir: str | Path,
    sample: str,
    cell_barcodes: list[str],
    cell_types: np.ndarray,
    spec: FeatureSimSpec = DEFAULT_FEATURES,
    technology: str = "10xv3",
    feature_types: tuple[str, ...] | None = None,
) -> dict:
    """Write feature reference, FASTQs and truth for the cells of one sample.

    Parameters
    ----------
    outdir
        Folder for ``feature_reference.csv``, ``fastq/`` and ``truth/``.
    sample
        Sample name (file names, read names).
    cell_barcodes
        The sample's gene-expression cell barcodes (from kb's on-list for `technology`).
    cell_types
        Integer cell type per cell.
    spec
        What to simulate.
    technology
        ``10xv3``: feature-barcoding reads (barcodes in the feature-barcode space,
        counted with ``kite:10xFB``); ``10xv2``: barcodes as in gene expression (``kite``).
    feature_types
        The libraries to write FASTQs and truth for (default: all of `spec`); the reference
        lists the features of all of them.

    Returns
    -------
    ``{"reference": path, "fastq": {feature_type: [R1, R2]}, "truth": {feature_type:
    path}}``.
    """
    outdir = Path(outdir)
    tech = technology.upper()
    rng = np.random.default_rng(spec.seed)
    features = feature_barcodes(rng, spec)
    reference = outdir / "feature_reference.csv"
    with atomic_output(reference) as tmp:
        features.to_csv(tmp, index=False)
    truths = simulate_feature_counts(rng, np.asarray(cell_types), features, spec)
    empties = pick_empty_barcodes(rng, list(cell_barcodes), spec.n_empty, technology)
    barcodes = [*cell_barcodes, *empties]
    read1_barcodes = barcodes
    if tech == "10XV3":
        translation = feature_barcode_translation(barcodes)
        read1_barcodes = [translation[b] for b in barcodes]
    result: dict = {"reference": reference, "fastq": {}, "truth": {}}
    for lib in spec.libraries:
        if feature_types is not None and lib.feature_type not in feature_types:
            continue
        truth = truths[lib.feature_type]
        lib_features = features[features["feature_type"] == lib.feature_type]
        counts = np.vstack([truth.X.toarray(), _empty_counts(rng, len(empties), len(lib_features))])
        maker = _Read2Maker(lib.pattern, lib_features["sequence"].tolist(), spec.read2_bases)
        r1, r2 = _library_reads(rng, sample, lib, read1_barcodes, counts, lib_features, maker, tech)
        paths = [feature_fastq_path(outdir, sample, lib.feature_type, r) for r in (1, 2)]
        write_gz(paths[0], r1)
        write_gz(paths[1], r2)
        obs = pd.concat(
            [truth.obs.set_axis(list(cell_barcodes)), pd.DataFrame(index=empties)], axis=0
        )
        obs["is_cell"] = np.arange(len(barcodes)) < len(cell_barcodes)
        obs["cell_type"] = np.concatenate([np.asarray(cell_types), np.full(len(empties), -1)])
        var = lib_features.set_index("id")[["name", "feature_type"]]
        var = var.rename(columns={"name": "feature_name"})
        full = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
        truth_path = outdir / "truth" / f"{sample}_{MODALITY[lib.feature_type]}.h5ad"
        with atomic_output(truth_path) as tmp:
            full.write_h5ad(tmp)
        result["fastq"][lib.feature_type] = paths
        result["truth"][lib.feature_type] = truth_path
    return result


def _library_reads(rng, sample, lib, read1_barcodes, counts, lib_features, maker, tech):
    umi_len = UMI_LENGTH[tech]
    sequences = [s.encode() for s in lib_features["sequence"]]
    r1, r2 = io.BytesIO(), io.BytesIO()
    read_no = 0
    for b, barcode in enumerate(read1_barcodes):
        n_umis = int(counts[b].sum())
        umis: set[bytes] = set()
        while len(umis) < n_umis:
            umis.add(random_seq(rng, umi_len))
        umi_iter = iter(sorted(umis))
        for f in np.repeat(np.arange(len(sequences)), counts[b]):
            umi = next(umi_iter)
            for _ in range(int(rng.integers(1, 3))):  # PCR duplicates of one molecule
                name = f"{sample}:{MODALITY[lib.feature_type]}:{read_no}"
                r1.write(fastq_record(name, barcode.encode() + umi))
                r2.write(fastq_record(name, maker.make(rng, sequences[f])))
                read_no += 1
    return r1.getvalue(), r2.getvalue()
