#!/usr/bin/env bash
# Every test: set-up, format and lint checks, Rust unit tests, end-to-end pytest
# (with real mpiexec and, where this machine allows, a real single-node Slurm).
set -euo pipefail
cd "$(dirname "$0")/.."
./install.sh
python=$(cat target/pmp-python)
export PYO3_PYTHON="$python"
"$python" -m pip install -q -r tests/requirements.txt
# mpi4py + the MPICH wheel, checked with a 2-rank run.
MPI_CI_PYTHON="$python" bash .ci/mpi-up.sh

# A two-node Slurm on loopback (needs root and apt); the Slurm tests skip,
# saying so, where it cannot start.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== starting Slurm"
    # Two virtual nodes (node1, node2), so that multi-node jobs are tested for real.
    SLURM_CI_NODES=2 bash .ci/slurm-up.sh
    trap 'bash .ci/slurm-down.sh' EXIT
else
    echo "== not root: Slurm tests will be skipped"
fi

# The browser test (tests/browser): Chromium from apt (as root), playwright-core
# from npm; it skips, saying so, where Chromium or node is missing.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Chromium"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium; } >/dev/null ||
        echo "== Chromium not installed: the browser test will be skipped"
fi
if command -v npm >/dev/null; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
        echo "== npm ci in tests/browser failed: the browser test will fail"
fi

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== macOS builds (cross-checked)"
bash tests/check-macos.sh
echo "== ruff"
"$python" -m ruff check .
"$python" -m ruff format --check .
echo "== cargo test"
cargo test --locked -p pmp-scheduler -p pmp-worker -p pmp-kernel
echo "== pytest"
"$python" -m pytest tests -q -p no:cacheprovider -rs "$@"
