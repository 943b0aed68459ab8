"""Rule aggregate_normalized: the samples' thinned matrices in one h5ad, with the filtered
aggregate's provenance plus the normalization's method, seed and rates in uns['kbagg'], and
the table of mapped reads per cell before and after."""

from kbagg.aggregate.h5ad import write_aggregate
from kbagg.aggregate.provenance import read_provenance, with_normalization
from kbagg.normalize.run import normalization_record, normalization_table, write_table
from kbagg.rule import run_rule


def main(smk) -> None:
    params = smk.params
    matrices = dict(zip(params.samples, smk.input.matrices, strict=True))
    table = normalization_table(smk.input.rates, matrices)
    write_table(table, smk.output.table)
    kb_infos = dict(zip(params.samples, smk.input.kb_info, strict=True))
    record = normalization_record(table, params.seed, kb_infos)
    provenance = with_normalization(read_provenance(smk.input.provenance), record)
    write_aggregate(
        matrices,
        smk.output.aggregate,
        provenance,
        params.metadata,
        params.concat,
        chunk_entries=smk.resources.chunk_entries,
        compression=params.compression,
        threads=smk.threads,
    )
    print(table.to_string(index=False))


run_rule(snakemake, main)
