"""One kb count per sample at a time: a new attempt stops an orphan of an interrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kbagg.count.attempt import LOCK_NAME, SampleLock, attempt_folder, remove_old_attempts
from kbagg.kb.run import KbError

HOLD_THE_LOCK = """
import sys, time
from kbagg.count.attempt import SampleLock
with SampleLock(sys.argv[1], "S1"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_new_attempt_stops_the_orphan_holding_the_lock(tmp_path):
    orphan = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert orphan.stdout.readline().strip() == "locked"
    record = json.loads((tmp_path / LOCK_NAME).read_text())
    assert record["pid"] == orphan.pid
    said = []
    start = time.monotonic()
    with SampleLock(tmp_path, "S1", log=said.append):
        assert orphan.poll() is not None, "the orphan still runs"
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert time.monotonic() - start < 20
    assert said == [
        f"sample 'S1': stopping kb count pid {orphan.pid} left running by an interrupted run "
        "(its kb process group too)"
    ]


def test_a_holder_on_another_host_is_not_touched(tmp_path):
    orphan = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert orphan.stdout.readline().strip() == "locked"
        lock = tmp_path / LOCK_NAME
        lock.write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "kb_pgid": None}))
        with (
            pytest.raises(
                KbError, match=r"another kb count holds .* \(host node-elsewhere, pid 4242\)"
            ),
            SampleLock(tmp_path, "S1"),
        ):
            pass
        assert orphan.poll() is None
    finally:
        orphan.kill()
        orphan.wait()


def test_old_attempt_folders_are_removed_and_this_one_is_private(tmp_path):
    kb_dir = tmp_path / "kb"
    old = tmp_path / "kb.attempt-1"
    old.mkdir()
    (old / "output.bus").write_text("x")
    assert attempt_folder(kb_dir) == tmp_path / f"kb.attempt-{os.getpid()}"
    assert remove_old_attempts(kb_dir) == [old]
    assert not old.exists()
