"""The README is a short user's guide whose commands are the ones CI runs: its test command is
the one `.ci/run` runs, its install commands stop with a clear message on a Python older than
3.12, and its links, those of config/README.md and of docs/ lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()
PAGES = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Pages written on other branches of this session (issue 20); a missing one is not checked
# until they are merged. Remove this set once they are.
PENDING: set[str] = set()


def command_after(heading: str) -> str:
    """The bash block that follows the bold heading `heading` in the README."""
    start = README.index(f"**{heading}**")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(README, start)
    return match.group(1)


COMMANDS = {
    "demo": command_after("Install and run the demo"),
    "tests": command_after("Install and run the tests"),
}


def test_the_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    assert COMMANDS["tests"] in ci
    # and the last thing CI does: nothing after it could change the outcome
    assert ci.rstrip().endswith(COMMANDS["tests"].rstrip())
    assert "-e '.[test]'" in COMMANDS["tests"] and "-e '.[workflow]'" in COMMANDS["demo"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_commands_stop_on_python_older_than_3_12_naming_PYTHON(name, tmp_path):
    # An interpreter that reports 3.11, as the default python3 of a pyenv machine may be.
    old = tmp_path / "python3.11"
    old.write_text(
        "#!/bin/sh\n"
        f'exec "{sys.executable}" -c \'import sys; sys.version_info = (3, 11, 7, "final", 0); '
        'sys.version = "3.11.7 (fake)"; code = sys.argv[2]; sys.argv = sys.argv[2:]; '
        'exec(compile(code, "-c", "exec"))\' "$@"\n'
    )
    old.chmod(0o755)
    proc = subprocess.run(
        ["sh", "-c", f"PYTHON={old}\n{COMMANDS[name]}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "3.11.7" in proc.stderr and "PYTHON=" in proc.stderr, proc.stderr
    assert not (tmp_path / ".venv").exists()  # stopped before anything was installed


def test_the_version_guard_passes_on_this_python():
    guard = COMMANDS["tests"].split(" \\\n", 1)[0]
    assert guard.startswith("${PYTHON:-python3} -c ")
    proc = subprocess.run(
        ["sh", "-c", f"PYTHON={sys.executable}\n{guard}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if str(linked.relative_to(REPO)) in PENDING and not linked.exists():
            continue
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}"


def test_the_readme_stays_a_short_guide():
    assert len(README.splitlines()) <= 300
