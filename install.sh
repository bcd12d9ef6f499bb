#!/usr/bin/env bash
# pmp's one set-up step. Safe to run again: it installs only what is missing,
# then rebuilds (incrementally) and reinstalls pmp.
#
# Installs into the active virtualenv or conda environment; with neither
# active, into ./.venv, created here. Builds in release mode.
set -euo pipefail
cd "$(dirname "$0")"
say() { printf 'install.sh: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
    say "cargo is missing: install Rust (https://rustup.rs) and run install.sh again"
    exit 1
fi

# Which Python environment gets pmp.
if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ]; then
    python="$CONDA_PREFIX/bin/python"
else
    if [ ! -x .venv/bin/python ]; then
        base=$(command -v python3 || true)
        [ -n "$base" ] || { say "python3 is missing: install Python >= 3.9"; exit 1; }
        say "creating .venv with $base"
        "$base" -m venv .venv
    fi
    python="$PWD/.venv/bin/python"
fi
python=$("$python" -c 'import sys; print(sys.executable)')
say "Python environment: $python"

missing=$("$python" - <<'PY'
import importlib.util
wanted = {
    "maturin": "maturin>=1.5,<2",
    "cloudpickle": "cloudpickle>=3",
    # pmp-kernel runs cells with IPython (8.6: the completion matchers that
    # Tab on a %pmp line uses); comm carries ipywidgets' messages.
    "IPython": "ipython>=8.6",
    "comm": "comm>=0.1.3",
    # JupyterLab's debugger (pmp-kernel imports it only once it is enabled).
    "debugpy": "debugpy>=1.8",
}
print(" ".join(spec for mod, spec in wanted.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
    say "pip install $missing"
    "$python" -m pip install -q $missing
fi

# Build against exactly this interpreter (pyo3 reads it at build time).
export PYO3_PYTHON="$python"
say "building pmp-worker and pmp-kernel (release)"
cargo build --release --locked -p pmp-worker -p pmp-kernel
say "building the pmp wheel (release)"
rm -rf target/wheels
"$python" -m maturin build --release --locked -q -m python/Cargo.toml -o target/wheels -i "$python" >&2
"$python" -m pip install -q --force-reinstall --no-deps target/wheels/pmp-*.whl

scripts=$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
install -m 755 target/release/pmp-worker "$scripts/pmp-worker"
install -m 755 target/release/pmp-kernel "$scripts/pmp-kernel"
# Register the kernelspec from the installed copy: it records its own path.
"$scripts/pmp-kernel" install --sys-prefix --python "$python" >&2
# Where Flux exists, also pmp-flux: the same kernel started inside its own
# `flux start`, so the flux backend has an instance to submit to.
if command -v flux >/dev/null; then
    "$python" - "$(command -v flux)" <<'PY'
import json, pathlib, shutil, sys
kernels = pathlib.Path(sys.prefix, "share", "jupyter", "kernels")
spec = json.loads((kernels / "pmp" / "kernel.json").read_text())
spec["argv"] = [sys.argv[1], "start", *spec["argv"]]
spec["display_name"] = "Python 3 (pmp, inside flux start)"
target = kernels / "pmp-flux"
target.mkdir(parents=True, exist_ok=True)
(target / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
for logo in (kernels / "pmp").glob("logo-*"):
    shutil.copy(logo, target / logo.name)
print(f"installed kernelspec pmp-flux in {target}", file=sys.stderr)
PY
fi

# Let the test and job scripts find the same interpreter.
printf '%s\n' "$python" > target/pmp-python
"$python" -c 'import pmp, pmp._pmp; print("install.sh: pmp is ready in", pmp.__file__.rsplit("/", 2)[0])' >&2
