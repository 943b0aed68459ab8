"""Rule aggregate: every sample's matrix in one h5ad (or zarr), with provenance in uns['kbagg'].

The provenance is computed here once (every input hashed once) and also written to its own
output, which rule aggregate_h5mu attaches as it is."""

from kbagg.aggregate.provenance import collect_for_run, to_uns, write_provenance
from kbagg.concat import concat_on_disk
from kbagg.concat.engine import DroppedLayersWarning
from kbagg.concat.options import ConcatOptions
from kbagg.rule import run_rule, warnings_to_terminal


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    provenance = collect_for_run(
        matrices, params.config, params.sample_sheet, kb_infos, list(smk.input.checks)
    )
    write_provenance(provenance, smk.output.provenance)
    options = ConcatOptions.from_sheet(
        params.metadata, **params.concat, chunk_entries=smk.resources.chunk_entries
    )
    with warnings_to_terminal(DroppedLayersWarning):
        concat_on_disk(
            matrices,
            smk.output.aggregate,
            options,
            uns={"kbagg": to_uns(provenance)},
            format=params.format,
            compression=params.compression,
            threads=smk.threads,
        )
    print(f"{len(matrices)} samples aggregated into {smk.output.aggregate}")


run_rule(snakemake, main)
