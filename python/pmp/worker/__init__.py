"""The worker runtime: the Python that runs inside pmp-worker.

`runtime` (what the Rust worker calls to run an init function or a task),
`ranks` (several MPI ranks: rank 0 leads, the others follow),
`outcome` (a task's outcome packed as frames),
`task_output` (a task's sys.stdout and sys.stderr sent back to the client),
`task_traceback` (that traceback as the task's author reads it) and
`remote` (a task's exception with the worker's traceback attached).
"""
