"""The notebook: what pmp adds to IPython and Jupyter kernels.

`magics` (`%pmp` and `%%pmp`), `completion` (Tab on a %pmp line), `status_display` (the live display of a
Future or of a group of Futures), `state_style` (how a state looks in every display), `task_names`
(one name per task) and `cell_output` (where a task's output goes when no display shows it: the cell
that submitted it).
"""


def show_progress(futures, label=None):
    """Show one live progress display for a group of Futures (a bar of their
    states, how many are done, their failures) in the notebook; `label`
    names the group (default: after its tasks' function)."""
    # Imported here: `import pmp` outside a notebook does not load the displays.
    from pmp.notebook import status_display

    status_display.show_progress(futures, label)
