"""The concat engine against both supported anndata series: pyproject.toml allows
anndata >= 0.12.19 (Python 3.12 and 3.13 install either), constraints.txt pins 0.13. The
property tests run again with anndata 0.12.19 in front of the installed one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

OLDEST = "0.12.19"


def test_concat_property_tests_pass_with_anndata_0_12(tmp_path):
    target = tmp_path / "anndata_old"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [f"anndata=={OLDEST}"],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        pytest.skip(f"could not download anndata {OLDEST}: {install.stderr.strip()[-300:]}")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
        "KBAGG_CONCAT_EXAMPLES": "30",
    }
    version = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('anndata'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == OLDEST
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "tests/test_concat_properties.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
