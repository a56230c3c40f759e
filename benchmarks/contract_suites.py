"""What the Great Expectations contract suites cost in themselves, by hand (not a test).

    .venv/bin/python benchmarks/contract_suites.py                  # 3,000 rows of each table, 8 rounds
    .venv/bin/python benchmarks/contract_suites.py --rows 0 --rounds 3   # whole tables

Every source's suite is run on the first `--rows` rows of its table (0: all of it), taken from a
finished run's warehouse (benchmarks/cache/out_20000 by default: `benchmarks/pipeline.py --people
20000 --files monthly` makes it), in one Great Expectations project, round after round, each
round with a validator opened afresh as a run's process opens it. Round 1 makes the project (a
run from nothing); the later rounds find it made, as every month's run does, and show whether
the cost grows with the results the project keeps. Importing Great Expectations (3.5-5 s of a
run's process) is not counted. Prints each round's seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=ROOT / "benchmarks" / "cache" / "out_20000" / "warehouse.duckdb")
    parser.add_argument("--rows", type=int, default=3_000, help="rows of each table validated (0: every row)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if not args.warehouse.exists():
        raise SystemExit(f"{args.warehouse} does not exist: run benchmarks/pipeline.py --people 20000 --files monthly first")

    import duckdb
    import great_expectations  # noqa: F401 - imported before the clock starts

    from data_contracts import load_contracts
    from expectations import ContractValidator, frame_for_validation

    contracts = load_contracts()
    con = duckdb.connect(str(args.warehouse), read_only=True)
    limit = f" LIMIT {args.rows}" if args.rows else ""
    frames = {source: frame_for_validation(con.sql(f'SELECT * FROM "{c.raw_table}"{limit}')) for source, c in contracts.items()}
    con.close()
    project = Path(tempfile.mkdtemp(prefix="earlyhelp-suites-"))
    seconds = []
    try:
        for round_ in range(1, args.rounds + 1):
            began = time.perf_counter()
            validator = ContractValidator(project)
            for source, contract in contracts.items():
                validator.validate(contract, frames[source])
            seconds.append(time.perf_counter() - began)
            print(f"round {round_}: {len(contracts)} suites in {seconds[-1]:.2f} s" + (" (the project made)" if round_ == 1 else ""), flush=True)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    if len(seconds) > 1:
        print(f"later rounds: median {statistics.median(seconds[1:]):.2f} s, first {seconds[1]:.2f} s, last {seconds[-1]:.2f} s")


if __name__ == "__main__":
    main()
