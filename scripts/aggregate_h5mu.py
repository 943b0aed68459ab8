"""Rule aggregate_h5mu: every sample's modalities in one .h5mu: the rna aggregate of rule
aggregate (when it is an uncompressed h5ad) plus one chunked concat per feature modality,
with the provenance rule aggregate wrote to its own output, and each cell labelled with its
(demultiplexed) sample."""

from kbagg.aggregate.mudata import concat_h5mu, label_demultiplexed_cells
from kbagg.aggregate.provenance import read_provenance, to_uns
from kbagg.atomic import atomic_output
from kbagg.concat.options import ConcatOptions
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    files = iter(smk.input.modalities)
    modalities = {s: {m: next(files) for m in params.modalities[s]} for s in params.samples}
    provenance = read_provenance(smk.input.provenance)
    options = ConcatOptions.from_sheet(
        params.metadata, **params.concat, chunk_entries=smk.resources.chunk_entries
    )
    with atomic_output(smk.output[0]) as tmp:
        concat_h5mu(
            modalities,
            tmp,
            options,
            uns={"kbagg": to_uns(provenance)},
            rna_aggregate=smk.input.get("rna_aggregate"),
        )
        obs = label_demultiplexed_cells(
            tmp,
            options.label,
            metadata_columns=[c for c in params.metadata if c != "sample"],
            demultiplexed_metadata=params.demultiplexed_metadata,
        )
    counts = obs[options.label].value_counts(dropna=False).to_dict()
    print(f"{len(obs):,} cells in {smk.output[0]}: {counts}")


run_rule(snakemake, main)
