"""Compare two `earlyhelp run` output folders: is every output the same?

A refactor that says it changes no behaviour shows it here: every warehouse table
(less the columns that stamp a run: when, which run, who), `linked_records.parquet`,
`family_scores.parquet`, and every cell of the packs' CSV and XLSX files. Prints one
line per output, `same` or what differs (row counts, columns, the first differing
key), never a value: outputs hold personal data.

    .venv/bin/python benchmarks/compare_outputs.py BEFORE_OUT AFTER_OUT [--rename OLD=NEW ...]

`--rename` compares a column the change renamed under its new name; a column the
change added is reported beside a verdict on the columns both sides hold. Exits 0
when everything is the same, 1 when something differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import polars as pl

#: Columns that say when, by whom or in which run something happened, where two runs giving the same
#: result may differ (`validated_on`: the day a file was checked, which a month keeps for the files
#: it does not read again, and a run reading every file sets to its own day).
RUN_STAMPS = frozenset({"run_id", "run_by", "recorded_at", "produced_at", "ingested_at", "removed_at", "message", "validated_on"})
#: How far apart two floats may be and still be the same result (relative).
FLOAT_TOLERANCE = 1e-12
#: Tables that are a log of runs rather than a result.
RUN_LOGS = frozenset({"audit_log"})


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
        return {name: con.sql(f'SELECT * FROM "{name}"').pl() for name in names if name not in RUN_LOGS}
    finally:
        con.close()


def _canonical(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in an order fixed by their content, run stamps dropped, so two equal results compare equal."""
    frame = frame.drop([c for c in frame.columns if c in RUN_STAMPS])
    if not frame.columns:
        return frame
    return frame.with_columns(frame.hash_rows(seed=0).alias("__order")).sort("__order").drop("__order")


def compare_frames(before: pl.DataFrame, after: pl.DataFrame, renamed: dict[str, str] | None = None) -> str:
    before = before.rename({k: v for k, v in (renamed or {}).items() if k in before.columns})
    before, after = before.drop([c for c in before.columns if c in RUN_STAMPS]), after.drop([c for c in after.columns if c in RUN_STAMPS])
    gone = [c for c in before.columns if c not in after.columns]
    new = [c for c in after.columns if c not in before.columns]
    if gone:
        return f"columns differ (only before: {gone}; only after: {new or '-'})"
    if before.height != after.height:
        return f"rows differ ({before.height:,} before, {after.height:,} after)"
    a, b = _canonical(before), _canonical(after.select(before.columns))
    if a.equals(b):
        return "same" if not new else f"same in every column before; new columns {new}"
    floats = [c for c in a.columns if a.schema[c] in (pl.Float32, pl.Float64)]
    if floats:
        # a sum taken in another order differs in its last bits: compare the rest exactly, floats closely
        a, b = _canonical(before.drop(floats)), _canonical(after.select(before.columns).drop(floats))
        if a.equals(b) and _floats_close(before, after.select(before.columns), floats):
            return f"same, floats within {FLOAT_TOLERANCE:g} ({', '.join(floats)})"
    differing = [c for c in a.columns if not a[c].equals(b[c])]
    return f"values differ in {len(differing)} column(s): {', '.join(differing[:8])}"


def _floats_close(before: pl.DataFrame, after: pl.DataFrame, floats: list[str]) -> bool:
    keys = [c for c in before.columns if c not in floats]
    order = lambda f: f.with_columns(f.select(keys).hash_rows(seed=0).alias("__order")).sort("__order", *floats)
    x, y = order(before), order(after)
    return all(((x[c] - y[c]).abs() <= FLOAT_TOLERANCE * (1 + x[c].abs())).fill_null(x[c].is_null() & y[c].is_null()).all() for c in floats)


def _xlsx_cells(path: Path, renamed: dict[str, str]) -> dict[str, list[tuple]]:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    try:
        sheets = {sheet.title: [tuple(row) for row in sheet.iter_rows(values_only=True)] for sheet in book.worksheets}
    finally:
        book.close()
    return {title: [tuple(renamed.get(v, v) for v in rows[0]), *rows[1:]] if rows else rows for title, rows in sheets.items()}


def compare_outputs(before: Path, after: Path, renamed: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(output, verdict) for every output both folders should hold."""
    verdicts: list[tuple[str, str]] = []
    old, new = _tables(before / "warehouse.duckdb"), _tables(after / "warehouse.duckdb")
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            verdicts.append((f"table {name}", "only before" if name in old else "only after"))
        else:
            verdicts.append((f"table {name}", compare_frames(old[name], new[name], renamed)))
    for parquet in ("linked_records.parquet", "family_scores.parquet"):
        verdicts.append((parquet, compare_frames(pl.read_parquet(before / parquet), pl.read_parquet(after / parquet), renamed)))
    packs = sorted({p.relative_to(before) for p in before.glob("packs/*/*") if p.suffix in (".csv", ".xlsx")} | {p.relative_to(after) for p in after.glob("packs/*/*") if p.suffix in (".csv", ".xlsx")})
    for rel in packs:
        a, b = before / rel, after / rel
        if not (a.exists() and b.exists()):
            verdicts.append((str(rel), "only before" if a.exists() else "only after"))
        elif rel.suffix == ".csv":
            verdicts.append((str(rel), compare_frames(pl.read_csv(a, infer_schema=False), pl.read_csv(b, infer_schema=False), renamed)))
        else:
            cells_a, cells_b = _xlsx_cells(a, renamed or {}), _xlsx_cells(b, {})
            if cells_a == cells_b:
                verdicts.append((str(rel), "same"))
            else:
                sheets = [s for s in sorted(set(cells_a) | set(cells_b)) if cells_a.get(s) != cells_b.get(s)]
                verdicts.append((str(rel), f"cells differ on sheet(s) {', '.join(sheets)}"))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="an output folder (earlyhelp run --out)")
    parser.add_argument("after", type=Path, help="another output folder, from the same landing folder and month")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="a column the change renamed")
    args = parser.parse_args(argv)
    renamed = dict(pair.split("=", 1) for pair in args.rename)
    verdicts = compare_outputs(args.before, args.after, renamed)
    width = max(len(name) for name, _ in verdicts)
    for name, verdict in verdicts:
        print(f"{name:<{width}}  {verdict}")
    different = [name for name, verdict in verdicts if not verdict.startswith("same") or "new columns" in verdict]
    print(f"\n{len(verdicts) - len(different)} of {len(verdicts)} outputs the same" + (f"; differing: {len(different)}" if different else ""))
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
