"""Dagster definitions and the `earlyhelp` command: wiring only; the logic is in the plain packages."""

import os

from warehouse import owner_only

# before any file is written, by whichever entry point (the CLI, `dagster dev`, a run worker)
owner_only()

#: What a run's process imports and keeps to its end: every step's body (registered on import).
#: `earlyhelp run` imports it first (`warehouse.import_for_the_run`). Great Expectations is not
#: among them: the contract suites run in a process of their own (`expectations.worker`).
RUN_IMPORTS = ("pipelines.definitions",)

#: Set to 1, heavy steps run in child processes of their own (`pipelines.apart`).
STEPS_APART_ENV = "EARLYHELP_STEPS_APART"


def steps_apart_from_environment() -> bool:
    return os.environ.get(STEPS_APART_ENV, "") == "1"
