"""The Dagster instance earlyhelp's runs record into: Dagster's own, whose SQLite event log
keeps its connections.

Dagster's SQLite event log (the embedded default: a database a run under history/runs, and an
index) makes an SQLAlchemy engine and opens the database for every event it stores and every
read, and closing the last connection to a database in WAL mode checkpoints it to disk: a
month's run of a 2,000-resident county stored its 311 events through 1,562 connections, 5 of
the run's 16 seconds. Here each database the process uses keeps one connection, so storing an
event is a write and a commit.

Dagster's UI shows a run's events as they come by watching the run's database file for
changes; events held in the WAL would not change it. So after each transaction on a run's
database the WAL is checkpointed (PASSIVE: it never waits for a reader), as closing the last
connection did, and the file changes as before.

dagster.yaml names `EarlyhelpInstance` as the instance class: it is Dagster's instance with this
storage as the default. A `storage` block in dagster.yaml (PostgreSQL on a council server)
replaces it, as it replaces Dagster's default. Written against Dagster 1.13 (pinned in
pyproject.toml): it overrides `SqliteEventLogStorage._connect`, which a minor release may change;
tests/test_instance.py says so if one does.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db
import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

#: Databases whose connections are kept at once: the index and the runs last used. A run writes
#: to its own and the index; the UI reads many runs' in turn, and each kept one holds a file open.
KEPT_DATABASES = 8


class SqliteEventLog(SqliteEventLogStorage):
    """Dagster's SQLite event log, keeping a connection to each of the databases it last used."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._kept: OrderedDict[str, Engine] = OrderedDict()
        self._kept_by = os.getpid()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value) -> SqliteEventLog:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._kept_by != os.getpid():
            # a forked child: its parent's connections are the parent's to use and to close, so the
            # child holds on to them unused (dropped, they would be closed here)
            self._inherited, self._kept, self._kept_by = self._kept, OrderedDict(), os.getpid()
        engine = self._kept.pop(shard, None)
        if engine is None:
            # one connection kept: every use is under the storage's lock (Dagster's first look at a
            # database, `_initdb`, opens a second inside the first, closed when it is done)
            engine = db.create_engine(
                self.conn_string_for_shard(shard), poolclass=QueuePool, pool_size=1, max_overflow=2,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
        self._kept[shard] = engine
        while len(self._kept) > KEPT_DATABASES:
            self._kept.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            with self._engine(shard).connect() as conn:
                with conn.begin():
                    yield conn
                if shard != INDEX_SHARD_NAME:
                    # the UI's watcher sees a run's events by its database file changing (module docstring)
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _let_go(self) -> None:
        with self._db_lock:
            while self._kept:
                self._kept.popitem()[1].dispose()

    def wipe(self) -> None:
        self._let_go()  # run databases are deleted
        super().wipe()

    def dispose(self) -> None:
        self._let_go()
        super().dispose()


class SqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, events, schedules under the instance folder) with the event
    log that keeps its connections."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data)
        self._event_log_storage = SqliteEventLog(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value) -> SqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class EarlyhelpInstance(DagsterInstance):
    """Dagster's instance, whose default storage (no `storage` block in dagster.yaml) is `SqliteStorage`."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> dict:
        storage = ConfigurableClassData(__name__, SqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return {**InstanceRef.config_defaults(base_dir), "storage": storage}
