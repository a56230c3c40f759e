"""Dagster definitions and the `earlyhelp` command: wiring only; the logic is in the plain packages."""

from warehouse import owner_only

# before any file is written, by whichever entry point (the CLI, `dagster dev`, a run worker)
owner_only()
