"""Make `import kbagg` work when a script runs from a clone where kbagg is not pip-installed
(e.g. inside a conda env built from envs/*.yaml, or a Snakemake module)."""

import sys
from pathlib import Path

try:
    import kbagg  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
