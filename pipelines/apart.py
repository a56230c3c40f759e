"""Heavy steps run in a process of their own, so the run's own process stays small.

Neither Polars' allocator nor DuckDB's buffer manager hands back at once what a step freed: at
1.2M residents the run's process held 2.6 GB once ingestion was done, and every heavy step's
peak came on top of what the steps before it had left. A step whose body is marked `@apart`
runs that body in a child process and gets back only its result; when the child ends, all it
held goes back to the machine, and the run needs what its largest step needs, not the sum.

Children are forked from multiprocessing's forkserver, which imports the pipeline once: a child
starts in milliseconds, not the four seconds of importing Dagster, and (unlike a fork of the
run's process) copies no thread of Dagster's, Polars' or DuckDB's mid-lock. A child takes the
run's environment and working folder as they are when the step starts, and its log lines are
written to the step's log when it ends.

It costs time, which is why it is asked for (`EarlyhelpSettings.steps_apart`, set by
`earlyhelp run --steps-apart` or EARLYHELP_STEPS_APART=1) rather than the default: the server
takes a few seconds to import, a child a few tenths to start, and a fresh process faults in every
page it uses where the run's own process reused the pages the step before it had freed. At 1.2M
residents, side by side, the run took 12% longer for 9% less memory; at 200,000, longer and more.
Most of the 2.6 GB was Great Expectations keeping every table it had validated (`expectations`
lets go of them since): in one process the 1.2M cold run now peaks at 3.7 GB, below what it
needs apart (3.9 GB), so this saves memory at no size measured; it remains a switch.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import multiprocessing
import os
import pickle
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from pipelines import RUN_IMPORTS
from pipelines.resources import EarlyhelpSettings

#: What a forked child finds already imported (`RUN_IMPORTS`, and Great Expectations, which a
#: child running a contract check uses in its own process): without it, importing Great
#: Expectations took 2-3 s in every child.
PRELOAD = [*RUN_IMPORTS, "great_expectations"]

_BODIES: dict[str, Callable] = {}


@dataclass
class _Log:
    """context.log in the child: the lines are written to the step's own log when it ends."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def debug(self, message: str) -> None:
        self.lines.append(("debug", message))

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))


@dataclass
class _ChildContext:
    """What a step's body may use of its Dagster context in a child process."""

    run_id: str
    log: _Log = field(default_factory=_Log)


@dataclass
class _Call:
    body: str
    run_id: str
    environment: dict[str, str]
    folder: str
    arguments: dict[str, Any]


@dataclass
class _Outcome:
    log: list[tuple[str, str]]
    value: Any = None
    error: BaseException | None = None
    trace: str = ""


class _Rebuilt:
    """A Dagster object that does not pickle by itself, carried as its class and keyword arguments."""

    def __init__(self, kind: type, arguments: dict[str, Any], private: dict[str, Any] | None = None):
        self.kind, self.arguments, self.private = kind, arguments, private or {}

    def build(self):
        made = self.kind(**self.arguments)
        for name, value in self.private.items():
            setattr(made, name, value)
        return made


def _carried(value: Any) -> Any:
    if isinstance(value, EarlyhelpSettings):
        # the run's lock stays with the run's process, which holds it until the run ends
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        return _Rebuilt(type(value), fields, {"_partition_month": value._partition_month, "_authority": value._authority})
    if isinstance(value, dg.Config):
        return _Rebuilt(type(value), value.model_dump())
    if isinstance(value, dg.AssetCheckResult):
        return _Rebuilt(type(value), value._asdict())
    return value


def _arrived(value: Any) -> Any:
    return value.build() if isinstance(value, _Rebuilt) else value


def _run_in_child(call: _Call) -> _Outcome:
    os.environ.clear()
    os.environ.update(call.environment)
    os.chdir(call.folder)
    context = _ChildContext(call.run_id)
    try:
        if call.body not in _BODIES:  # a body the server did not preload (a test's own, say)
            importlib.import_module(call.body.split(":", 1)[0])
        value = _BODIES[call.body](context, **{name: _arrived(v) for name, v in call.arguments.items()})
        return _Outcome(context.log.lines, value=_carried(value))
    except Exception as exc:  # noqa: BLE001 - raised again in the run's process, with this trace
        trace = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an error that cannot travel is said by its type and message
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return _Outcome(context.log.lines, error=exc, trace=trace)


class ChildTraceback(Exception):
    """The traceback of an error raised in a step's child process."""


class StepProcessLost(RuntimeError):
    """A step's child process ended without handing back a result or an error."""


@functools.cache
def _forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_children() -> None:
    """Start the server children are forked from, so that its imports (a few seconds) overlap the
    run's own start rather than delay its first step apart."""
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()


def apart(body: Callable | None = None, *, key: str = "") -> Callable:
    """Run this asset's or check's body in a child process (see the module's docstring). The body
    takes the context first and its resources and config by name, as Dagster gives them, and may
    use `context.log` and `context.run_id` only. `key`: what tells apart the bodies one factory
    makes (one per source, say), which share a qualified name."""
    if body is None:
        return functools.partial(apart, key=key)
    key = f"{body.__module__}:{body.__qualname__}:{key}"
    _BODIES[key] = body

    @functools.wraps(body)
    def step(context, **arguments):
        settings = next((v for v in arguments.values() if isinstance(v, EarlyhelpSettings)), None)
        if settings is None or not settings.steps_apart:
            return body(context, **arguments)
        call = _Call(key, context.run.run_id, dict(os.environ), os.getcwd(), {n: _carried(v) for n, v in arguments.items()})
        try:
            with ProcessPoolExecutor(1, mp_context=_forkserver(), max_tasks_per_child=1) as pool:
                outcome = pool.submit(_run_in_child, call).result()
        except BrokenProcessPool:
            raise StepProcessLost("the process running this step ended without a result (killed, or out of memory?): the tables it was replacing keep their last whole state") from None
        for level, message in outcome.log:
            getattr(context.log, level)(message)
        if outcome.error is not None:
            raise outcome.error from ChildTraceback(outcome.trace)
        return _arrived(outcome.value)

    # Dagster reads the config's and resources' types from the annotations, which a module with
    # `from __future__ import annotations` leaves as names only the body's module can resolve
    step.__signature__ = inspect.signature(body, eval_str=True)
    return step
