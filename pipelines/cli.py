"""The `earlyhelp` command.

    earlyhelp generate --people 20000 --seed 7 --month 2026-10 --out data/landing
    earlyhelp run --landing data/landing --month 2026-10 --out data/out

`run` materialises the pipeline headless through Dagster (the same assets and
checks `dagster dev` shows), recording the run in the Dagster instance at
$DAGSTER_HOME, or in `<out>/.dagster` when that is unset, and ends with a
summary of rows loaded and quarantined per source.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from data_contracts import CONTRACTS_DIR
from governance.authorities import AUTHORITIES_ENV
from rules import DEFAULT_PROGRAMME, PROGRAMMES
from synthetic.modes import FILE_PERIODS, RECORDING_MODES

PROJECT_DAGSTER_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def _month(value: str) -> str:
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", value):
        raise argparse.ArgumentTypeError(f"month must be YYYY-MM, not {value!r}")
    return value


def _date(value: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("date must be YYYY-MM-DD") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    from synthetic import generate_county

    summary = generate_county(
        args.people, args.seed, args.month, Path(args.out), progress=_say, keying_errors=args.keying_errors,
        nhs_number=args.nhs_number, recording_mode=args.recording, gazetteer=args.gazetteer, files=args.files,
    )
    print(f"Synthetic county: {summary.people:,} residents in {summary.households:,} households, "
          f"{summary.files} files in {args.out} ({summary.seconds:.1f}s)")
    for source, rows in summary.rows.items():
        print(f"  {source:<22} {rows:>10,} rows")
    return 0


def instance_for(out: Path):
    """The Dagster instance a CLI run records into: $DAGSTER_HOME, else <out>/.dagster (kept)."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        return dg.DagsterInstance.get()
    path = prepare_dagster_home(out / ".dagster")
    return dg.DagsterInstance.from_config(str(path))


def prepare_dagster_home(path: Path) -> Path:
    """An instance folder holding the project's dagster.yaml, so history is kept there."""
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(PROJECT_DAGSTER_YAML, config)
    return path


def run_pipeline(
    landing: Path, month: str, out: Path, log_level: str = "INFO", registry: Path | None = None, programme: str = DEFAULT_PROGRAMME,
    progress: TextIO | None = None, verbose: bool = False, retrain_model: bool = False, log_path: Path | None = None,
    authority: str | None = None, read_every_file: bool = False,
):
    """Run the `monthly_run` job (every asset and check) for `month`; returns the Dagster execution
    result. progress: where to show one line per step as the run goes (Dagster's own console log
    is then quiet and its events go to `log_path`, by default `<out>/logs/run_<month>_<time>.log`;
    `verbose` shows them as well). authority: on a deployment serving several councils
    (EARLYHELP_AUTHORITIES), the one this run is for; its folders, contracts and registry are
    the authorities file's, and `landing`, `out`, `registry` and `programme` must be its own."""
    import uuid

    import dagster as dg

    from pipelines.automation import audit_run
    from pipelines.definitions import ALL_ASSETS, ALL_CHECKS, monthly_run
    from pipelines.partitions import MONTHS, partition_key
    from pipelines.progress import WATCH_TAG, RunWatcher, previous_step_seconds
    from pipelines import steps_apart_from_environment
    from pipelines.resources import EarlyhelpSettings, council_switches
    from warehouse import PROBE, RunLock, who_ran

    months = MONTHS.get_partition_keys()
    if month not in months:
        raise ValueError(f"month {month!r} is not a reference month: give YYYY-MM from {months[0]} to {months[-1]} (a month that has ended)")
    out.mkdir(parents=True, exist_ok=True)
    # the run's own resource holds the warehouse; looking first lets a busy warehouse be said plainly
    with RunLock(out, PROBE):
        pass
    settings = EarlyhelpSettings(
        landing_dir=str(landing.resolve()), output_dir=str(out.resolve()), month=month,
        registry_path=str(registry.resolve()) if registry else "", programme=programme,
        today=os.environ.get("EARLYHELP_TODAY", ""), read_every_file=read_every_file, steps_apart=steps_apart_from_environment(),
        **council_switches(),
    )
    # the job the UI and the schedule know, with this run's settings
    job = dg.Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[monthly_run], resources={"settings": settings}).resolve_job_def(monthly_run.name)
    token = uuid.uuid4().hex
    with instance_for(out) as instance:
        watcher = None
        if progress is not None:
            log_path = log_path or out / "logs" / f"run_{month}_{time.strftime('%Y%m%d-%H%M%S')}.log"
            watcher = RunWatcher(instance, token, len(job.graph.nodes), previous_step_seconds(instance, job.name), log_path, progress)
            watcher.start()
        try:
            result = job.execute_in_process(
                instance=instance,
                partition_key=partition_key(month, authority),
                tags={
                    "earlyhelp/month": month, "earlyhelp/run_by": who_ran(), "earlyhelp/trigger": "earlyhelp run (command line)", WATCH_TAG: token,
                    **({"earlyhelp/authority": authority} if authority else {}),
                },
                # with progress lines, Dagster's console log is shown only when asked for (-v); it always goes to the log file
                run_config={
                    "loggers": {"console": {"config": {"log_level": log_level if progress is None or verbose else "CRITICAL"}}},
                    "ops": {"scorecard_model": {"config": {"retrain": retrain_model}}},
                },
                raise_on_error=False,
            )
        finally:
            if watcher is not None:
                watcher.stop()
        # the same entry the run-status sensors write when a daemon watches this instance
        audit_run(instance, result.dagster_run, result.success, settings)
    return result


def ingestion_summary(warehouse: Path) -> list[tuple]:
    from warehouse import open_warehouse

    with open_warehouse(warehouse, read_only=True) as con:
        return con.execute(
            """
            SELECT source, count(*) AS files,
                   sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END) AS refused,
                   sum(CASE WHEN status = 'duplicate' THEN 1 ELSE 0 END) AS duplicates,
                   sum(CASE WHEN status <> 'duplicate' THEN received ELSE 0 END) AS received,
                   sum(loaded) AS loaded, sum(quarantined) AS quarantined, sum(superseded) AS superseded,
                   sum(coalesce(expired, 0)) AS expired, sum(coalesce(set_aside, 0)) AS set_aside
            FROM landed_files GROUP BY source ORDER BY source
            """
        ).fetchall()


def _stopped() -> int:
    _say(
        "\nearlyhelp run: stopped (Ctrl-C). Every file already written is whole (outputs are replaced atomically) and "
        "the warehouse keeps its last finished step; run the same command again to finish the month."
    )
    return 130


def _interrupted(result) -> bool:
    """Whether the run ended because it was interrupted (Ctrl-C) rather than because a step failed."""
    return not result.success and any(
        e.event_type_value == "PIPELINE_FAILURE" and "interrupted" in (e.message or "") for e in result.all_events
    )


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines import RUN_IMPORTS, STEPS_APART_ENV, steps_apart_from_environment
    from warehouse import WarehouseBusy, import_for_the_run

    if args.steps_apart:
        os.environ[STEPS_APART_ENV] = "1"  # read by the run's settings, and by a deployment's runs of each authority
    if not (steps_apart_from_environment() or args.authorities):
        # first, so that Great Expectations is imported there, on the machine's other core, while
        # this process imports the rest (steps run apart validate in processes that preload it)
        from expectations.worker import start_suite_process

        start_suite_process(for_one_run=True)
    # what the run keeps to its end, imported first, so that no collection walks it again
    import_for_the_run(*RUN_IMPORTS)

    if args.authorities:
        return cmd_run_deployment(args) if len(args.authority) != 1 else _run_one_authority(args)
    if args.authority:
        _say("earlyhelp run: --authority needs --authorities, the deployment's authorities file")
        return 2
    if not (args.landing and args.out):
        _say("earlyhelp run: give --landing and --out (or --authorities for a deployment serving several councils)")
        return 2
    landing, out = Path(args.landing), Path(args.out)
    if not landing.is_dir():
        _say(f"earlyhelp run: landing folder {landing} does not exist")
        return 2
    began = time.perf_counter()
    log_path = out / "logs" / f"run_{args.month}_{time.strftime('%Y%m%d-%H%M%S')}.log"
    _say(f"earlyhelp run: {landing} for {args.month} -> {out}")
    try:
        result = run_pipeline(
            landing, args.month, out, log_level=args.log_level,
            registry=Path(args.registry) if args.registry else None, programme=args.programme,
            progress=sys.stderr, verbose=args.verbose, retrain_model=args.retrain_model, log_path=log_path,
            authority=getattr(args, "authority_code", None), read_every_file=args.read_every_file,
        )
    except ValueError as exc:
        _say(f"earlyhelp run: {exc}")
        return 2
    except WarehouseBusy as exc:
        _say(f"earlyhelp run: {exc}")
        return 3
    except KeyboardInterrupt:
        return _stopped()
    if _interrupted(result):
        # Dagster catches Ctrl-C inside a step and ends the run as failed
        return _stopped()
    warehouse = out / "warehouse.duckdb"
    print(f"\nRun {result.run_id} ({result.job_def.name}) {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - began:.1f}s")
    print(f"Dagster's log of the run: {log_path}")
    if warehouse.exists():
        print(f"Warehouse: {warehouse}")
        print(f"  {'source':<22}{'files':>6}{'refused':>8}{'dup':>5}{'received':>11}{'loaded':>11}{'quarantined':>12}{'replaced':>10}{'expired':>9}{'set aside':>11}")
        for source, files, refused, dups, received, loaded, quarantined, superseded, expired, set_aside in ingestion_summary(warehouse):
            print(f"  {source:<22}{files:>6}{refused:>8}{dups:>5}{received:>11,}{loaded:>11,}{quarantined:>12,}{superseded:>10,}{expired:>9,}{set_aside:>11,}")
        print("  (set aside: fields left empty in rows that loaded, because the value broke its rule; see set_aside_fields)")
    for label, path in (
        ("Packs for the meetings", out / "packs" / args.month), ("The chair's summary", out / "packs" / args.month / "summary.html"),
        ("Needs analysis", out / "needs_analysis" / args.month / "needs_analysis.html"), ("IG pack", out / "governance" / "ig_pack.html"),
        ("Model card", out / "model_card.html"),
    ):
        if path.exists():
            print(f"{label + ':':<24}{path}")
    if not (out / "model_card.html").exists():
        # why not, as the step said it: not asked for, or too few outcomes to evaluate on
        said = [
            e.materialization.metadata.get("reason") for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.to_user_string() == "scorecard_model"
        ]
        if said and said[-1] is not None:
            print(f"{'Model card:':<24}none: {said[-1].value}")
    from data_contracts import load_contracts
    from ingestion.load import not_covered

    unread = not_covered(landing, list(load_contracts(getattr(args, "contracts_dir", None) or CONTRACTS_DIR)))
    if unread:
        print(f"Not read (no data contract covers them): {', '.join(unread)}")
    import dagster as dg

    for severity, label in ((dg.AssetCheckSeverity.ERROR, "Checks failed"), (dg.AssetCheckSeverity.WARN, "Warnings")):
        names = [
            f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:{e.asset_check_evaluation_data.check_name}"
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and not e.asset_check_evaluation_data.passed
            and e.asset_check_evaluation_data.severity == severity
        ]
        if names:
            print(f"{label}: " + ", ".join(names))
    return 0 if result.success else 1


def _deployment(args: argparse.Namespace):
    """The authorities file's authorities, checked with the command's options; None (and said
    why) when the command cannot run."""
    from governance.authorities import AuthoritiesError, load_authorities

    path = Path(args.authorities).resolve()
    try:
        authorities = load_authorities(path)
    except AuthoritiesError as exc:
        _say(f"earlyhelp {args.command}: {exc}")
        return None
    unknown = sorted(set(args.authority) - set(authorities))
    if unknown:
        _say(f"earlyhelp {args.command}: no authority {', '.join(unknown)} in {path}")
        return None
    if args.landing or args.out or getattr(args, "registry", None):
        _say(f"earlyhelp {args.command}: with --authorities, each authority's folders and registry come from the file, not --landing, --out or --registry")
        return None
    return authorities


def _run_one_authority(args: argparse.Namespace) -> int:
    """One authority's month on a deployment: its folders, contracts, registry and programme from
    the authorities file; the run is the partition (authority, month)."""
    authorities = _deployment(args)
    if authorities is None:
        return 2
    authority = authorities[args.authority[0]]
    # the deployment's one instance, as when every authority runs together
    os.environ.setdefault("DAGSTER_HOME", str(prepare_dagster_home(Path(args.authorities).resolve().parent / ".dagster")))
    one = argparse.Namespace(**{
        **vars(args), "authorities": None, "authority": [], "landing": str(authority.landing), "out": str(authority.output),
        "registry": str(authority.registry) if authority.registry else None, "programme": authority.programme,
        "authority_code": authority.code, "contracts_dir": authority.contracts,
    })
    return cmd_run(one)


def cmd_run_deployment(args: argparse.Namespace) -> int:
    """Every authority's month (or those named with --authority), each its own run in its own
    process, up to --parallel at once; all recorded in the deployment's Dagster instance."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock

    authorities = _deployment(args)
    if authorities is None:
        return 2
    path = Path(args.authorities).resolve()
    codes = args.authority or sorted(authorities)
    env = dict(os.environ)
    env[AUTHORITIES_ENV] = str(path)
    # one instance for the deployment, so the UI shows every authority's runs
    env.setdefault("DAGSTER_HOME", str(prepare_dagster_home(path.parent / ".dagster")))
    # the instance's tables are made once, here: two runs starting at once on a new SQLite
    # instance would both try to make them
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.get_runs(limit=1)
        instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.RUN_SUCCESS), limit=1)
    parallel = max(1, min(args.parallel or os.cpu_count() or 1, len(codes)))
    _say(f"earlyhelp run: {len(codes)} authorities ({', '.join(codes)}) for {args.month}, {parallel} at a time; Dagster instance {env['DAGSTER_HOME']}")
    echo = Lock()

    def run_one(code: str) -> int:
        command = [sys.executable, "-m", "pipelines.cli", "run", "--authorities", str(path), "--authority", code, "--month", args.month,
                   "--log-level", args.log_level, *(["-v"] if args.verbose else []), *(["--retrain-model"] if args.retrain_model else []),
                   *(["--read-every-file"] if args.read_every_file else [])]
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in child.stdout:
            with echo:
                print(f"[{code}] {line}", end="", file=sys.stderr, flush=True)
        return child.wait()

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        codes_done = dict(zip(codes, pool.map(run_one, codes)))
    print(f"\n{len(codes)} authorities for {args.month} in {time.perf_counter() - began:.1f}s:")
    for code, status in codes_done.items():
        print(f"  {code:<20} {'succeeded' if status == 0 else f'FAILED (exit {status})'}  {authorities[code].output}")
    return max(codes_done.values())


def _output_folder(args: argparse.Namespace) -> Path | None:
    """--out, or on a deployment the output folder of --authority in --authorities (its own
    warehouse: a request about one council's records never reads another's), whose registry
    then stands for --registry."""
    if args.authorities:
        if len(args.authority) != 1:
            _say(f"earlyhelp {args.command}: with --authorities, name one --authority")
            return None
        authorities = _deployment(args)
        if authorities is None:
            return None
        authority = authorities[args.authority[0]]
        args.registry = str(authority.registry) if authority.registry else None
        return authority.output
    if not args.out:
        _say(f"earlyhelp {args.command}: give --out (or --authorities and --authority on a deployment)")
        return None
    return Path(args.out)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a run's linked_records.parquet against a synthetic county's truth.csv."""
    from linkage.evaluate import score_linked_records
    from pipelines.defs.linkage import LINKED_RECORDS_FILE

    linked_path, truth_path = Path(args.out) / LINKED_RECORDS_FILE, Path(args.truth or Path(args.landing) / "truth.csv")
    for path in (linked_path, truth_path):
        if not path.exists():
            _say(f"earlyhelp evaluate: {path} does not exist")
            return 2
    scores = score_linked_records(linked_path, truth_path)
    print(f"{'level':<8}{'records':>10}{'clusters':>10}{'true':>8}{'precision':>11}{'recall':>9}{'F1':>9}")
    for s in scores.values():
        print(f"{s['level']:<8}{s['records']:>10,}{s['predicted_clusters']:>10,}{s['true_clusters']:>8,}{s['precision']:>11.4f}{s['recall']:>9.4f}{s['f1']:>9.4f}")
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """Evaluate the scorecard model by rolling origin against the transparent score; write the model card."""
    from features import load_registry
    from models.scorecard import NotEnoughOutcomes, evaluate, model_card
    from pipelines.resources import EarlyhelpSettings
    from reports import markdown_page
    from warehouse import open_warehouse, write_text_atomically

    out = _output_folder(args)
    if out is None:
        return 2
    warehouse = out / "warehouse.duckdb"
    if not warehouse.exists():
        _say(f"earlyhelp model: {warehouse} does not exist; run the pipeline first")
        return 2
    reference = EarlyhelpSettings(landing_dir=".", output_dir=str(out), month=args.month).reference_date
    try:
        with open_warehouse(warehouse, read_only=True) as con:
            evaluation = evaluate(con, load_registry(args.registry or None), reference)
    except NotEnoughOutcomes as exc:
        _say(f"earlyhelp model: {exc}; no model card written")
        return 3
    card = model_card(evaluation)
    write_text_atomically(card, out / "model_card.md")
    write_text_atomically(markdown_page(card, "earlyhelp model card"), out / "model_card.html")
    for origin in evaluation.origins:
        print(f"Tested on {origin.test_month:%Y-%m}, trained on {', '.join(f'{m:%Y-%m}' for m in origin.train_months)}")
    print(evaluation.per_test_month.select("test_month", "method", "families", "escalations", "list_size", "precision_at_list_size", "recall_at_list_size"))
    print(evaluation.comparison.select("method", "roc_auc", "pr_auc", "recall_at_list_size", "recall_at_list_size_low", "recall_at_list_size_high"))
    for note in evaluation.notes:
        print(note)
    print(f"Model card: {out / 'model_card.md'} and .html")
    return 0


def cmd_subject_access(args: argparse.Namespace) -> int:
    """Export every row held about one person, through linkage, with its provenance."""
    import datetime as dt

    import polars as pl

    from data_contracts import load_contracts
    from governance.subject_access import export_files, find_candidates, find_subject
    from warehouse import (
        open_warehouse,
        record_audit,
        write_atomically,
        write_text_atomically,
    )

    out = _output_folder(args)
    if out is None:
        return 2
    warehouse = out / "warehouse.duckdb"
    if not warehouse.exists():
        _say(f"earlyhelp subject-access: {warehouse} does not exist; run the pipeline first")
        return 2
    now = dt.datetime.now().replace(microsecond=0)
    request = args.reference or f"SAR-{now:%Y%m%d-%H%M%S}"
    if not request.replace("-", "").replace("_", "").isalnum():
        _say("earlyhelp subject-access: --reference may hold letters, digits, - and _ only")
        return 2
    folder = out / "subject_access" / request
    if not args.person:
        # first the candidates, as linkage scores them; the officer confirms who the requester is
        with open_warehouse(warehouse) as con:
            candidates = find_candidates(con, args.forename, args.surname, args.dob, args.postcode)
            record_audit(con, "subject access search", f"{request}: {candidates.height} candidate person(s) listed")
        if candidates.is_empty():
            print(f"Subject access {request}: no person matches the request with probability 0.5 or more")
            return 1
        print(f"Subject access {request}: candidates, most likely first (confirm with --person REF, once per person):")
        for person, probability, mentions, agreement in candidates.iter_rows():
            print(f"  {person}  probability {probability:.4f}  {mentions} mention(s)  best mention: {agreement}")
        return 0
    with open_warehouse(warehouse) as con:
        result = find_subject(con, load_contracts(), args.person, args.surname, args.dob)
        for name, content in export_files(result, now.isoformat(sep=" "), request).items():
            if isinstance(content, pl.DataFrame):
                write_atomically(folder / name, content.write_csv)
            else:
                write_text_atomically(content, folder / name)
        counts = result.counts()
        record_audit(con, "subject access export", f"{request}: {folder}; " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"Subject access {request}: {counts['persons']} person(s) matched; "
          f"{sum(v for k, v in counts.items() if k.startswith('rows_')):,} source rows, "
          f"{counts['quarantined_possibly']} quarantined rows to check; written to {folder}")
    return 0 if counts["persons"] else 1


def cmd_dev(args: argparse.Namespace) -> int:
    """`dagster dev` with an instance folder that keeps history between restarts."""
    env = dict(os.environ)
    if args.authorities:
        # a deployment serving several councils: the instance `earlyhelp run --authorities` records into
        path = Path(args.authorities).resolve()
        env[AUTHORITIES_ENV] = str(path)
        env.setdefault("DAGSTER_HOME", str(prepare_dagster_home(Path(args.home) if args.home else path.parent / ".dagster")))
    # the instance `earlyhelp run` records into, so the UI opens on the runs already made
    env.setdefault("DAGSTER_HOME", str(prepare_dagster_home(Path(args.home) if args.home else Path(args.out) / ".dagster")))
    env.setdefault("EARLYHELP_LANDING", args.landing)
    env.setdefault("EARLYHELP_OUT", args.out)
    _say(f"DAGSTER_HOME={env['DAGSTER_HOME']}")
    child = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "--port", str(args.port)], env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reaches dagster dev too; let it shut its servers down, then say so plainly
        try:
            child.wait(timeout=30)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            child.terminate()
            child.wait()
        _say("earlyhelp dev: the Dagster UI has stopped")
        return 0


def _authority_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--authorities", help="a deployment serving several councils: its authorities file (instead of --out)")
    parser.add_argument("--authority", action="append", default=[], metavar="CODE", help="with --authorities, the council whose warehouse to use")
    parser.set_defaults(landing=None)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("earlyhelp")
    except PackageNotFoundError:
        installed = "not installed"
    parser = argparse.ArgumentParser(prog="earlyhelp", description="Find the families who could use early help.")
    parser.add_argument("--version", action="version", version=f"earlyhelp {installed}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic county as a landing folder, with truth.csv")
    gen.add_argument("--people", type=int, default=20_000, help="residents (default 20,000)")
    gen.add_argument("--seed", type=int, default=7, help="random seed: the same seed gives the same county, byte for byte (default 7)")
    gen.add_argument("--month", type=_month, required=True, help="reference month, YYYY-MM")
    gen.add_argument("--out", required=True, help="landing folder to write")
    gen.add_argument("--no-keying-errors", dest="keying_errors", action="store_false",
                     help="no mistyped postcodes, failing identifiers or impossible dates (by default a realistic few)")
    gen.add_argument("--no-nhs-number", dest="nhs_number", action="store_false",
                     help="NHS numbers in A&E only, as in version 1 of the spec (by default every extract naming people may carry one)")
    gen.add_argument("--no-gazetteer", dest="gazetteer", action="store_false",
                     help="no address gazetteer (by default the council's LLPG, with the gaps real ones have)")
    gen.add_argument("--recording", choices=RECORDING_MODES, default="standard",
                     help="standard: the generator's own habits; diverse: more names partners record inconsistently, with their "
                          "naming conventions; hard: diverse plus households as they are and habits from the field (synthetic/adversary.py)")
    gen.add_argument("--files", choices=FILE_PERIODS, default="yearly",
                     help="how each partner's rows are cut into files: yearly (default; few files) or monthly, as partners send them, "
                          "each re-sending the week before its month (the rows are the same either way)")
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="run the pipeline headless for a month on a landing folder (or for each council of a deployment)")
    run.add_argument("--landing", help="the landing folder: one subfolder per source, laid out as the spec says")
    run.add_argument("--month", type=_month, required=True, help="the reference month, YYYY-MM (a month that has ended)")
    run.add_argument("--out", help="the output folder: warehouse, packs, reports, logs (created if missing)")
    run.add_argument("--authorities", help="a deployment serving several councils: its authorities file (governance/authorities.py "
                                           "says the format); each authority's folders, contracts and registry come from it")
    run.add_argument("--authority", action="append", default=[], metavar="CODE",
                     help="with --authorities, run only this authority (repeat for more; default: every authority)")
    run.add_argument("--parallel", type=int, default=0, metavar="N",
                     help="with --authorities, how many authorities run at once, each in its own process (default: one per core)")
    run.add_argument("--registry", help="a council's own indicator registry (default: the packaged features/indicators.yaml)")
    run.add_argument("--programme", default=DEFAULT_PROGRAMME, choices=sorted(PROGRAMMES),
                     help=f"the programme whose needs and eligibility rule the lists follow (default {DEFAULT_PROGRAMME})")
    run.add_argument("-v", "--verbose", action="store_true", help="show Dagster's own event log live as well as the progress lines")
    run.add_argument("--retrain-model", action="store_true",
                     help="evaluate the scorecard model and write its card (by default a run evaluates it only when its lists are ordered by "
                          "the model, once a quarter), or again though this quarter's evaluation is stored")
    run.add_argument("--read-every-file", action="store_true",
                     help="read and check every landing file again, compare every pair of profiles again and match every address line again "
                          "(by default a file the last run loaded, unchanged, is taken from the warehouse, and so are the pairs of profiles "
                          "it compared and the address lines it matched)")
    run.add_argument("--steps-apart", action="store_true",
                     help="run the heavy steps in child processes of their own, so nothing one step holds reaches the next; it takes "
                          "longer and, at the county sizes measured, no less memory (EARLYHELP_STEPS_APART=1 does the same)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="the level of Dagster's log shown with -v (default INFO)")
    run.set_defaults(func=cmd_run)

    evaluate = sub.add_parser("evaluate", help="score a run's linkage against a synthetic county's truth.csv")
    evaluate.add_argument("--landing", default=".", help="the landing folder holding truth.csv")
    evaluate.add_argument("--truth", help="truth.csv, if not in --landing")
    evaluate.add_argument("--out", required=True, help="the run's output folder")
    evaluate.set_defaults(func=cmd_evaluate)

    model = sub.add_parser("model", help="evaluate the scorecard model out of time and write its model card")
    model.add_argument("--out", help="a run's output folder")
    _authority_arguments(model)
    model.add_argument("--month", type=_month, required=True, help="the run's reference month")
    model.add_argument("--registry", help="the indicator registry the run used")
    model.set_defaults(func=cmd_model)

    sar = sub.add_parser("subject-access", help="export every row held about one person (through linkage), with provenance")
    sar.add_argument("--out", help="a run's output folder (holding warehouse.duckdb)")
    _authority_arguments(sar)
    sar.add_argument("--forename", required=True, help="the requester's forename, as they give it")
    sar.add_argument("--surname", required=True, help="the requester's surname, as they give it")
    sar.add_argument("--dob", type=_date, required=True, help="date of birth, YYYY-MM-DD")
    sar.add_argument("--postcode", help="the requester's postcode, if given (helps tell namesakes apart)")
    sar.add_argument("--person", action="append", default=[], metavar="REF",
                     help="a person reference the officer confirmed from the candidates; without it the candidates are listed and nothing is exported")
    sar.add_argument("--reference", help="the request's reference (letters, digits, - and _); default SAR-<timestamp>")
    sar.set_defaults(func=cmd_subject_access)

    dev = sub.add_parser("dev", help="start the Dagster UI on the runs `earlyhelp run` recorded for --out")
    dev.add_argument("--landing", default="data/landing", help="the landing folder the UI's runs read (default data/landing)")
    dev.add_argument("--out", default="data/out", help="the output folder the UI's runs write (default data/out)")
    dev.add_argument("--port", type=int, default=3000, help="the port the UI listens on (default 3000)")
    dev.add_argument("--authorities", help="a deployment serving several councils: its authorities file (every council's runs, "
                                           "schedule and sensor in one UI; --landing and --out are then not used)")
    dev.add_argument("--home", help="the Dagster instance folder (default: <out>/.dagster, where `earlyhelp run` records its runs; "
                                    "$DAGSTER_HOME when set)")
    dev.set_defaults(func=cmd_dev)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "authorities", None):
        # the Dagster definitions read the deployment's authorities when first imported
        os.environ[AUTHORITIES_ENV] = str(Path(args.authorities).resolve())
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _say(f"\nearlyhelp {args.command}: stopped (Ctrl-C)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
