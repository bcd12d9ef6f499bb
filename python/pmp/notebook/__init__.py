"""The notebook: what pmp adds to IPython and Jupyter kernels.

`magics` (`%pmp` and `%%pmp`), `completion` (Tab on a %pmp line), `status_display` (the live display of a
Future or of a map) and `cell_output` (where a task's output goes when no
display shows it: the cell that submitted it).
"""
