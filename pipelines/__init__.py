"""Dagster definitions and the `earlyhelp` command: wiring only; the logic is in the plain packages."""

import os

#: What a run asks of Polars' allocator (its own jemalloc). Polars' settings hand freed memory back
#: to the system within about a second (dirty pages 0.5 s, then 1 s), and a run's steps allocate and
#: free gigabytes a minute, so much of what they touch is handed back and faulted in again: at 1.2M
#: residents a month's run took 6.1M page faults, 19 s of its 111 s of CPU in the kernel. Kept ten
#: seconds each (jemalloc's own default for dirty pages): side by side, a month's faults 6.1 ->
#: 4.8M, its kernel time 18.9 -> 15.4 s, its wall 66.6 -> 63.3 s, its peak 3,128 -> 3,307 MiB
#: (docs/performance-history.md, forty-second session).
POLARS_ALLOCATOR = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
#: Set, what a run asks of Polars' allocator instead (Polars' own: `dirty_decay_ms:500,muzzy_decay_ms:1000`).
POLARS_ALLOCATOR_ENV = "EARLYHELP_POLARS_ALLOCATOR"
#: Where Polars' allocator reads its settings: once, when Polars is first imported, the last value
#: of each option winning. Polars writes its own settings first, and leaves the variable so set for
#: any process started after (a benchmark's parent that imported Polars, say).
_JEMALLOC_CONF = "_RJEM_MALLOC_CONF"


def _ask_polars_allocator() -> None:
    asked = os.environ.get(POLARS_ALLOCATOR_ENV) or POLARS_ALLOCATOR
    given = os.environ.get(_JEMALLOC_CONF, "")
    if not given.endswith(asked):
        os.environ[_JEMALLOC_CONF] = f"{given},{asked}" if given else asked


# before anything imports Polars
_ask_polars_allocator()

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
