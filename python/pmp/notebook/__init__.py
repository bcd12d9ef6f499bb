"""The notebook: what pmp adds to IPython and Jupyter kernels.

`magics` (`%pmp` and `%%pmp`), `completion` (Tab on a %pmp line), `status_display` (the live display of a
Future or of a group of Futures), `state_style` (how a state looks in every display) and
`earlier_runs` (what the task store says of a run before this one). `pmp/__init__.py` registers the
displays with the client (`pmp.client.display_hooks`): the client never imports this package.
"""


def show_progress(futures, label=None):
    """Show one live progress display for a group of Futures (a bar of their
    states, how many are done, their failures) in the notebook; `label`
    names the group (default: after its tasks' function)."""
    # Imported here: `import pmp` outside a notebook does not load the displays.
    from pmp.notebook import status_display

    status_display.show_progress(futures, label)
