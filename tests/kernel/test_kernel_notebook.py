"""A notebook executed through pmp-kernel by nbclient, as `jupyter execute` does."""

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def _notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def test_notebook_runs_and_keeps_outputs(tmp_path):
    nb = _notebook(
        "values = [n * n for n in range(4)]\nprint('sum', sum(values))",
        "from IPython.display import Markdown\nMarkdown('**done**')",
        "import os\nos.system('echo from-c')",
        "values",
    )
    nbclient.NotebookClient(
        nb, kernel_name="pmp", timeout=60, resources={"metadata": {"path": tmp_path}}
    ).execute()
    first, second, third, fourth = (cell.outputs for cell in nb.cells)
    assert first[0]["text"] == "sum 14\n"
    assert second[0]["data"]["text/markdown"] == "**done**"
    assert "from-c" in "".join(o.get("text", "") for o in third)
    assert fourth[0]["data"]["text/plain"] == "[0, 1, 4, 9]"
    assert nb.metadata["language_info"]["name"] == "python"
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    nbformat.validate(nbformat.read(path, as_version=4))


def test_a_failing_cell_stops_the_notebook(tmp_path):
    nb = _notebook("raise ValueError('bad input')", "print('never')")
    client = nbclient.NotebookClient(nb, kernel_name="pmp", timeout=60)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="bad input"):
        client.execute()
    assert nb.cells[1].outputs == []
