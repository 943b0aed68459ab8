# Sourced by .ci/run and tests/benchmarks/install_peers.sh: `find_python` prints the first
# Python >= 3.12 on PATH (python3, python3.12, ...), else pyenv's newest 3.12+, else fails.
find_python() {
    local candidate
    for candidate in python3 python3.12 python3.13 python3.14; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    # pyenv's shims need PYENV_VERSION; a user's plain python3.12 does not.
    if command -v pyenv > /dev/null; then
        for candidate in $(pyenv versions --bare | grep -E '^3\.1[2-9]\.[0-9]+$' | sort -V); do
            echo "$(pyenv root)/versions/$candidate/bin/python3"
            return
        done
    fi
    echo "no Python >= 3.12 found: set PYTHON" >&2
    return 1
}
