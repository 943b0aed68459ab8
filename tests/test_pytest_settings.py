"""The test settings in pyproject.toml: a test process that crashes ends the run, failed,
instead of hanging it (pytest-xdist 3.8 with ``--dist loadfile`` reruns the crashing test in
a replacement worker and can wait forever, pytest-dev/pytest-xdist#784)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CRASHING = """\
import os, signal

def test_before():
    pass

def test_crash():
    os.kill(os.getpid(), signal.SIGSEGV)

def test_after():
    pass
"""


def test_a_crashing_test_process_ends_the_run_failed(tmp_path):
    # the layout that hangs without the setting: files either side of the crashing one
    for name in ("test_a.py", "test_c.py", "test_d.py"):
        (tmp_path / name).write_text("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    (tmp_path / "test_crashing.py").write_text(CRASHING)
    command = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-n", "2"]
    command += ["-p", "no:cacheprovider", "-p", "no:faulthandler", str(tmp_path)]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the run hung after the crash: {str(hung.stdout)[-2000:]}") from None
    assert run.returncode == 1, run.stdout[-2000:]
    assert "crashed while running 'test_crashing.py::test_crash'" in run.stdout, run.stdout[-2000:]
