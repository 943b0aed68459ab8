"""Rule aggregate: every sample's matrix in one h5ad (or zarr), with provenance in uns['kbagg']."""

import pandas as pd

from kbagg.aggregate.provenance import collect_for_run
from kbagg.concat.engine import concat_on_disk
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    provenance = collect_for_run(
        matrices, params.config, params.sample_sheet, kb_infos, list(smk.input.checks)
    )
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
        format=params.format,
        compression=params.compression,
        threads=smk.threads,
    )
    print(f"{len(matrices)} samples aggregated into {smk.output[0]}")


run_rule(snakemake, main)
