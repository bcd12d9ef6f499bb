#!/usr/bin/env bash
# Installs the peers the executor benchmark compares against (executorlib 1.11, dask.distributed,
# numpy, psutil, and h5py for executorlib's cache_directory)
# into the active Python environment where they are missing, then runs bench_executor.py, and,
# with no arguments, the kernel row (kernel.py: pmp-kernel, ipykernel and the minimal kernel) and
# the fresh-process rows of bench_hpc.py (local, and inside `flux start` where flux is on PATH).
#
#   bench/run.sh                 # every row of bench/README.md's target table, in one run
#   bench/run.sh --quick         # smaller sizes (bench_executor.py only)
#   bench/run.sh --only pmp --json /tmp/bench.json   # (bench_executor.py only)
#
# The interpreter is $PYTHON, else `python` of an active virtualenv/conda environment, else
# ./.venv/bin/python (where ./install.sh puts pmp), else python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
    python="python"
elif [[ -x "$root/.venv/bin/python" ]]; then
    python="$root/.venv/bin/python"
else
    python="python3"
fi

missing=()
"$python" -c 'import executorlib, sys; sys.exit(not executorlib.__version__.startswith("1.11."))' \
    2>/dev/null || missing+=("executorlib==1.11.*")
"$python" -c 'import distributed' 2>/dev/null || missing+=("distributed")
"$python" -c 'import numpy' 2>/dev/null || missing+=("numpy")
"$python" -c 'import psutil' 2>/dev/null || missing+=("psutil")
"$python" -c 'import h5py' 2>/dev/null || missing+=("h5py")
if ((${#missing[@]})); then
    echo "installing into $("$python" -c 'import sys; print(sys.prefix)'): ${missing[*]}"
    "$python" -m pip install --quiet "${missing[@]}"
fi
if ! "$python" -c 'import pmp' 2>/dev/null; then
    echo "note: pmp is not importable with $python (run ./install.sh); its cells will show the error" >&2
fi

"$python" "$here/bench_executor.py" "$@"
if (($#)); then
    exit 0
fi
echo
echo "== kernel: execute 1+1 and start to ready (kernel.py)"
"$python" "$here/kernel.py" --kernels pmp python3 floor ||
    echo "kernel.py failed (are the pmp and python3 kernelspecs installed?)"
echo
echo "== fresh processes, local and inside flux start (bench_hpc.py)"
"$python" "$here/bench_hpc.py" --no-slurm --timeout 120 || echo "bench_hpc.py failed"
