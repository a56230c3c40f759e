"""What each heavy step needs on its own, by hand (not a test).

    .venv/bin/python benchmarks/step_alone.py --people 1200000 --files monthly
    .venv/bin/python benchmarks/step_alone.py --people 1200000 --files monthly --steps person_links

benchmarks/step_memory.py gives each step the memory the run's one process held while it ran,
which includes what earlier steps left with Polars' and DuckDB's allocators. This runs each
step alone as `earlyhelp run --read-every-file` does it (every mention made again, every pair
compared, every group clustered, the scorecard evaluated; only the last run's person ids and
family references are read, to carry them over), in a fresh process on a copy of a finished
cold run's output folder, and
reports its wall time, its own peak (ru_maxrss) and where the peak was (the innermost
earlyhelp frame when the sampled resident memory was highest). A step that needs more than a
memory target alone cannot be brought under it by running steps in processes of their own.

The cold run it starts from is made once (benchmarks/cache/step_alone_<people>) and kept.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY_STEPS = ("person_records", "person_links", "family_members", "scorecard_model", "locality_lists")


def _rss_mib() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024


def _where(frame) -> str:
    """The innermost frame of earlyhelp's own code (not a library's) in a stack."""
    for found, line in traceback.walk_stack(frame):
        path = Path(found.f_code.co_filename)
        if ROOT in path.parents and ".venv" not in path.parts and "benchmarks" not in path.parts:
            return f"{path.relative_to(ROOT)}:{line} {found.f_code.co_name}"
    return "(outside earlyhelp)"


def child(landing: str, out: str, month: str, step: str) -> None:
    """Materialise one asset in this process, sampling resident memory five times a second."""
    sys.path.insert(0, str(ROOT))
    import resource

    import dagster as dg

    from pipelines.definitions import ALL_ASSETS
    from pipelines.partitions import partition_key
    from pipelines.resources import EarlyhelpSettings

    main = threading.get_ident()
    peak = {"rss": 0, "where": ""}

    def sample() -> None:
        while True:
            rss = _rss_mib()
            if rss > peak["rss"]:
                frame = sys._current_frames().get(main)
                peak.update(rss=rss, where=_where(frame) if frame is not None else "")
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    settings = EarlyhelpSettings(
        landing_dir=landing, output_dir=out, month=month, registry_path="", programme="supporting_families", today="", read_every_file=True,
    )
    run_config = {"ops": {"scorecard_model": {"config": {"retrain": True}}}} if step == "scorecard_model" else None
    began = time.perf_counter()
    result = dg.materialize(ALL_ASSETS, selection=[step], resources={"settings": settings}, partition_key=partition_key(month, None), run_config=run_config)
    seconds = time.perf_counter() - began
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"success": result.success, "seconds": seconds, "peak": own_peak, "sampled": peak["rss"], "where": peak["where"]}))


def _revision() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "(not a git checkout)"


def main() -> None:
    from common import CACHE, county_arguments
    from pipeline import county, machine, publish

    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    steps_parser = argparse.ArgumentParser(add_help=False)
    steps_parser.add_argument("--steps", nargs="+", default=list(HEAVY_STEPS), choices=HEAVY_STEPS)
    chosen, rest = steps_parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    args = county_arguments(__doc__, [1_200_000], files=True)
    for people in args.people:
        landing, _, _ = county(people, args.seed, args.month, args.files)
        base = CACHE / f"step_alone_{people}"
        if not (base / "warehouse.duckdb").exists():
            shutil.rmtree(base, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", args.month, "--out", str(base)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        rows = []
        for step in chosen.steps:
            copy = CACHE / f"step_alone_{people}_{step}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy, ignore=shutil.ignore_patterns(".run.lock"))
            try:
                done = subprocess.run([sys.executable, __file__, "--child", str(landing), str(copy), args.month, step],
                                      cwd=ROOT, capture_output=True, text=True, check=True)
            finally:
                shutil.rmtree(copy, ignore_errors=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            if not figures["success"]:
                raise SystemExit(f"{step} failed on its own")
            rows.append((step, figures))
            print(f"{step}: {figures['seconds']:.1f} s, peak {figures['peak']:,} MiB at {figures['where']}", flush=True)
        lines = [
            f"Machine: {machine()}; {people:,} residents, month {args.month}, seed {args.seed}, {args.files} files; code at {_revision()}.",
            "",
            "Each step alone in a fresh process, on a copy of a finished cold run's output, as `--read-every-file` runs it",
            "(every mention made, every pair compared, every group clustered, the scorecard evaluated; the last run's person",
            "ids and family references are read, to carry over). Peak: the process's own (ru_maxrss); where: the innermost",
            "earlyhelp frame at the highest sampled reading.",
            "",
            "| step | seconds | peak (MiB) | where the peak was |",
            "| --- | ---: | ---: | --- |",
            *[f"| {step} | {f['seconds']:.1f} | {f['peak']:,} | `{f['where']}` |" for step, f in rows],
        ]
        publish("step_alone.md", f"benchmarks/step_alone.py --people {people} --files {args.files}", lines)


if __name__ == "__main__":
    main()
