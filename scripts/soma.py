"""Rule soma: bring the TileDB-SOMA store up to date; only new samples are written."""

import socket
from datetime import UTC, datetime

import kbagg
from kbagg.concat.options import ConcatOptions
from kbagg.rule import run_rule
from kbagg.soma.store import update_store


def main(smk) -> None:
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
        options=ConcatOptions.from_sheet(params.metadata, **params.concat),
        max_fragments=params.max_fragments,
        log=print,
    )
    print(
        f"{params.uri}: {manifest['action']}; {manifest['n_obs']:,} cells x "
        f"{manifest['n_vars']:,} genes; fragments per array at most "
        f"{max(manifest['fragments'].values(), default=0)}"
    )


run_rule(snakemake, main)
