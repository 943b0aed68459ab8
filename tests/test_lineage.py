"""Lineage in lamindb (kbagg.lineage.register, rule lineage): the config checks, and a real
round trip through a local lamindb instance (SQLite + a local storage folder) made here.

lamindb cannot share the test venv: lamindb 2.12.1 pins anndata<=0.13.2 and its own
botocore, against constraints.txt's anndata 0.13.4 and botocore 1.44.5. The round trip
runs in the env of rule lineage (envs/lamindb.yaml), built as a venv the way
tests/test_envs.py builds each env, or the one named by KBAGG_LAMINDB_PYTHON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from kbagg.errors import KbaggError
from kbagg.lineage.register import SETTINGS_FOLDER, check_instance


def test_a_new_or_empty_folder_is_accepted(tmp_path):
    check_instance(tmp_path / "new", "kbagg")
    (tmp_path / "empty").mkdir()
    check_instance(tmp_path / "empty", "atlas/runs")


def test_a_folder_that_is_not_an_instance_is_refused_by_name(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(KbaggError, match=rf"lamindb.instance {re.escape(str(folder))}: not a"):
        check_instance(folder, "kbagg")
    (folder / ".lamindb").mkdir()
    (folder / ".lamindb" / "lamin.db").write_text("")
    with pytest.raises(KbaggError, match="an instance kbagg did not create|kbagg did not"):
        check_instance(folder, "kbagg")
    settings = folder / SETTINGS_FOLDER / ".lamin"
    settings.mkdir(parents=True)
    (settings / "instance--anonymous--data.env").write_text("")
    check_instance(folder, "kbagg")
    (tmp_path / "file").write_text("")
    with pytest.raises(KbaggError, match="a file, not a folder"):
        check_instance(tmp_path / "file", "kbagg")


@pytest.mark.parametrize("prefix", ["", "/abs", "a/../b", "a b", "a//b", "trailing/"])
def test_a_bad_key_prefix_is_refused_by_name(tmp_path, prefix):
    with pytest.raises(KbaggError, match="config lamindb.key_prefix"):
        check_instance(tmp_path / "new", prefix)


PARSE_NEEDS = ("snakemake", "kb-python", "tiledbsoma")


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("==") for line in path.read_text().splitlines() if "==" in line]
    return {name.lower().replace("_", "-"): version for name, version in lines}


def lamindb_python(root: Path) -> Path:
    """KBAGG_LAMINDB_PYTHON, else a venv built under `root`: envs/lamindb.yaml's pip list
    (kbagg from this checkout) plus what Snakemake needs to parse the workflow (snakemake,
    kb-python, tiledbsoma), pinned by envs/lamindb.constraints.txt."""
    if given := os.environ.get("KBAGG_LAMINDB_PYTHON"):
        return Path(given)
    spec = yaml.safe_load((REPO / "envs" / "lamindb.yaml").read_text())
    (pip,) = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    # a wheel of this checkout (as tests/test_envs.py does): no build files left in it
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root), str(REPO)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = root.glob("kbagg-*.whl")
    packages = [f"kbagg @ {wheel.as_uri()}" if p.startswith("kbagg") else p for p in pip]
    constraints = REPO / "envs" / "lamindb.constraints.txt"
    packages += [f"{name}=={pins(constraints)[name]}" for name in PARSE_NEEDS]
    install = [str(python), "-m", "pip", "install", "-q", "--no-compile", "-c", str(constraints)]
    # no PYTHONPATH: pip would take a kbagg found there as installed and skip the wheel
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([*install, *packages], capture_output=True, text=True, env=clean)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stderr[-4000:]}"
    kbagg = subprocess.run([str(python), "-c", "import kbagg"], env=clean, capture_output=True)
    assert kbagg.returncode == 0, kbagg.stderr.decode()[-2000:]
    return python


def lamindb_env(home: Path) -> dict[str, str]:
    """The child processes' environment: HOME an empty folder (to see what lamindb writes
    there), no lamindb settings inherited."""
    env = {**os.environ, "HOME": str(home)}
    for name in ("LAMIN_SETTINGS_DIR", "LAMIN_CACHE_DIR", "PYTHONPATH"):
        env.pop(name, None)
    return env


def run_lineage(python: Path, workdir: Path, home: Path, *args: str) -> None:
    """Snakemake, from the lamindb venv, up to results/aggregate/lamindb.json of the copy
    of the demo with lamindb on: only rule lineage runs (`--forcerun lineage` the second
    time)."""
    command = [str(python), "-m", "snakemake", "results/aggregate/lamindb.json", "--cores", "1"]
    # mtime: from another venv, Snakemake 9 finds "Code has changed since last execution"
    # for rules whose code did not change (onlist, simulate_demo) and would redo the demo.
    command += ["--rerun-triggers", "mtime", *args]
    proc = subprocess.run(
        command, cwd=workdir, env=lamindb_env(home), capture_output=True, text=True, timeout=600
    )
    log = workdir / "logs" / "aggregate" / "lineage.log"
    detail = log.read_text()[-4000:] if log.exists() else ""
    assert proc.returncode == 0, f"{proc.stderr[-5000:]}\n--- lineage.log\n{detail}"
    jobs = re.search(r"Job stats:\n(.*?)\n\n", proc.stderr + proc.stdout, re.S)
    assert jobs, proc.stderr[-3000:]
    ran = re.findall(r"^(\w+)\s+\d+\s*$", jobs[1], re.M)
    assert ran == ["lineage", "total"], jobs[1]


QUERY = """
import json
from kbagg.lineage.register import connect
from kbagg.checksum import sha256
ln = connect("lamindb")
transform = ln.Transform.get(key="kbagg")
runs = ln.Run.filter(transform=transform).order_by("started_at")
by_key = {a.key: a for a in ln.Artifact.filter(key__startswith="kbagg/")}
outputs = {a.key for a in ln.Artifact.filter(run__transform__key="kbagg")}
collection = ln.Collection.get(key="kbagg/samples")
print(json.dumps({
    "runs": [r.uid for r in runs],
    "run_names": [r.name for r in runs],
    "made": [[r.output_artifacts.count(), r.recreated_artifacts.count()] for r in runs],
    "collections": [[r.output_collections.count(), r.recreated_collections.count()] for r in runs],
    "params": runs.last().params,
    "inputs": [a.key for a in runs.first().input_artifacts.all()],
    "keys": sorted(by_key),
    "outputs_by_transform": sorted(outputs),
    "artifact_run": {k: a.run.uid for k, a in by_key.items() if a.run},
    "collection": sorted(a.key for a in collection.artifacts.all()),
    "h5ad_sha256": sha256(by_key["kbagg/filtered.h5ad"].cache()),
    "soma_otype": by_key["kbagg/filtered.soma"].otype,
    "n_artifacts": ln.Artifact.filter().count(),
}))
"""


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_registration_round_trips(demo_run, tmp_path):
    """The real rule in the lamindb env, run twice by Snakemake on a copy of the demo; then
    lamindb's registry, queried in a fresh process, finds what the runs registered."""
    import shutil

    from kbagg.checksum import sha256

    workdir = tmp_path / "demo"
    shutil.copytree(demo_run, workdir, symlinks=True)
    home = tmp_path / "home"
    home.mkdir()
    python = lamindb_python(tmp_path)
    with open(workdir / "config" / "config.yaml", "a") as config:
        config.write("lamindb:\n  enabled: true\n  instance: lamindb\n  key_prefix: kbagg\n")
    before = {p.name for p in workdir.iterdir()}
    started = time.monotonic()
    run_lineage(python, workdir, home)
    first = json.loads((workdir / "results/aggregate/lamindb.json").read_text())
    run_lineage(python, workdir, home, "--forcerun", "lineage")
    second = json.loads((workdir / "results/aggregate/lamindb.json").read_text())
    seconds = time.monotonic() - started
    proc = subprocess.run(
        [str(python), "-c", QUERY],
        cwd=workdir,
        env=lamindb_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    instance = workdir / "lamindb"
    print(f"two lineage runs {seconds:.1f} s; instance {du(instance) / 1e6:.2f} MB")

    assert first["instance"] == "anonymous/lamindb"
    samples = sorted(p.name for p in (workdir / "results" / "samples").iterdir())
    sample_keys = [f"kbagg/samples/{s}.h5ad" for s in samples]
    aggregates = ["filtered.h5ad", "raw.h5ad", "filtered.h5mu", "filtered.soma"]
    outputs = [
        f"kbagg/{name}" for name in aggregates if (workdir / "results/aggregate" / name).exists()
    ]
    assert len(outputs) == 4  # the demo makes all four
    provenance_key = "kbagg/provenance/filtered.provenance.json"
    # by transform: both runs; by key: every output; by the runs' transform: the outputs
    assert found["runs"] == [first["run"], second["run"]] and all(found["run_names"])
    assert found["keys"] == sorted([*outputs, *sample_keys, provenance_key])
    assert found["outputs_by_transform"] == sorted([*outputs, *sample_keys])
    # unchanged files are the same artifacts the second time (lamindb's hash lookup), which
    # lamindb records as recreated by the second run
    n = len(outputs) + len(samples)
    assert found["made"] == [[n, 0], [0, n]] and found["collections"] == [[1, 0], [0, 1]]
    assert second["artifacts"] == first["artifacts"] and second["samples"] == first["samples"]
    assert found["n_artifacts"] == len(outputs) + len(samples) + 1
    assert found["artifact_run"]["kbagg/filtered.h5ad"] == first["run"]
    # the collection holds the per-sample matrices
    assert found["collection"] == sorted(sample_keys)
    # the copy in the instance is the aggregate, byte for byte
    assert found["h5ad_sha256"] == sha256(workdir / "results/aggregate/filtered.h5ad")
    assert found["soma_otype"] == "tiledbsoma"
    # the run: config, kbagg's version, FASTQ SHA-256 as the FASTQ check computed them
    provenance = json.loads((workdir / "results/aggregate/filtered.provenance.json").read_text())
    expected = {}
    for record in provenance["inputs"].values():
        for lane in record["fastqs"].values():
            for read in lane["files"].values():
                expected[read["path"]] = read["sha256"]
    params = found["params"]
    assert params["fastq_sha256"] == expected and len(expected) >= 2 * len(samples)
    assert params["config"]["aggregate"]["join"] == "outer" and "lamindb" not in params["config"]
    assert params["kbagg_version"] == provenance["versions"]["kbagg"]
    assert found["inputs"] == [provenance_key]
    # lamindb wrote nothing in HOME nor in the working directory, only in the instance
    # (Snakemake itself keeps a source cache in ~/.cache/snakemake)
    assert [p for p in home.rglob("*") if "lamin" in p.name] == []
    assert {p.name for p in workdir.iterdir()} - before == {"lamindb"}
    assert (instance / ".kbagg-lamin" / ".lamin").is_dir()
    assert (instance / ".lamindb" / "lamin.db").is_file()


def test_snakemake_stops_on_a_bad_instance_before_any_job(tmp_path):
    from test_config_names import dry_run

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    proc = dry_run(tmp_path, lamindb={"enabled": True, "instance": "notes"})
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert "config lamindb.instance notes: not a lamindb instance" in said, said[-3000:]
    assert "Traceback" not in said and not (tmp_path / "results").exists()


def test_snakemake_plans_rule_lineage_when_enabled(tmp_path):
    from test_config_names import dry_run

    proc = dry_run(tmp_path, lamindb={"enabled": True, "instance": "new_instance"})
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-3000:]
    assert re.search(r"^lineage\s+1$", said, re.M), said[-3000:]
    assert not (tmp_path / "new_instance").exists()  # created by the job, not at parse time
