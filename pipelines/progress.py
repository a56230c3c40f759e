"""A run an analyst can watch: one line per step as it finishes (step n of N, its time, the
run's time so far, and an estimate of what is left from the last run's steps), while every
event of Dagster's own log goes to a file in the output folder (`earlyhelp run -v` also lets
Dagster's console log through, live).

It follows the run through the instance's event log, which Dagster writes as the run goes, so
it needs nothing from the assets and changes nothing in the run.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path
from typing import TextIO

import dagster as dg

#: The tag that finds the run being watched (a fresh token per `earlyhelp run`).
WATCH_TAG = "earlyhelp/invocation"
_DONE = {"STEP_SUCCESS": "done", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}
#: A frame of a Python stack as Dagster stores it, and where the project's own code lies: a failed
#: step is said at the last frame of ours its error passed through, where a fix starts.
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')
_PROJECT = Path(__file__).resolve().parents[1]


def failure_said(error) -> str:
    """A failed step's error (Dagster's SerializableErrorInfo) in a line for the terminal: the
    class of its innermost cause and the last frame of the project's code it passed through, as
    `ColumnNotFoundError at ingestion/load.py:723 (_reconcile)`. Never the message, which a library
    may fill with a value it could not read, but Dagster's own (the blocking checks that failed);
    the run's log file holds the error whole, as the event log does."""
    chain = [error]
    # a worker process's error comes back as itself, caused by a _RemoteTraceback: its stack's text
    while chain[-1].cause is not None and chain[-1].cause.cls_name != "_RemoteTraceback":
        chain.append(chain[-1].cause)
    if chain[-1].cls_name.startswith("Dagster") and len(chain) == 1:
        # Dagster's own words (a blocking check failed: which), never a value of the data
        words = re.sub(rf"^[\w.]*{chain[-1].cls_name}:", "", chain[-1].message.strip())
        return f"{chain[-1].cls_name}: " + " ".join(words.split())
    for link in reversed(chain):
        for line in reversed(link.stack):
            frame = _FRAME.search(line)
            if frame and "site-packages" not in frame[1] and Path(frame[1]).resolve().is_relative_to(_PROJECT):
                where = Path(frame[1]).resolve().relative_to(_PROJECT).as_posix()
                return f"{chain[-1].cls_name} at {where}:{frame[2]} ({frame[3]})"
    return chain[-1].cls_name


def previous_step_seconds(instance: dg.DagsterInstance, job_name: str) -> dict[str, float]:
    """Each step's time in the last successful run of the job on this instance (empty if none)."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    if not runs:
        return {}
    return {
        stats.step_key: stats.end_time - stats.start_time
        for stats in instance.get_run_step_stats(runs[0].run_id)
        if stats.start_time and stats.end_time
    }


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}" if seconds >= 60 else f"{seconds:.0f}s"


class RunWatcher(threading.Thread):
    """Follows the run tagged `token` in `instance` and reports it to `stream` and `log_path`."""

    def __init__(
        self, instance: dg.DagsterInstance, token: str, steps: int, previous: dict[str, float], log_path: Path,
        stream: TextIO, poll_seconds: float = 0.5,
    ):
        super().__init__(name="earlyhelp-run-watcher", daemon=True)
        self.instance, self.token, self.steps, self.previous = instance, token, steps, previous
        self.log_path, self.stream, self.poll_seconds = log_path, stream, poll_seconds
        self._stopping = threading.Event()
        self.finished: list[str] = []
        self.began = time.perf_counter()
        self.run_id: str | None = None

    def stop(self) -> None:
        """Read what is left of the log, then stop."""
        self._stopping.set()
        self.join(timeout=30)

    def run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cursor = None
        with self.log_path.open("a", encoding="utf-8") as log:
            while True:
                stopping = self._stopping.is_set()
                if self.run_id is None:
                    found = self.instance.get_runs(filters=dg.RunsFilter(tags={WATCH_TAG: self.token}), limit=1)
                    self.run_id = found[0].run_id if found else None
                if self.run_id is not None:
                    while True:
                        batch = self.instance.get_records_for_run(self.run_id, cursor=cursor, limit=500)
                        for record in batch.records:
                            self._report(record.event_log_entry, log)
                        cursor = batch.cursor
                        if not batch.has_more:
                            break
                    log.flush()
                if stopping:
                    return
                self._stopping.wait(self.poll_seconds)

    def _report(self, entry, log: TextIO) -> None:
        when = dt.datetime.fromtimestamp(entry.timestamp).strftime("%H:%M:%S")
        event = entry.dagster_event
        kind = event.event_type_value if event else entry.level
        line = f"{when} {entry.step_key or '-':<45} {kind:<28} {entry.user_message or (event.message if event else '')}"
        log.write(line.rstrip() + "\n")
        error = getattr(event.event_specific_data, "error", None) if event is not None else None
        if error is not None:
            # the error with its causes and stacks, as the event log holds it: the line above says only that it failed
            log.write("".join(f"    {text}\n" for text in error.to_string().rstrip().splitlines()))
        if event is None or event.event_type_value not in _DONE or entry.step_key is None:
            return
        self.finished.append(entry.step_key)
        elapsed = time.perf_counter() - self.began
        took = event.event_specific_data.duration_ms / 1000 if getattr(event.event_specific_data, "duration_ms", None) else None
        left = sum(seconds for step, seconds in self.previous.items() if step not in self.finished)
        estimate = f"about {_clock(left)} left" if self.previous else "no earlier run to estimate from"
        print(
            f"[{len(self.finished):>{len(str(self.steps))}}/{self.steps}] {entry.step_key:<45} {_DONE[event.event_type_value]:<7}"
            f"{(f'{took:.1f}s' if took is not None else ''):>8}   {_clock(elapsed):>5} so far, {estimate}",
            file=self.stream, flush=True,
        )
        if error is not None:
            print(f"{'':>{2 * len(str(self.steps)) + 4}}{failure_said(error)}; the error in full: {self.log_path}", file=self.stream, flush=True)
