"""`orderstream soak`: the served system under steady load for a long time, with faults.

It measures what long-running Prefect-hosted consumers are known to suffer from: memory that
grows inside one long flow run, runs left Running after their worker dies (zombies), and
heartbeat-based detection that marks healthy runs Crashed. `run` drives one soak; `load`
writes the orders, `sampler` records the processes, lag and latency, `faults` kills and times
the recoveries, `audit` compares every ledger at the end, `report` gives the verdict, the
table and the plot; `command` is the typer command.
"""
