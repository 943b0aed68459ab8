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


# The layering rule (docs/architecture.md): a unit of src/kbagg (a package, or a top-level
# module) imports only units of a lower layer. Shared helpers sit at the bottom.
LAYERS = [
    {
        "errors",
        "atomic",
        "checksum",
        "schema",
        "feature_types",
        "obs_columns",
        "kbagg",
    },
    {"cli", "kb", "cell_calling_record"},
    {"rule", "reference", "concat"},
    {"count"},
    {"cells", "aggregate", "soma", "normalize"},
    {"qc", "simulate", "sheet", "lineage"},
    {"config"},
]


def _unit(module: str) -> str:
    parts = module.removesuffix(".__init__").split(".")
    return parts[1] if len(parts) > 1 else "kbagg"


def test_no_module_imports_upward():
    import ast

    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    upward = []
    for path in sorted((REPO / "src" / "kbagg").rglob("*.py")):
        parts = path.relative_to(REPO / "src").with_suffix("").parts
        unit = _unit(".".join(parts))
        assert unit in rank, f"{path}: unit {unit} has no layer in LAYERS"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
                if node.module == "kbagg":
                    targets = [f"kbagg.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in (t for t in targets if t.split(".")[0] == "kbagg"):
                other = _unit(target)
                if other != unit and rank[other] >= rank[unit]:
                    upward.append(f"{'.'.join(parts)} imports {target}")
    assert upward == []
