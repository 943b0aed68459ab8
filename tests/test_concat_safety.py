"""The concat never harms its inputs and never leaves a half-written output.

- an output that is one of the inputs (same path or same file) is refused, input untouched;
- a full disk (a real, small tmpfs) ends with one `error:` line, exit 1, no segmentation
  fault, no output and no temp file, also when HDF5 itself hits ENOSPC;
- SIGTERM or SIGINT at random moments: non-zero exit, no output, no temp file.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from concat_helpers import CLI, run_cli, write_sparse_h5ad

GENES = [f"G{i:05d}" for i in range(2000)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    paths = {name: folder / f"{name}.h5ad" for name in ("in1", "b")}
    for seed, path in enumerate(paths.values()):
        write_sparse_h5ad(path, 3000, GENES, 300, seed=seed)  # ~7.5 MB each
    return paths


def assert_one_error_line(proc, *needles) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("how", ["same path", "same file by another name"])
def test_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, inputs, how):
    in1 = tmp_path / "in1.h5ad"
    shutil.copy(inputs["in1"], in1)
    before = sha256(in1)
    out = in1 if how == "same path" else tmp_path / "hardlink.h5ad"
    if how != "same path":
        os.link(in1, out)
    proc = run_cli("-o", out, f"in1={in1}", f"b={inputs['b']}")
    assert_one_error_line(proc, "the output is also input 'in1'", "choose another output path")
    assert sha256(in1) == before
    assert leftovers(tmp_path) == sorted({in1.name, out.name})


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB tmpfs; skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_is_one_error_line_and_leaves_nothing(small_disk, inputs):
    out = small_disk / "out.h5ad"
    proc = run_cli("-o", out, "--quiet", *(f"{k}={v}" for k, v in inputs.items()))
    assert_one_error_line(proc, str(out), "No space left on device")
    assert leftovers(small_disk) == []


# kbagg-concat with the free-space check switched off, so that HDF5 itself runs into ENOSPC
# in the middle of a write: the case the check cannot foresee (another process filling the
# disk at the same time).
UNGUARDED = """
import sys
from kbagg.concat import output
output.DiskSpace.claim = lambda self, nbytes: None
from kbagg.concat.cli import main
main(sys.argv[1:])
"""


def test_hdf5_write_error_does_not_crash_and_leaves_nothing(small_disk, inputs):
    out = small_disk / "out.h5ad"
    args = ["-o", str(out), "--quiet", *(f"{k}={v}" for k, v in inputs.items())]
    proc = subprocess.run(
        [sys.executable, "-c", UNGUARDED, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # 139: segfault
    assert_one_error_line(proc, str(out), "No space left on device (errno 28)")
    assert leftovers(small_disk) == []


@pytest.mark.slow
def test_signals_at_random_moments_leave_no_output(tmp_path, inputs):
    """20 signals, SIGTERM and SIGINT, at random times during runs of about 1-3 s."""
    cmd = [*CLI, "--quiet", "--chunk-entries", "20000", *(f"{k}={v}" for k, v in inputs.items())]
    start = time.monotonic()
    done = subprocess.run([*cmd, "-o", str(tmp_path / "full.h5ad")], capture_output=True)
    duration = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    rng = random.Random(20)
    interrupted = 0
    for i in range(20):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        sig = (signal.SIGTERM, signal.SIGINT)[i % 2]
        proc = subprocess.Popen(
            [*cmd, "-o", str(folder / "out.h5ad")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        time.sleep(rng.uniform(0, 0.8 * duration))
        proc.send_signal(sig)
        signalled_after = time.monotonic() - started
        _, stderr = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal arrived: output complete
            assert leftovers(folder) == ["out.h5ad"]
            # the first run was slower than this one (a loaded machine): aim earlier
            duration = min(duration, signalled_after)
            continue
        interrupted += 1
        assert proc.returncode in (128 + sig, -sig, 1), (sig, proc.returncode, stderr)
        assert leftovers(folder) == [], (sig, proc.returncode, stderr)
    # The machine is shared: a run can be faster than the one measured (a CI run under load
    # hit 8 of 20 before the window shrank to the runs seen). Most must be hit.
    assert interrupted >= 10, f"only {interrupted} of 20 signals arrived during a run"
