"""Rule aggregate: every sample's matrix in one h5ad (or zarr), with provenance in uns['kbagg'].

The provenance is computed here once (every input hashed once) and also written to its own
output, which rule aggregate_h5mu attaches as it is."""

from kbagg.aggregate.h5ad import write_aggregate
from kbagg.aggregate.provenance import collect_for_run, write_provenance
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    provenance = collect_for_run(
        matrices, params.config, params.sample_sheet, kb_infos, list(smk.input.checks)
    )
    write_provenance(provenance, smk.output.provenance)
    write_aggregate(
        matrices,
        smk.output.aggregate,
        provenance,
        params.metadata,
        params.concat,
        chunk_entries=smk.resources.chunk_entries,
        format=params.format,
        compression=params.compression,
        threads=smk.threads,
    )
    print(f"{len(matrices)} samples aggregated into {smk.output.aggregate}")


run_rule(snakemake, main)
