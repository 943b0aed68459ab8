"""Shared fixtures: run the real workflow with real Snakemake and kb in temporary folders."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
TESTDATA = REPO.parent / "shared" / "testdata"
KB = Path(sys.executable).with_name("kb")  # the kb of this venv, for kb by hand


@pytest.fixture(autouse=True)
def _cli_exits_stay_in_child_processes(monkeypatch):
    """kbagg's tools leave by os._exit (kbagg.cli.exit_now). Called inside pytest that would
    end the whole session with status 0 and no summary, silently skipping every later test:
    a test must run a CLI in a child process."""
    import kbagg.cli
    import kbagg.rule

    def refuse(status: int) -> None:
        raise AssertionError(f"exit_now({status}) in the pytest process: run the tool as a child")

    monkeypatch.setattr(kbagg.cli, "exit_now", refuse)
    monkeypatch.setattr(kbagg.rule, "exit_now", refuse)


# The end-to-end tests write kb indices, matrices, four virtualenvs and a SLURM run under
# the temporary folder: a few GB at the peak.
MIN_FREE_GB = 5.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A slow test on a nearly full disk fails first, saying so, rather than as a cascade
    of kb, HDF5 and Snakemake errors about files that could not be written."""
    if item.get_closest_marker("slow") is None:
        return
    folder = tempfile.gettempdir()
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb < MIN_FREE_GB:
        pytest.fail(
            f"only {free_gb:.1f} GB free in {folder}; the end-to-end tests need "
            f"{MIN_FREE_GB:.0f} GB (set TMPDIR to a larger folder)",
            pytrace=False,
        )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto`: one more than the cores, at most 4 (pyproject's
    --maxprocesses). The end-to-end tests spend much of their time waiting (kb reading the
    10x on-list, the disk, the demo's lock): the README's demo used 0.75 of one core over
    its 6 minutes on 2 cores, so a worker per core leaves CPU idle."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests first (stable otherwise): with `--dist loadfile` the long ones
    start early and the many short files fill the workers at the end, instead of one
    end-to-end file running alone last."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


SLURM_SCRIPTS = REPO / "tests" / "slurm"
_STARTED_SLURM = pytest.StashKey[bool]()


def slurm_cluster_script(name: str) -> subprocess.CompletedProcess:
    """Run tests/slurm/<name> (start_cluster.sh, stop_cluster.sh); output captured."""
    return subprocess.run(["bash", str(SLURM_SCRIPTS / name)], capture_output=True, text=True)


def slurm_controller_running() -> bool:
    return subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0


def _session_runs_slurm_tests(config: pytest.Config) -> bool:
    """tests/test_slurm.py is among the paths given and its marks are not deselected."""
    from _pytest.mark.expression import Expression

    if markexpr := config.getoption("markexpr"):
        selected = Expression.compile(markexpr).evaluate(
            lambda name, **_: name in ("slow", "slurm")
        )
        if not selected:
            return False
    target = REPO / "tests" / "test_slurm.py"
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == target or (path.is_dir() and target.is_relative_to(path)):
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the local SLURM cluster first when the SLURM tests are part of the run.

    Snakemake imports every installed executor plugin, and the SLURM plugin runs
    `scontrol show config` on import: with SLURM's tools installed and no controller
    answering, every Snakemake start (local runs too) waits 9 s for it. Started once here
    (by the xdist controller, before the workers), it answers at once for the whole
    session; it is stopped at the end if it was not running before."""
    config = session.config
    config.stash[_STARTED_SLURM] = False
    if os.environ.get("PYTEST_XDIST_WORKER") or not _session_runs_slurm_tests(config):
        return
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        return  # test_slurm.py installs or skips by itself
    if slurm_controller_running():
        return
    start = slurm_cluster_script("start_cluster.sh")
    config.stash[_STARTED_SLURM] = start.returncode == 0  # else test_slurm.py reports it


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(_STARTED_SLURM, False):
        slurm_cluster_script("stop_cluster.sh")


def kb(*args) -> str:
    """`kb ARGS` by hand, with the test's own arguments; kb exits 0 on most errors, so its
    log is checked too. Returns the log."""
    proc = subprocess.run([str(KB), *map(str, args)], capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "An exception occurred" not in log, (
        f"kb {' '.join(map(str, args))} failed ({proc.returncode}):\n{log[-4000:]}"
    )
    return log


def run_snakemake(workdir: Path, *args: str, check: bool = True, snakefile: Path = SNAKEFILE):
    """`snakemake -s <snakefile> -d <workdir> ARGS` with this interpreter; output captured."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir)]
    command += ["--cores", "2", *args]
    proc = subprocess.run(command, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(command)}\n"
            f"--- stdout\n{proc.stdout[-5000:]}\n{snakemake_failure(proc.stderr, workdir)}"
        )
    return proc


def snakemake_failure(stderr: str, workdir: Path) -> str:
    """What a failed run says: Snakemake's error blocks and the end of each failed job's log
    (the part a plain tail of stderr cuts off)."""
    start = stderr.find("Error in rule")
    text = f"--- stderr\n{stderr[start:][:6000] if start >= 0 else stderr[-6000:]}"
    for line in stderr.splitlines():
        match = re.match(r"\s+log: (.+?) \(check log file", line)
        for name in match.group(1).split(", ") if match else ():
            log = workdir / name
            if log.is_file():
                text += f"\n--- {name} (end)\n{log.read_text(errors='replace')[-3000:]}"
    return text


def keep_gene_expression_of(sheet_path: Path, samples: list[str]) -> None:
    """Cut a sample sheet to the gene-expression lanes of `samples`, in place."""
    import pandas as pd

    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    keep = (sheet["feature_type"] == "Gene Expression") & sheet["sample"].isin(samples)
    sheet[keep].to_csv(sheet_path, sep="\t", index=False)


def copy_tree(dest: Path) -> Path:
    """The repository's files as a fresh clone would have them (tracked + new, not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        files = [REPO / f.decode() for f in listed if f]
    except (subprocess.CalledProcessError, FileNotFoundError):
        ignored = {".git", ".venv", "results", "resources", ".snakemake", "logs", "benchmarks"}
        files = [p for p in REPO.rglob("*") if not ignored & set(p.relative_to(REPO).parts)]
    for path in files:
        if path.is_file():
            target = dest / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data not found at {TESTDATA} (it sits beside the repo in CI)")
    return TESTDATA


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The README's demo: `snakemake --cores 2` on the shipped config in a fresh copy.

    It runs once per test session: pytest-xdist workers share one copy under the session's
    base folder, the first worker to ask runs it while holding a lock and the others wait
    for it (tests only read it, or copy it first). A failed demo fails every worker's tests
    with the same message.

    `--skip-script-cleanup` keeps each job's script (with its preamble) in
    .snakemake/scripts/, for tests/test_envs.py to rerun in the rules' environments."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is <session>/popen-gwN: share <session>.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    clone, done, failure = (shared / "demo" / name for name in ("kbagg", "DONE", "FAILED"))
    with open(shared / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not failure.exists() and not done.exists():
            shutil.rmtree(clone.parent, ignore_errors=True)
            copy_tree(clone)
            command = [sys.executable, "-m", "snakemake", "--cores", "2", "--skip-script-cleanup"]
            proc = subprocess.run(command, cwd=clone, capture_output=True, text=True)
            if proc.returncode == 0:
                done.touch()
            else:
                failure.write_text(
                    f"demo failed ({proc.returncode}):\n{snakemake_failure(proc.stderr, clone)}"
                )
    if failure.exists():
        pytest.fail(failure.read_text(), pytrace=False)
    return clone


def assert_same_aggregates_for(samples: list[str], workdir: Path, demo_run: Path) -> None:
    """The aggregates of a run over some demo samples equal the standalone demo's, cut to
    those samples: same cells, genes, values, obs and var (categoricals compared by value,
    since a run over fewer samples has fewer categories)."""
    import anndata as ad
    import numpy as np
    import pandas as pd

    def by_value(obs: pd.DataFrame) -> pd.DataFrame:
        return obs.astype(dict.fromkeys(obs.select_dtypes("category"), object))

    for kind in ("filtered", "raw"):
        got = ad.read_h5ad(workdir / "results" / "aggregate" / f"{kind}.h5ad")
        demo = ad.read_h5ad(demo_run / "results" / "aggregate" / f"{kind}.h5ad")
        expected = demo[demo.obs["sample"].isin(samples)].copy()
        assert got.n_obs > 0 and set(got.obs["sample"]) == set(samples)
        assert list(got.obs_names) == list(expected.obs_names)
        assert list(got.var_names) == list(expected.var_names)
        np.testing.assert_array_equal(got.X.toarray(), expected.X.toarray())
        pd.testing.assert_frame_equal(by_value(got.obs), by_value(expected.obs))
        pd.testing.assert_frame_equal(got.var, expected.var)
