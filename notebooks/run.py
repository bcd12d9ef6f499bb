"""Execute notebooks top to bottom and keep the executed copies.

Usage: python notebooks/run.py [NOTEBOOK ...] (default: notebooks/quickstart.ipynb).
The executed notebooks are written to target/notebooks/; a cell error fails the run.
"""

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "notebooks"


def run(path, kernel_name="python3", timeout=600):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout).execute(cwd=str(path.parent))
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / path.name
    nbformat.write(notebook, target)
    return target


def main(argv):
    paths = [pathlib.Path(p).resolve() for p in argv] or [ROOT / "notebooks" / "quickstart.ipynb"]
    for path in paths:
        print(f"{path.name}: executed, output in {run(path)}")


if __name__ == "__main__":
    main(sys.argv[1:])
