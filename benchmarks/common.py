"""What the benchmarks share: the cache of generated counties, their command line, and a run measured with its memory."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"


def county_arguments(
    description: str, sizes: list[int], splink_blocking: bool = False, repeat: bool = False, files: bool = False, monthly: bool = False,
    steps_apart: bool = False,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if steps_apart:
        parser.add_argument("--steps-apart", action="store_true", help="runs with their heavy steps in child processes (earlyhelp run --steps-apart)")
    if repeat:
        parser.add_argument("--repeat", type=int, default=1, help="runs of each size, interleaved; medians are reported")
    if splink_blocking:
        parser.add_argument("--splink-blocking", choices=["benchmark", "scalable"], default="benchmark", help="Splink's blocking rules (see above)")
    if files:
        parser.add_argument("--files", choices=("yearly", "monthly"), default="yearly", help="how the county's files are cut (earlyhelp generate --files)")
    if monthly:
        parser.add_argument("--monthly", action="store_true", help="run last month first and measure the month on top of it")
    parser.add_argument("--people", type=int, nargs="+", default=sizes, help="county sizes, in residents")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-10", help="reference month, YYYY-MM")
    args = parser.parse_args()
    warn_if_the_disk_is_nearly_full()
    return args


#: Below this much room on the disks a benchmark writes to, it says so before measuring: on a disk
#: filling up, each 1.2M run took longer than the one before it whichever code ran (89 to 101 s
#: in four cold runs, the forty-first session), until writes failed.
MIN_FREE_GIB = 10


def warn_if_the_disk_is_nearly_full(folders: tuple[Path, ...] = (Path(tempfile.gettempdir()), CACHE.parent)) -> None:
    for folder in folders:
        free = shutil.disk_usage(folder).free / 2**30
        if free < MIN_FREE_GIB:
            print(f"benchmarks: only {free:.1f} GiB free on the disk holding {folder}; runs slow as a disk fills "
                  f"(a 1.2M county's output folder is about 1 GB): free some before trusting these figures", file=sys.stderr)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the parent's pid is the field after the command's closing parenthesis
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def tree_memory_mib(pid: int) -> float:
    """The resident memory (RSS) of a process and all its descendants, summed, in MiB: what the
    machine gives the whole run, its child processes included. Pages a forked child still shares
    with the process it was forked from are counted in both, so this overstates by at most the
    smaller's size; proportional set sizes would not, but reading them (smaps_rollup) holds the
    process's memory map for ~0.1 s a time and slowed the run being measured by a tenth."""
    pages = 0
    for member in _descendants(pid):
        try:
            pages += int((Path("/proc") / str(member) / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Measured:
    seconds: float
    own_peak: int  # MiB: the command's own process (ru_maxrss)
    tree_peak: float  # MiB: the sampled peak of it and all its descendants, summed
    samples: list[tuple[float, float]]  # (seconds since the start, the tree's MiB)
    cpu_seconds: float = 0.0  # user and system time of the command and every process it waited for
    system_seconds: float = 0.0  # of which in the kernel: most of it memory's first touch (page faults)
    page_faults: int = 0  # minor page faults, likewise: pages the allocators handed back and took again


def measured(command: list[str], every: float = 0.2, on_line: Callable[[float, str], None] | None = None, **popen) -> Measured:
    """Run a command, sampling the memory of its whole process tree every `every` seconds (a spike
    shorter than that can be missed). on_line: called with (seconds since the start, line) for
    each line the command writes, stdout and stderr together."""
    began = time.perf_counter()
    if on_line is not None:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    child = subprocess.Popen(command, **popen)
    reader = None
    if on_line is not None:
        def read() -> None:
            for line in child.stdout:
                on_line(time.perf_counter() - began, line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
    ended: dict = {}

    def wait() -> None:
        # wait4 reaps the child with its own resource usage: its peak, not the most of any child's
        _, status, usage = os.wait4(child.pid, 0)
        ended.update(code=os.waitstatus_to_exitcode(status), usage=usage)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    samples: list[tuple[float, float]] = []
    while waiter.is_alive():
        samples.append((time.perf_counter() - began, tree_memory_mib(child.pid)))
        time.sleep(every)
    waiter.join()
    if reader is not None:
        reader.join(timeout=5)
    child.returncode = ended["code"]
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    tree = max((mib for _, mib in samples), default=0.0)
    usage = ended["usage"]
    return Measured(time.perf_counter() - began, usage.ru_maxrss // 1024, tree, samples, usage.ru_utime + usage.ru_stime, usage.ru_stime, usage.ru_minflt)
