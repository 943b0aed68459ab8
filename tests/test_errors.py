"""One error type: a KbaggError is one `error:` line and exit 1; anything else is a bug and
keeps its traceback. Both for the command-line tools and for the rules' scripts."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = """
from kbagg.cli import run_cli
from kbagg.errors import KbaggError
def main():
    if {expected}:
        raise KbaggError("sample 'S1': something the user can fix\\nacross two lines")
    return {{}}["a bug"]
run_cli(main)
"""

RULE = """
import sys, types
from kbagg.errors import KbaggError
from kbagg.rule import run_rule, to_terminal, warning_line
def main(smk):
    print("working")
    to_terminal(warning_line("shown on the terminal too", "S1"))
    if {expected}:
        raise KbaggError("sample 'S1': something the user can fix")
    return {{}}["a bug"]
run_rule(types.SimpleNamespace(log=[sys.argv[1]]), main)
"""


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_cli_expected_error_is_one_line():
    proc = run(CLI.format(expected=True))
    assert proc.returncode == 1
    assert proc.stderr == "error: sample 'S1': something the user can fix across two lines\n"


def test_cli_bug_keeps_its_traceback():
    proc = run(CLI.format(expected=False))
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KeyError: 'a bug'" in proc.stderr


@pytest.mark.parametrize("expected", [True, False])
def test_rule_script_output_goes_to_the_log_and_errors_to_the_terminal(tmp_path, expected):
    log = tmp_path / "rule.log"
    proc = run(RULE.format(expected=expected), str(log))
    assert proc.returncode == 1
    logged = log.read_text()
    assert logged.startswith("working\nWARNING: sample 'S1': shown on the terminal too\n")
    assert "WARNING: sample 'S1': shown on the terminal too" in proc.stderr
    assert "working" not in proc.stdout + proc.stderr
    if expected:
        line = "error: sample 'S1': something the user can fix"
        assert logged.endswith(line + "\n") and proc.stderr.endswith(line + "\n")
        assert "Traceback" not in logged + proc.stderr
    else:
        for text in (logged, proc.stderr):
            assert "Traceback (most recent call last)" in text and "KeyError: 'a bug'" in text
