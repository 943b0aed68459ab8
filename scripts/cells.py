"""Rule cells: a sample's raw.h5ad and filtered.h5ad, once its reads are accounted for.

The cells are called by the configured method (kb's bustools knee, or EmptyDrops), and each
gets QC columns in obs (UMIs, genes, % mitochondrial, Scrublet doublet score and call);
SPLiT-seq barcodes get their round-1 well (`round1_well`), and a sample that the sheet
defines by round-1 wells keeps its wells' barcodes of the library.
With `ambient.method` set, the cells' ambient RNA is estimated and removed into the layer
`decontaminated` (kbagg.cells.ambient).
"""

from pathlib import Path

from kbagg.cell_calling_record import UNS_KEY
from kbagg.cells.ambient import add_ambient
from kbagg.cells.call import add_cell_qc, call_cells
from kbagg.cells.matrices import (
    check_reads_processed,
    keep_round1_wells,
    name_plate_cells,
    read_kb_matrices,
    write_h5ad,
)
from kbagg.count.lane_record import read_lane_record
from kbagg.kb.technology import read_splitseq_replacement
from kbagg.rule import run_rule, to_terminal, warning_line


def main(smk) -> None:
    sample, params = smk.wildcards.sample, smk.params
    kb_dir = Path(smk.input.run_info).parent
    lanes = [read_lane_record(path) for path in smk.input.checks]
    reads = check_reads_processed(sample, kb_dir, {f"lane {r.lane}": r.reads for r in lanes})
    print(f"sample '{sample}': {reads:,} reads, all processed by kallisto")
    filtering = bool(smk.output.get("filtered"))
    kb = read_kb_matrices(sample, kb_dir, smk.input.t2g, ("raw", "filtered")[: 1 + filtering])
    raw = kb["raw"]
    if params.plate:
        name_plate_cells(raw, kb_dir)
        if filtering:
            name_plate_cells(kb["filtered"], kb_dir)
    if params.splitseq:  # the sample's round-1 wells of its library (all when the sheet names none)
        pairs = read_splitseq_replacement(smk.input.replacement)
        raw = keep_round1_wells(raw, params.round1_wells, sample, pairs)
        if filtering:
            kb["filtered"] = keep_round1_wells(kb["filtered"], params.round1_wells, sample, pairs)
    if filtering:
        calls = call_cells(
            sample, raw, kb["filtered"], params.method, params.emptydrops, plate=params.plate
        )
        add_cell_qc(calls, **params.cell_qc)
        ambient = dict(params.ambient)
        calls.warnings.extend(
            add_ambient(sample, calls.filtered, raw, ambient.pop("method"), ambient)
        )
        calls.filtered.uns[UNS_KEY] = calls.record.to_json()
        for warning in calls.warnings:
            to_terminal(warning_line(warning, sample))
        write_h5ad(calls.filtered, smk.output.filtered)
        print(f"sample '{sample}': {calls.filtered.n_obs:,} cells ({params.method})")
    write_h5ad(raw, smk.output.raw)
    print(f"sample '{sample}': {raw.n_obs:,} barcodes x {raw.n_vars:,} genes in the raw matrix")


run_rule(snakemake, main)
