#!/usr/bin/env bash
# Every test: set-up, format and lint checks, Rust unit tests, end-to-end pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./install.sh
python=$(cat target/pmp-python)
export PYO3_PYTHON="$python"
"$python" -m pip install -q -r tests/requirements.txt

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== ruff"
"$python" -m ruff check .
"$python" -m ruff format --check .
echo "== cargo test"
cargo test --locked -p pmp-scheduler -p pmp-worker
echo "== pytest"
"$python" -m pytest tests -q -p no:cacheprovider "$@"
