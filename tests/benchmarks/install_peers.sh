#!/usr/bin/env bash
# Installs the PyPI peers the benchmarks run for real, each in its own venv (their pins clash
# with kbagg's and with each other's), under $KBAGG_PEER_VENVS (default: .peers/ in the
# repository). The benchmarks look there (tests/benchmarks/peers.py); a peer that is missing
# prints its row as unavailable. The R peers come from Debian: see docs/tests.md.
#
#   bash tests/benchmarks/install_peers.sh              # all of them (~17 GB with torch)
#   bash tests/benchmarks/install_peers.sh demuxEM gmmdemux
#
# The versions are the ones the figures in docs/ were measured with (2026-12-04, Python 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${KBAGG_PEER_VENVS:-$PWD/.peers}
# shellcheck source=tests/find_python.sh
source tests/find_python.sh
PYTHON=${PYTHON:-$(find_python)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12) and "need Python >= 3.12: set PYTHON")'

declare -A PACKAGES=(
    [demuxEM]="demuxEM==0.1.8"
    [gmmdemux]="GMM-Demux==0.2.2.3 numpy<2 pandas<3"
    [crispat]="crispat==0.9.11"
    [pertpy]="pertpy==1.4.0"
    [ambient]="soupx-python==0.3.0 decontx-python==0.2.0 cellbender==0.4.0"
)
names=("$@")
if [ ${#names[@]} -eq 0 ]; then names=(demuxEM gmmdemux crispat pertpy ambient); fi
for name in "${names[@]}"; do
    if [ -z "${PACKAGES[$name]:-}" ]; then
        echo "unknown peer venv '$name'; known: ${!PACKAGES[*]}" >&2
        exit 1
    fi
    echo "== $ROOT/$name: ${PACKAGES[$name]}"
    [ -x "$ROOT/$name/bin/python" ] || "$PYTHON" -m venv "$ROOT/$name"
    # shellcheck disable=SC2086  # the package list splits on spaces on purpose
    "$ROOT/$name/bin/pip" install --quiet ${PACKAGES[$name]}
done
