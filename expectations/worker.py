"""The contract suites run in a process of their own, which imports Great Expectations while the
run is starting.

Importing Great Expectations takes 2.5 s (pandas, SciPy's statistics, Altair, every expectation
and renderer it has), about half of a run's start, all of it on one core: the run's process
imports Dagster and the definitions, opens its instance and records the run's start, while the
machine's other core waits. `earlyhelp run` starts this process first, so the
import is made on that core meanwhile, and the run's own process never imports it.

A table to validate goes to the process as Arrow, written once into shared memory, which the
process reads in place (no copy into a pipe and out again: at 1.2M residents the school table
is 560 MB). The shared memory is the run's process's: it is removed when the suite's result
comes back, or by Python's resource tracker should the process die first, so no table is left
in memory behind a run. The result (`SuiteResult`: counts and shares, never a value) comes back
as it would in the run's own process; the Data Docs pages are written by this process into the
same project folder.

In a run with such a process, each source's suite of up to SET_GOING_ROWS rows is set going as
soon as its table is written (`start_validating`) and runs while the next sources load, on the
core they leave idle; the source's check then takes its result (`validated`), or validates there
where none was started or the table has changed since. Where the system has no shared memory for
a table (a container's small /dev/shm), it is validated in the run's own process.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from functools import cache
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import pyarrow as pa

from data_contracts import Contract
from expectations import ContractValidator, SuiteResult, TableValidation, frame_for_validation, table_for_validation, what_to_validate
from warehouse import return_freed_memory, started_process


@cache
def _validator(project_root: str) -> ContractValidator:
    """One Great Expectations project per output folder, opened once in the process."""
    return ContractValidator(Path(project_root))


def _validate_shared(project_root: str, contract: Contract, memory: str, size: int, inputs: str) -> SuiteResult:
    """Validate the table written into the shared memory `memory` (an Arrow stream of `size` bytes)."""
    # (attaching registers the memory with the resource tracker the run's process shares with
    # this one, which holds each name once: the run's process removes it and tells the tracker)
    shared = SharedMemory(memory)
    try:
        with pa.ipc.open_stream(pa.py_buffer(shared.buf)[:size]) as stream:
            frame = frame_for_validation(stream.read_all())
        result = _validator(project_root).validate(contract, frame, inputs)
        del frame, stream
        return result
    finally:
        gc.collect()  # Great Expectations' objects that reached the frame, in cycles
        try:
            shared.close()
        except BufferError:
            pass  # something here still holds the table: the mapping goes when it does, or with the process


def _write_stream(table: pa.Table, sink) -> None:
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)


def _reserve(shared: SharedMemory, size: int) -> None:
    """Have the system give the shared memory its pages now: where it has too few (a container's
    /dev/shm is 64 MB unless set larger, a 1.2M county's school table 560 MB), this raises OSError
    rather than the process being killed (SIGBUS) as it writes past them. (Taking the pages at
    once is also quicker than faulting them in one by one: the school table 0.50 -> 0.43 s.)"""
    descriptor = getattr(shared, "_fd", -1)
    if size and descriptor >= 0 and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(descriptor, 0, size)


@contextmanager
def _in_shared_memory(table: pa.Table) -> Iterator[tuple[str, int]]:
    """The table as an Arrow stream in new shared memory: (its name, the stream's size), removed after."""
    sink = pa.MockOutputStream()
    _write_stream(table, sink)
    size = sink.size()
    shared = SharedMemory(create=True, size=max(size, 1))
    try:
        _reserve(shared, size)
        _write_stream(table, pa.FixedSizeBufferWriter(pa.py_buffer(shared.buf)))
        yield shared.name, size
    finally:
        shared.unlink()
        shared.close()


class PendingSuite:
    """A suite handed to the suite process: its table stays in shared memory until the result is
    taken (`result`), or let go (`discard`)."""

    def __init__(self, future: Future, held: ExitStack):
        self._future, self._held = future, held

    def result(self) -> SuiteResult:
        try:
            return self._future.result()
        finally:
            self._held.close()

    def discard(self) -> None:
        """Wait for the suite to end (its process reads the memory until then), and remove its table."""
        try:
            self._future.exception()
        finally:
            self._held.close()


class SuiteProcess:
    """A process that imports Great Expectations as it starts and runs the contract suites
    (`submit`, whose result is taken when wanted) one at a time. `for_one_run`: started for one
    run (`earlyhelp run`), and ended once the run's suites are done (`suites_done`), rather than
    kept for the process's next run."""

    def __init__(self, for_one_run: bool = False):
        self.for_one_run = for_one_run
        self._pool = started_process("great_expectations", __name__)

    def submit(self, project_root: Path, contract: Contract, table: pa.Table, inputs: str = "") -> PendingSuite:
        held = ExitStack()
        try:
            memory, size = held.enter_context(_in_shared_memory(table))
            return PendingSuite(self._pool.submit(_validate_shared, str(project_root), contract, memory, size, inputs), held)
        except BaseException:
            held.close()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_PROCESS: list[SuiteProcess] = []


def start_suite_process(for_one_run: bool = False) -> SuiteProcess:
    """This process's suite process, started now if it has none."""
    if not _PROCESS:
        _PROCESS.append(SuiteProcess(for_one_run))
    return _PROCESS[0]


def suites_done() -> None:
    """A run's suites are all done: a suite started and never taken is let go of, and the suite
    process started for that run alone ends, and hands its memory back before the run's heaviest
    steps."""
    while _STARTED:
        _STARTED.popitem()[1][1].discard()
    if _PROCESS and _PROCESS[0].for_one_run:
        _PROCESS.pop().close()


def validate_table(project_root: Path, contract: Contract, table: pa.Table, inputs: str = "") -> SuiteResult:
    """Validate `table` against the contract's suite: in this process where Great Expectations
    is already imported here (a step run apart, whose process preloads it), else in the suite
    process (started now if there is none)."""
    if "great_expectations" in sys.modules and not _PROCESS:
        return _validator(str(project_root)).validate(contract, frame_for_validation(table), inputs)
    try:
        pending = start_suite_process().submit(project_root, contract, table, inputs)
    except OSError as error:
        # no shared memory to hand the table over in: validated here, where it is
        logging.getLogger(__name__).warning(f"{contract.source}: the contract suite runs in the run's own process: no shared memory for its table ({error.strerror})")
        return _validator(str(project_root)).validate(contract, frame_for_validation(table), inputs)
    return pending.result()


#: The most rows a suite is set going with as its table is written. The table handed over is held
#: in shared memory while the run loads on, beside what the load itself left allocated: at 1.2M
#: residents school attendance's 1.66M rows, handed over at the end of their load, took that
#: step's sampled peak (the run's processes summed) from 2.2 to 3.7 GB, above person_links' 3.1,
#: the run's highest. Such a table waits for its check; a month's new rows (170,000 school rows)
#: need not.
SET_GOING_ROWS = 500_000

#: Suites started as their tables were written (`start_validating`), by project folder and
#: source: what was validated, the suite, and its rows.
_STARTED: dict[tuple[str, str], tuple[TableValidation, PendingSuite, int]] = {}


def start_validating(project_root: Path, contract: Contract, con, every_file: bool = False) -> bool:
    """Hand the source's loaded table (what of it `what_to_validate` says) to the suite process
    started for this run, to be validated while the run loads the next source; its check takes
    the result (`validated`). Nothing where no process was started for the run (its check then
    validates), or nothing is to be validated, or more than SET_GOING_ROWS rows. At 1.2M residents
    a cold run's suites kept the run waiting about 4 s, one core idle, after every source was loaded."""
    if not (_PROCESS and _PROCESS[0].for_one_run):
        return False
    plan = what_to_validate(project_root, contract, con, every_file)
    if plan.stands or con.execute(f"SELECT count(*) FROM ({plan.rows_sql()})").fetchall()[0][0] > SET_GOING_ROWS:
        return False
    key = (str(project_root), contract.source)
    if key in _STARTED:
        _STARTED.pop(key)[1].discard()
    table = table_for_validation(con.sql(plan.rows_sql()))
    try:
        _STARTED[key] = (plan, _PROCESS[0].submit(project_root, contract, table, plan.inputs), table.num_rows)
    except OSError:
        return False  # no shared memory for it: its check validates it
    # the table is in shared memory now: DuckDB's copy of it goes back to the system at once
    del table
    return_freed_memory()
    return True


def validated(project_root: Path, contract: Contract, con, every_file: bool = False) -> tuple[SuiteResult, bool]:
    """The source's suite result for its loaded table now, and whether it was validated in this
    run (else the last result stands): the one `start_validating` started, where the table and
    suite are still as then; otherwise validated now."""
    plan = what_to_validate(project_root, contract, con, every_file)
    started = _STARTED.pop((str(project_root), contract.source), None)
    if started is not None:
        begun, pending, rows = started
        if begun == plan:
            return plan.recorded(pending.result(), rows), True
        pending.discard()
    if plan.stands:
        return plan.last, False
    table = table_for_validation(con.sql(plan.rows_sql()))
    rows = table.num_rows
    result = validate_table(project_root, contract, table, plan.inputs)
    return plan.recorded(result, rows), True
