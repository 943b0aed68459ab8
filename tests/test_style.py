"""Formatting and lint: snakemake --lint, snakefmt and ruff must all be clean."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


def test_snakemake_lint_is_clean():
    proc = run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr
    )


def test_snakefmt_check_passes():
    proc = run(sys.executable, "-m", "snakefmt", "--check", "workflow/")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check_and_format_pass():
    lint = run(sys.executable, "-m", "ruff", "check", "src", "scripts", "tests")
    assert lint.returncode == 0, lint.stdout
    # README.md and docs/ too: ruff formats the Python snippets in Markdown.
    fmt = run(
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--check",
        "src",
        "scripts",
        "tests",
        "README.md",
        "docs",
    )
    assert fmt.returncode == 0, fmt.stdout
