"""Execute notebooks top to bottom and keep the executed copies.

Usage: python notebooks/run.py [--kernel NAME] [NOTEBOOK ...]
(default: the pmp kernel, notebooks/quickstart.ipynb).
The executed notebooks are written to target/notebooks/; a cell error fails the run.
"""

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "notebooks"


def run(path, kernel_name="pmp", timeout=600):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout).execute(cwd=str(path.parent))
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / path.name
    nbformat.write(notebook, target)
    return target


def main(argv):
    kernel = "pmp"
    if argv[:1] == ["--kernel"]:
        kernel, argv = argv[1], argv[2:]
    paths = [pathlib.Path(p).resolve() for p in argv] or [ROOT / "notebooks" / "quickstart.ipynb"]
    for path in paths:
        print(f"{path.name}: executed by the {kernel} kernel, output in {run(path, kernel)}")


if __name__ == "__main__":
    main(sys.argv[1:])
