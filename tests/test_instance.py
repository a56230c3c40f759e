"""The Dagster instance runs record into (pipelines/instance.py): Dagster's, whose SQLite event log
keeps a connection to each database rather than opening one per event, and whose UI still sees a
run's events as they are stored."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid

import sqlalchemy as db
from dagster._core.events.log import EventLogEntry

from pipelines.cli import instance_for
from pipelines.instance import EarlyhelpInstance, SqliteEventLog
from tests.conftest import REPO


def _entry(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(None, logging.INFO, message, run_id, time.time())


def test_an_output_folders_instance_stores_a_runs_events_through_one_connection_a_database(tmp_path):
    opened = []

    def on_connect(*_):
        opened.append(1)

    db.event.listen(db.pool.Pool, "connect", on_connect)
    try:
        with instance_for(tmp_path / "out") as instance:
            assert isinstance(instance, EarlyhelpInstance) and isinstance(instance.event_log_storage, SqliteEventLog)
            run_id = str(uuid.uuid4())
            instance.event_log_storage.store_event(_entry(run_id, "first"))
            before = len(opened)
            for i in range(40):
                instance.event_log_storage.store_event(_entry(run_id, f"event {i}"))
            assert len(opened) == before, "no database opened again for each event"
            assert len(instance.all_logs(run_id)) == 41
    finally:
        db.event.remove(db.pool.Pool, "connect", on_connect)
    # what Dagster's own storage reads back from the same folder
    with instance_for(tmp_path / "out") as again:
        assert [e.user_message for e in again.all_logs(run_id)][:2] == ["first", "event 0"]


WRITER = """
import logging, sys, time
from pathlib import Path
from dagster._core.events.log import EventLogEntry
from pipelines.cli import instance_for

run_id = sys.argv[2]
with instance_for(Path(sys.argv[1])) as instance:
    for line in sys.stdin:
        if line.strip() == "done":
            break
        instance.event_log_storage.store_event(EventLogEntry(None, logging.INFO, line.strip(), run_id, time.time()))
        print("stored", flush=True)
"""


def test_a_watcher_in_another_process_sees_each_event_while_the_writer_keeps_its_connection(tmp_path):
    """The UI shows a run's events as another process stores them, by watching the run's database
    file: events must reach it while the run goes on, not when the run's process lets go."""
    out = tmp_path / "out"
    run_id = str(uuid.uuid4())
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), run_id], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        def store(message: str) -> None:
            writer.stdin.write(message + "\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "stored"

        store("before watching")  # the run's database exists
        seen: list[str] = []
        arrived = threading.Event()

        def on_event(entry, _cursor):
            seen.append(entry.user_message)
            if entry.user_message == "third":
                arrived.set()

        with instance_for(out) as watcher:
            watcher.watch_event_logs(run_id, None, on_event)
            time.sleep(0.5)  # the file watcher is started
            for message in ("first", "second", "third"):
                store(message)
            assert arrived.wait(15), f"the watcher saw {seen} while the writer ran"
            watcher.end_watch_event_logs(run_id, on_event)
        assert writer.poll() is None, "seen while the writer still held its connection"
        assert [m for m in seen if m != "before watching"] == ["first", "second", "third"]
    finally:
        writer.stdin.write("done\n")
        writer.stdin.close()
        writer.wait(30)
    assert writer.returncode == 0


def test_the_projects_dagster_yaml_names_the_instance_and_a_storage_block_still_replaces_it(tmp_path):
    import yaml

    import dagster as dg

    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["instance_class"] == {"module": "pipelines.instance", "class": "EarlyhelpInstance"}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({**config, "storage": {"sqlite": {"base_dir": str(tmp_path / "elsewhere")}}}))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, EarlyhelpInstance)
        assert type(instance.event_log_storage) is not SqliteEventLog, "the council's storage block is used as written"


def test_a_forked_child_opens_its_own_connections_and_leaves_its_parents(tmp_path):
    import os

    with instance_for(tmp_path / "out") as instance:
        storage = instance.event_log_storage
        run_id = str(uuid.uuid4())
        storage.store_event(_entry(run_id, "parent's first"))
        parents = dict(storage._kept)
        child = os.fork()
        if child == 0:  # the child stores through connections of its own, then exits without cleanup
            try:
                storage.store_event(_entry(run_id, "child's"))
                ok = all(storage._kept[k] is not parents.get(k) for k in storage._kept) and storage._inherited == parents
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child used its own connections"
        storage.store_event(_entry(run_id, "parent's second"))
        assert dict(storage._kept) == parents, "the parent's connections are still its own"
        assert [e.user_message for e in instance.all_logs(run_id)] == ["parent's first", "child's", "parent's second"]


def test_a_folder_made_before_keeps_its_dagster_yaml_and_either_storage_reads_the_others_history(tmp_path):
    """The README's word: an instance folder made before keeps the dagster.yaml copied into it then
    (Dagster's own storage), and copying the project's over it changes storage, not history."""
    import shutil

    import dagster as dg
    import yaml

    out = tmp_path / "out"
    home = out / ".dagster"
    home.mkdir(parents=True)
    plain = {k: v for k, v in yaml.safe_load((REPO / "dagster.yaml").read_text()).items() if k != "instance_class"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(plain))
    before = (home / "dagster.yaml").read_text()
    run_id = str(uuid.uuid4())
    with instance_for(out) as old:
        assert type(old) is dg.DagsterInstance and type(old.event_log_storage) is not SqliteEventLog
        old.event_log_storage.store_event(_entry(run_id, "kept by Dagster's own storage"))
    assert (home / "dagster.yaml").read_text() == before, "the folder's own file is left as it was"
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    with instance_for(out) as new:
        assert isinstance(new.event_log_storage, SqliteEventLog)
        assert [e.user_message for e in new.all_logs(run_id)] == ["kept by Dagster's own storage"]
        new.event_log_storage.store_event(_entry(run_id, "kept by earlyhelp's"))
    (home / "dagster.yaml").write_text(before)
    with instance_for(out) as old_again:
        assert [e.user_message for e in old_again.all_logs(run_id)] == ["kept by Dagster's own storage", "kept by earlyhelp's"]
