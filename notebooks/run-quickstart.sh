#!/usr/bin/env bash
# The main job: set up, then run the quickstart notebook on the local backend.
set -euo pipefail
cd "$(dirname "$0")/.."
./install.sh
python=$(cat target/pmp-python)
"$python" -m pip install -q nbclient nbformat ipykernel
"$python" -m ipykernel install --sys-prefix --name python3 >/dev/null
"$python" notebooks/run.py notebooks/quickstart.ipynb
