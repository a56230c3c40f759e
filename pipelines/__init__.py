"""Dagster definitions and the `earlyhelp` command: wiring only; the logic is in the plain packages."""

from warehouse import owner_only

# before any file is written, by whichever entry point (the CLI, `dagster dev`, a run worker)
owner_only()

#: What a run's process imports and keeps to its end: every step's body (registered on import) and
#: Great Expectations, which the contract checks import on first use. `earlyhelp run` imports them
#: first (`warehouse.import_for_the_run`); the forkserver of steps run apart preloads them.
RUN_IMPORTS = ("pipelines.definitions", "great_expectations")
