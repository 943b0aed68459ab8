"""Where the benchmarks find the PyPI peers' interpreters: one venv per peer under
``$KBAGG_PEER_VENVS`` (default ``.peers/`` in the repository), as
``tests/benchmarks/install_peers.sh`` builds them."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER_VENVS = Path(os.environ.get("KBAGG_PEER_VENVS", REPO / ".peers"))


def peer_python(venv: str) -> Path:
    """The interpreter of the peer venv named `venv` (it may not exist: callers say so)."""
    return PEER_VENVS / venv / "bin" / "python"
