#!/usr/bin/env bash
# pmp builds for macOS workstations: `cargo clippy --all-targets` (which checks
# everything cargo check does, and lints) of every crate but pmp-kernel, for
# x86_64-apple-darwin and aarch64-apple-darwin, with warnings as errors.
#
# pmp-kernel is left out: it uses ring (through jupyter-zmq-client and for
# signing), whose C needs the macOS SDK's headers, so it is checked on a Mac.
# A target whose standard library rustup cannot add here is skipped, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

# blake3's build script compiles C and assembly for the target unless its
# "pure" feature is on; it reads that from this variable. Nothing here links,
# so the pure-Rust build costs nothing, and Linux builds keep the fast path.
export CARGO_FEATURE_PURE=1
# pyo3 cross-checks need the Python version only (abi3-free checks, no linking).
export PYO3_CROSS_PYTHON_VERSION="${PYO3_CROSS_PYTHON_VERSION:-3.11}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/macos-check"

checked=0
for target in x86_64-apple-darwin aarch64-apple-darwin; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        if ! rustup target add "$target" >/dev/null 2>&1; then
            echo "== macOS check: skipped $target: rustup could not add its standard library"
            continue
        fi
    fi
    echo "== macOS check: $target"
    cargo clippy --locked --target "$target" --all-targets \
        -p pmp-scheduler -p pmp-worker -p pmp-embed -p pmp -- -D warnings
    checked=$((checked + 1))
done
echo "== macOS check: $checked of 2 targets checked"
