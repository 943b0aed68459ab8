"""Provenance for the aggregate: `uns['kbagg']` says how and from what it was made.

It records the workflow version (`git describe` when the clone is a git checkout), the
versions of kbagg, anndata and snakemake, the kb-python, kallisto and bustools versions that
kb itself recorded for each sample (kb_info.json: what was really run, and no heavy import
of kb_python here), the config and sample sheet used, and for every input file its path,
size and SHA-256. Every entry is a JSON object (nested dicts of strings, numbers, booleans,
None and lists of one type), the same in the record's JSON file and in `uns['kbagg']`
(`to_uns`). A new entry is one more key of the dict `collect` returns.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import kbagg
from kbagg.cell_calling_record import UNS_KEY, CellCallingRecord
from kbagg.checksum import sha256

# The source tree when kbagg runs from a clone (pip install -e .): src/kbagg/aggregate/ -> repo.
CLONE = Path(__file__).resolve().parents[3]


def workflow_version() -> str:
    """`git describe` of the kbagg clone (when kbagg runs from one), else its version."""
    if not (CLONE / ".git").exists() or not (CLONE / "workflow" / "Snakefile").is_file():
        return kbagg.__version__
    try:
        described = subprocess.run(
            ["git", "describe", "--tags", "--always", "--dirty"],
            cwd=CLONE,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        if described:
            return f"git {described}"
    except (OSError, subprocess.SubprocessError):
        pass
    return kbagg.__version__


def package_versions() -> dict[str, str]:
    """kbagg, anndata and snakemake as they ran here. A rule's conda env need not install
    snakemake: its `script:` preamble imports it from the Snakemake that runs the workflow."""
    return {name: _running_version(name) for name in ("kbagg", "anndata", "snakemake")}


def _running_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        version = getattr(sys.modules.get(name), "__version__", None)
        return version if isinstance(version, str) else "unknown"


def kb_versions(kb_info: str | Path) -> dict[str, str]:
    """What kb itself recorded it ran with (kb_info.json in its output folder): kb-python,
    kallisto and bustools versions, and the kb command."""
    info = json.loads(Path(kb_info).read_text())
    return {
        "kb_python": str(info.get("version", "unknown")),
        "kallisto": str(info.get("kallisto", {}).get("version", "unknown")),
        "bustools": str(info.get("bustools", {}).get("version", "unknown")),
        "call": str(info.get("call", "")),
    }


def _agreed(values: list[str]) -> str:
    """One version when every sample used it, else all of them (mixed runs stand out)."""
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else "mixed: " + ", ".join(distinct)


def cell_calling_record(h5ad: str | Path) -> dict | None:
    """The `uns['kbagg_cells']` record of a per-sample matrix as a dict, if it has one;
    checked to be a `CellCallingRecord` (KbaggError naming the file otherwise).

    Parameters
    ----------
    h5ad
        The sample's filtered (or raw) h5ad.
    """
    import h5py
    from anndata.io import read_elem

    with h5py.File(h5ad, "r") as f:
        if "uns" not in f or UNS_KEY not in f["uns"]:
            return None
        text = str(read_elem(f["uns"][UNS_KEY]))
    CellCallingRecord.from_json(text, source=f"{h5ad}: uns['{UNS_KEY}']")
    return json.loads(text)


def file_record(path: str | Path) -> dict[str, str | int]:
    path = Path(path)
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256(path)}


def collect(
    inputs: Mapping[str, str | Path],
    config: Mapping,
    sample_sheet: Mapping,
    kb_infos: Mapping[str, str | Path] | None = None,
    fastqs: Mapping[str, Mapping[str, dict]] | None = None,
    cells: Mapping[str, dict] | None = None,
) -> dict[str, object]:
    """The `uns['kbagg']` record, a dict of JSON objects (`write_provenance` writes it as
    JSON, `to_uns` as an h5ad/h5mu ``uns`` entry).

    Parameters
    ----------
    inputs
        Sample name -> the h5ad the aggregate is built from (path, size and SHA-256 kept).
    config, sample_sheet
        What the run used.
    kb_infos
        Sample name -> kb's kb_info.json (kb, kallisto and bustools versions, the kb call).
    fastqs
        Sample name -> {check name (``<library>_lane<N>``): that lane's FASTQ check record
        (reads, size and SHA-256 of each file)}, stored under ``inputs[sample]["fastqs"]``.
    cells
        Sample name -> how its cells were called (the `CellCallingRecord`'s dict: method,
        parameters, doublet scoring, warnings), stored under ``inputs[sample]["cells"]``.
    """
    records = {name: file_record(path) for name, path in inputs.items()}
    for name, lanes in (fastqs or {}).items():
        records[name]["fastqs"] = dict(lanes)
    for name, record in (cells or {}).items():
        records[name]["cells"] = record
    versions = package_versions()
    if kb_infos:
        kb = {name: kb_versions(path) for name, path in kb_infos.items()}
        for name, used in kb.items():
            records[name]["kb"] = used
        for tool in ("kb_python", "kallisto", "bustools"):
            versions[tool] = _agreed([used[tool] for used in kb.values()])
    return {
        "workflow_version": workflow_version(),
        "versions": versions,
        "config": dict(config),
        "sample_sheet": dict(sample_sheet),
        "inputs": records,
    }


def to_uns(record: Mapping) -> dict[str, object]:
    """A `collect` record as an h5ad/h5mu ``uns`` entry: the same nested dicts.

    anndata writes dicts, strings, numbers, booleans and None as they are, and a list as an
    array of one type (read back as a numpy array). A list it cannot store so, such as one
    with None, dicts, nested lists or mixed types (a hand-written config may hold one), is
    kept as its JSON text; kbagg's own entries have none.

    Parameters
    ----------
    record
        The `collect` (or `read_provenance`) record.
    """
    return {str(key): _uns_value(value) for key, value in record.items()}


def _uns_value(value):
    if isinstance(value, Mapping):
        return to_uns(value)
    if isinstance(value, list | tuple) and not _one_scalar_type(value):
        return json.dumps(value)
    return value


def _one_scalar_type(values) -> bool:
    kinds = {
        bool if isinstance(v, bool) else float if isinstance(v, int) else type(v) for v in values
    }
    return len(kinds) <= 1 and kinds <= {str, float, bool}


def collect_for_run(
    matrices: Mapping[str, str | Path],
    config: Mapping,
    sample_sheet: Mapping,
    kb_infos: Mapping[str, str | Path],
    lane_checks: list[str | Path],
) -> dict[str, object]:
    """`collect` from what a workflow run has on disk: the per-sample matrices, kb's
    kb_info.json, the FASTQ check records (``<library>_lane<N>.json``) and each matrix's
    cell-calling record."""
    from dataclasses import asdict

    from kbagg.count.lane_record import read_lane_record

    fastqs = {sample: {} for sample in matrices}
    for path in lane_checks:
        lane = read_lane_record(path)
        fastqs[lane.sample][Path(path).stem] = asdict(lane)
    cells = {s: record for s, path in matrices.items() if (record := cell_calling_record(path))}
    return collect(matrices, config, sample_sheet, kb_infos, fastqs, cells)


def write_provenance(record: Mapping, path: str | Path) -> None:
    """Write a `collect` record as JSON (atomically), for `read_provenance`.

    Parameters
    ----------
    record
        The `collect` (or `collect_for_run`) record.
    path
        The JSON file to write.
    """
    from kbagg.atomic import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")


def read_provenance(path: str | Path) -> dict[str, object]:
    """The record `write_provenance` wrote, as `collect` returned it.

    Parameters
    ----------
    path
        The JSON file.
    """
    from kbagg.errors import KbaggError

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise KbaggError(f"{path}: cannot read the provenance record ({e})") from None
    if not isinstance(record, dict) or "inputs" not in record:
        raise KbaggError(f"{path}: not a provenance record (no 'inputs'); rerun rule aggregate")
    return record


def with_normalization(record: Mapping, normalization: Mapping) -> dict[str, object]:
    """A provenance record with the depth normalization's record (method, seed, per-sample
    subsampling rates; `kbagg.normalize.run.normalization_record`) under ``normalization``.

    Parameters
    ----------
    record
        The aggregate's provenance record (`collect`, or `read_provenance`).
    normalization
        What the normalization did.
    """
    return {**record, "normalization": dict(normalization)}
