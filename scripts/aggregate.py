"""Rule aggregate: every sample's matrix in one h5ad (or zarr), with provenance in uns['kbagg']."""

from kbagg.aggregate.provenance import read_provenance
from kbagg.concat import concat_on_disk
from kbagg.concat.options import ConcatOptions
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    provenance = read_provenance(smk.input.provenance)
    options = ConcatOptions.from_sheet(
        params.metadata,
        join=params.join,
        label=params.label,
        index_unique=params.index_unique,
        chunk_entries=smk.resources.chunk_entries,
    )
    concat_on_disk(
        matrices,
        smk.output[0],
        options,
        uns={"kbagg": provenance},
        format=params.format,
        compression=params.compression,
        threads=smk.threads,
    )
    print(f"{len(matrices)} samples aggregated into {smk.output[0]}")


run_rule(snakemake, main)
