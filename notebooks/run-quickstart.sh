#!/usr/bin/env bash
# The main job: set up, then run the quickstart notebook on the local backend.
set -euo pipefail
cd "$(dirname "$0")/.."
./install.sh
python=$(cat target/pmp-python)
"$python" -m pip install -q nbclient nbformat
# Through pmp-kernel (registered by install.sh as the kernelspec "pmp").
"$python" notebooks/run.py --kernel pmp notebooks/quickstart.ipynb
