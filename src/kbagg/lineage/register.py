"""Register a workflow run in a local lamindb instance (SQLite + a local storage folder).

Everything lamindb writes stays in the instance's folder:

- ``<instance>/.lamindb/``: the SQLite database (``lamin.db``) and the artifacts' copies;
- ``<instance>/.kbagg-lamin/.lamin/``: lamindb's settings (user, instance, the
  current-instance marker), through ``LAMIN_SETTINGS_DIR``, instead of ``~/.lamin`` and
  the working directory;
- ``<instance>/.kbagg-lamin/cache/``: lamindb's cache (``LAMIN_CACHE_DIR``), instead of
  ``~/.cache/lamindb``.

No login and no network: the instance is local and its user is lamindb's anonymous user.
`check_instance` runs at parse time without importing lamindb; `register_run` runs in the
rule's own environment (``envs/lamindb.yaml``: lamindb pins an older anndata than kbagg's
other environments).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from kbagg.errors import KbaggError

SETTINGS_FOLDER = ".kbagg-lamin"  # LAMIN_SETTINGS_DIR, inside the instance's folder
DATABASE = Path(".lamindb") / "lamin.db"
TRANSFORM_KEY = "kbagg"
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def settings_dir(instance: str | Path) -> Path:
    """The folder given to lamindb as ``LAMIN_SETTINGS_DIR`` for `instance`."""
    return Path(instance).resolve() / SETTINGS_FOLDER


def _instance_settings(instance: str | Path) -> list[Path]:
    return sorted((settings_dir(instance) / ".lamin").glob("instance--*--*.env"))


def check_instance(instance: str | Path, key_prefix: str) -> None:
    """config ``lamindb.instance`` and ``lamindb.key_prefix``, checked before any job.

    The instance folder is new or empty (rule ``lineage`` creates the instance there), or
    one that kbagg created (its database and kbagg's lamindb settings are there).

    Parameters
    ----------
    instance
        The instance's folder (its local storage; the SQLite database goes inside).
    key_prefix
        The folder-like prefix of the artifacts' keys (``<prefix>/filtered.h5ad``).
    """
    where = f"config lamindb.instance {instance}"
    path = Path(instance)
    if path.exists() and not path.is_dir():
        raise KbaggError(f"{where}: a file, not a folder; give a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        if not (path / DATABASE).is_file():
            content = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            raise KbaggError(
                f"{where}: not a lamindb instance (no {DATABASE} in a folder holding "
                f"{content}); give a new or empty folder for kbagg to create one there"
            )
        if not _instance_settings(path):
            raise KbaggError(
                f"{where}: a lamindb instance kbagg did not create (no {SETTINGS_FOLDER}/"
                ".lamin/instance--*.env beside its database); give a new or empty folder"
            )
    if not KEY_PREFIX.fullmatch(key_prefix) or ".." in key_prefix.split("/"):
        raise KbaggError(
            f"config lamindb.key_prefix {key_prefix!r}: not a relative key of letters, "
            "digits, '_', '.', '-' and '/' (like 'kbagg' or 'atlas/runs')"
        )


@contextmanager
def _inside(folder: Path):
    """cwd = `folder` for the block: lamindb's init marks the current directory."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def connect(instance: str | Path):
    """The `lamindb` module connected to the instance in `instance`, created when the
    folder is new or empty. Sets ``LAMIN_SETTINGS_DIR`` for this process (before lamindb
    is imported: lamindb reads it once).

    Parameters
    ----------
    instance
        The instance's folder.
    """
    path = Path(instance).resolve()
    settings = settings_dir(path)
    settings.mkdir(parents=True, exist_ok=True)
    current = os.environ.get("LAMIN_SETTINGS_DIR")
    if current is not None and Path(current).resolve() != settings:
        raise KbaggError(
            f"{instance}: this process already uses lamindb settings in {current}; "
            "register each instance in its own process"
        )
    if "lamindb_setup" in sys.modules and current is None:
        raise KbaggError(
            f"{instance}: lamindb was imported before kbagg set its settings folder "
            f"({settings}); call connect before importing lamindb"
        )
    os.environ["LAMIN_SETTINGS_DIR"] = str(settings)
    os.environ["LAMIN_CACHE_DIR"] = str(settings / "cache")  # else ~/.cache/lamindb
    os.environ.pop("LAMIN_CURRENT_INSTANCE", None)
    import lamindb_setup

    found = _instance_settings(path)
    with _inside(settings):
        if found:
            owner, name = found[0].stem.split("--")[1:]
            lamindb_setup.connect(f"{owner}/{name}")
        else:
            lamindb_setup.init(storage=str(path))
    # kbagg's instances are local (anonymous user, SQLite): never on LaminHub. Said here,
    # lamindb does not ask the hub, which it does for every artifact from outside the
    # storage folder (InstanceSettings.is_on_hub) and which fails offline with
    # "urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>".
    lamindb_setup.settings.instance._is_on_hub = False
    import lamindb

    return lamindb


def _fastq_sha256(provenance: Mapping) -> dict[str, str]:
    """FASTQ path -> SHA-256, as the FASTQ check computed them (provenance inputs)."""
    found = {}
    for record in provenance["inputs"].values():
        for lane in record.get("fastqs", {}).values():  # keyed <library>_lane<N>
            for read in lane["files"].values():  # fastq_1 ... fastq_N
                found[read["path"]] = read["sha256"]
    return found


def register_run(
    instance: str | Path,
    key_prefix: str,
    artifacts: Mapping[str, str | Path],
    samples: Mapping[str, str | Path],
    provenance: str | Path,
    config: Mapping,
    run_name: str | None = None,
) -> dict[str, object]:
    """Record a workflow run in the lamindb instance at `instance`.

    The transform is kbagg at its version (key ``kbagg``); its run holds the config, the
    workflow and package versions and every FASTQ's SHA-256 (``run.params``), with the
    provenance record as its input artifact. The run's outputs are the `artifacts` and a
    collection of the per-sample `samples`. Re-registering unchanged files finds the same
    artifacts (lamindb's hash lookup); changed ones become new versions of the same key.

    Parameters
    ----------
    instance
        The instance's folder; created as a lamindb instance when new or empty.
    key_prefix
        Prefix of every key: ``<prefix>/<name>`` for `artifacts`,
        ``<prefix>/samples/<sample>.h5ad`` and the collection ``<prefix>/samples``.
    artifacts
        File or folder name within the prefix (``filtered.h5ad``, ``filtered.soma``) -> path.
    samples
        Sample name -> its per-sample h5ad.
    provenance
        The ``<kind>.provenance.json`` that rule ``aggregate`` wrote (`read_provenance`).
    config
        The config the run used.
    run_name
        A name for the run (host and time, say).

    Returns
    -------
    What was registered: instance slug, transform and run uids, key -> artifact uid, the
    collection's key and uid; rule ``lineage`` writes it as JSON.
    """
    import kbagg
    from kbagg.aggregate.provenance import read_provenance

    record = read_provenance(provenance)
    ln = connect(instance)
    transform = ln.Transform(
        key=TRANSFORM_KEY,
        version=kbagg.__version__,
        kind="pipeline",
        description="kbagg: scRNA-seq FASTQs -> kb count -> aggregated h5ad, h5mu, SOMA",
    ).save()
    params = {
        "config": json.loads(json.dumps(config)),
        "kbagg_version": kbagg.__version__,
        "workflow_version": record["workflow_version"],
        "versions": record["versions"],
        "fastq_sha256": _fastq_sha256(record),
    }
    run = ln.Run(transform, name=run_name, params=params).save()
    source = ln.Artifact(
        provenance,
        key=f"{key_prefix}/provenance/{Path(provenance).name}",
        description="kbagg provenance: every input's path, size and SHA-256",
        run=False,
    ).save()
    run.input_artifacts.add(source)
    registered = {}
    for name, path in artifacts.items():
        # a TileDB group (the SOMA store) is a folder lamindb does not recognise by itself
        soma = (Path(path) / "__tiledb_group.tdb").exists()
        otype = "tiledbsoma" if soma else None
        artifact = ln.Artifact(path, key=f"{key_prefix}/{name}", otype=otype, run=run).save()
        registered[artifact.key] = artifact.uid
    per_sample = [
        ln.Artifact(path, key=f"{key_prefix}/samples/{sample}.h5ad", run=run).save()
        for sample, path in samples.items()
    ]
    collection = ln.Collection(per_sample, key=f"{key_prefix}/samples", run=run).save()
    run.finished_at = _now()
    run.save()
    return {
        "instance": ln.setup.settings.instance.slug,
        "instance_folder": str(Path(instance).resolve()),
        "settings_dir": str(settings_dir(instance)),
        "transform": {"key": transform.key, "version": transform.version, "uid": transform.uid},
        "run": run.uid,
        "artifacts": registered,
        "collection": {"key": collection.key, "uid": collection.uid},
        "samples": {a.key: a.uid for a in per_sample},
        "inputs": {source.key: source.uid},
    }


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
