"""Dagster definitions and the `earlyhelp` command: wiring only; the logic is in the plain packages."""

import os

#: Polars' allocator (its own jemalloc) hands freed memory back to the system within about a
#: second (its build's settings: dirty pages 0.5 s, then 1 s), and a run's steps allocate and free
#: gigabytes a minute, so most of what they touch is handed back and faulted in again: at 1.2M
#: residents a month's run took 6.1M page faults, 20 s of its 118 s of CPU in the kernel. Kept ten
#: seconds each (jemalloc's own default for dirty pages): faults 6.1 -> 4.9M, kernel time 19.7 ->
#: 15.6 s, the peak 3.05 -> 3.35 GB (docs/performance-history.md, forty-second session). Set
#: before anything imports Polars: its allocator reads this once, when it starts. A value already
#: set (a council's, to trade time for memory the other way) is left as it is.
POLARS_ALLOCATOR_ENV, POLARS_ALLOCATOR = "_RJEM_MALLOC_CONF", "dirty_decay_ms:10000,muzzy_decay_ms:10000"
os.environ.setdefault(POLARS_ALLOCATOR_ENV, POLARS_ALLOCATOR)

from warehouse import owner_only  # noqa: E402  (imports Polars)

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
