"""Rule soma_register: reserve the new samples in the TileDB-SOMA store (obs and var rows,
joinid ranges; under the store's lock). Rule soma_write then writes each sample's X layers in
a job of its own, and rule soma commits and consolidates."""

import socket
from datetime import UTC, datetime

import kbagg
from kbagg.concat.options import ConcatOptions
from kbagg.rule import run_rule
from kbagg.soma.context import limit_tiledb_threads
from kbagg.soma.store import update_store


def main(smk) -> None:
    limit_tiledb_threads(smk.threads)
    params = smk.params
    # Names this run in obs['kbagg_run'] of the cells it adds (made here, not a param: a
    # param would change every run and make Snakemake redo the job).
    run_id = (
        f"kbagg {kbagg.__version__} {socket.gethostname()} {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    )
    manifest = update_store(
        params.uri,
        dict(zip(params.samples, smk.input.matrices, strict=True)),
        run_id=run_id,
        manifest_path=smk.output[0],
        measurement=params.measurement,
        layout=params.layout,
        options=ConcatOptions.from_sheet(params.metadata, **params.concat),
        max_fragments=None,  # consolidated by rule soma, after the writers
        reserve=True,
        log=print,
    )
    print(f"{params.uri}: {manifest['action']}; reserved {len(manifest['appended'])} sample(s)")


run_rule(snakemake, main)
