"""Rule aggregate: every sample's matrix in one h5ad, with provenance in uns['kbagg']."""

from dataclasses import asdict

import pandas as pd

from kbagg.aggregate.concat import concat_on_disk
from kbagg.aggregate.provenance import cell_calling_record, collect
from kbagg.count.fastq_check import read_lane_record
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    lanes = [read_lane_record(path) for path in smk.input.checks]
    fastqs = {s: [asdict(r) for r in lanes if r.sample == s] for s in params.samples}
    cells = {s: cell_calling_record(path) for s, path in matrices.items()}
    cells = {s: text for s, text in cells.items() if text is not None}
    provenance = collect(matrices, params.config, params.sample_sheet, kb_infos, fastqs, cells)
    metadata = pd.DataFrame(params.metadata).rename(columns={"sample": params.label})
    concat_on_disk(
        matrices,
        smk.output[0],
        join=params.join,
        label=params.label,
        index_unique=params.index_unique or None,
        obs_metadata=metadata,
        chunk_entries=smk.resources.chunk_entries,
        uns={"kbagg": provenance},
    )
    print(f"{len(matrices)} samples aggregated into {smk.output[0]}")


run_rule(snakemake, main)
