"""The client: what a script or notebook imports to send calls to workers.

`executor` (the Executor: it checks arguments, `executor_checks`, and
hands each call to one engine: `native_engine` for pmp's own scheduler,
with `external_tasks` for the tasks the client resolves, or `batch_engine`
for batch jobs, with `batch_futures` for their Futures and `batch_checks`
for their resource values), `future` (its Futures and the table that turns
scheduler events into their states), `serialize` (functions, calls and
values as pickle frames; `function_pickles` keeps a function's pickle
between submits), `resources` (checking what a call asks for),
`backends` (which backend runs the workers), `errors`, `task_names` (one
name per task), `cell_output` (where a task's output goes when no display
shows it) and `display_hooks` (the live displays the notebook registers).

Kept free of imports: a worker loads `pmp.client.serialize` at start and
must not pay for the rest.
"""
