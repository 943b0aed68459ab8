"""The rules' conda environments (envs/*.yaml) hold everything their code imports.

conda has no reachable channel here, so each env is rebuilt as a venv from its pip list (the
kbagg line pointing at this checkout instead of the release tag), and each of its rules' jobs
from the demo is run again in it: the very script Snakemake ran, preamble included. Two
differences from Snakemake's conda mode, both on the strict side:

- the preamble's `sys.path.extend([...])` of the Snakemake process's own paths is emptied.
  With conda, Snakemake appends them, so a package missing from the env can be found in the
  environment that runs Snakemake and hide the gap; here it cannot.
- snakemake itself is installed into the venv, because unpickling the `snakemake` object of
  the preamble needs it (with conda it comes from those appended paths).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import yaml
from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
# Envs whose pins cannot share constraints.txt, and the file that holds theirs.
OWN_CONSTRAINTS = {"lamindb.yaml": REPO / "envs" / "lamindb.constraints.txt"}
# Rule lineage does not run in the demo (lamindb is off by default; the test venv cannot
# hold lamindb): tests/test_lineage.py builds its env and runs its code there.
DEMO_ENVS = [env for env in ENVS if env.name not in ("lamindb.yaml",)]
RULE_BLOCK = re.compile(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)", re.S | re.M)
# The order the demo ran them in, so each job finds its inputs.
RULE_ORDER = [
    "simulate_demo",
    "reference",
    "onlist",
    "feature_index",
    "fastq_check",
    "kb_count",
    "cells",
    "count_features",
    "sample_h5mu",
    "qc_sample",
    "qc_summary",
    "hashtag_qc",
    "aggregate",
    "aggregate_h5mu",
    "soma_register",
    "soma_write",
    "soma",
    "multiqc",
    "lineage",
]
# Rules the demo does not run, so they have no job script to rerun here; each runs in the
# test venv in the test named (their imports are those of rules of the same env above).
NOT_IN_THE_DEMO = {
    "aggregate_gene_major": "test_reruns.py (aggregate.gene_major)",
    "aggregate_normalized": "test_normalize_workflow.py",
    "normalize_rates": "test_normalize_workflow.py",
    "normalize_sample": "test_normalize_workflow.py",
    "reference_download": "none: needs kb ref -d's download",
    "replacement": "test_splitseq_workflow.py",
}


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.strip().lstrip("- ").split("==", 1)
            found[name.lower().replace("_", "-")] = version.strip()
    return found


def constraints_of(env: Path) -> Path:
    return OWN_CONSTRAINTS.get(env.name, REPO / "constraints.txt")


def env_pip_list(env: Path) -> list[str]:
    spec = yaml.safe_load(env.read_text())
    (pip,) = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    return pip


def rules_by_env() -> dict[str, dict[str, str]]:
    """env file name -> {rule: script name}, from the rules' conda: and script: directives."""
    found: dict[str, dict[str, str]] = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule, body in RULE_BLOCK.findall(smk.read_text()):
            env = re.search(r'conda:\s*\n\s*"\.\./\.\./envs/([\w.]+)"', body)
            script = re.search(r'script:\s*\n\s*script_path\("([\w.]+)"\)', body)
            if env and script:
                found.setdefault(env[1], {})[rule] = script[1]
    return found


def test_env_versions_match_the_constraints_and_kbagg_is_the_release():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    version = re.search(r'__version__ = "([^"]+)"', (REPO / "src/kbagg/__init__.py").read_text())[1]
    url = project["project"]["urls"]["Repository"]
    for env in ENVS:
        constraints = pins(constraints_of(env))
        for name, pinned in pins(env).items():
            assert constraints.get(name) == pinned, f"{env.name}: {name}=={pinned}"
        (kbagg,) = [line for line in env_pip_list(env) if line.startswith("kbagg")]
        assert kbagg.endswith(f"@ git+{url}.git@v{version}"), f"{env.name}: {kbagg}"


def test_every_rule_with_a_script_names_an_env():
    rules = {rule for env in rules_by_env().values() for rule in env}
    # every such rule is rerun in its env below, or listed as not run by the demo
    assert rules == set(RULE_ORDER) | set(NOT_IN_THE_DEMO)
    assert set(rules_by_env()) == {env.name for env in ENVS}


def build_venv(env: Path, folder: Path, kbagg_wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    packages = []
    for line in env_pip_list(env):
        if line.startswith("kbagg"):
            extras = re.match(r"kbagg(\[[^\]]*\])?", line)[1] or ""
            packages.append(f"kbagg{extras} @ {kbagg_wheel.as_uri()}")
        else:
            packages.append(line)
    constraints = pins(constraints_of(env))
    packages.append(f"snakemake=={constraints['snakemake']}")
    # --no-compile: no .pyc for every installed module (the jobs compile what they import);
    # it halves the install's CPU time.
    install = [str(python), "-m", "pip", "install", "-q", "--no-compile"]
    install += ["--disable-pip-version-check", "-c", str(constraints_of(env)), *packages]
    proc = subprocess.run(install, capture_output=True, text=True)
    assert proc.returncode == 0, f"{env.name}: pip install failed:\n{proc.stderr[-4000:]}"
    return python


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict[str, Future]:
    """Every env's venv, built concurrently (downloads and unpacking overlap): env name ->
    future of its python. A failed build fails only that env's test."""
    root = tmp_path_factory.mktemp("venvs")
    # One wheel of this checkout for all: pip builds a source folder in place, so concurrent
    # installs of the checkout itself would race on its build/ and egg-info folders.
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root), str(REPO)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = root.glob("kbagg-*.whl")
    with ThreadPoolExecutor(max_workers=len(DEMO_ENVS)) as pool:
        futures = {
            env.name: pool.submit(build_venv, env, root / env.stem, wheel) for env in DEMO_ENVS
        }
        wait(futures.values())
    return futures


def strict(script: Path) -> str:
    """The job's script with the Snakemake process's sys.path entries removed."""
    text = script.read_text(errors="surrogateescape")
    stripped, n = re.subn(r"import sys;sys\.path\.extend\(\[[^\]]*\]\);", "import sys;", text)
    assert n == 1, f"{script.name}: preamble not recognised"
    return stripped


@pytest.mark.slow
@pytest.mark.parametrize("env", DEMO_ENVS, ids=[e.name for e in DEMO_ENVS])
def test_each_rule_runs_in_its_env(env, venvs, demo_run, tmp_path):
    workdir = tmp_path / "demo"
    shutil.copytree(demo_run, workdir, symlinks=True)
    python = venvs[env.name].result()
    scripts = sorted((workdir / ".snakemake" / "scripts").glob("tmp*.py"))
    rules = rules_by_env()[env.name]
    for rule in [r for r in RULE_ORDER if r in rules]:
        candidates = [s for s in scripts if s.name.endswith(f".{rules[rule]}")]
        assert candidates, f"no job script of rule {rule} kept by the demo run"
        job = candidates[0]
        job.write_text(strict(job), errors="surrogateescape")
        proc = subprocess.run(
            [str(python), str(job)], cwd=workdir, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{rule} in {env.name}:\n{proc.stdout}\n{proc.stderr}"
