"""Dagster assets for linkage: persons, the review queue, families, the linked-records export
and (when the landing folder holds a synthetic county's truth) the linkage's quality."""

import dagster as dg
import polars as pl

from linkage import ClusteredGroups, ComparedPairs, LinkageSettings, MentionsTable, PreviousIds, form_families, link_persons
from linkage.evaluate import group_link_rates, score_linked_records
from linkage.gazetteer import GAZETTEER_TABLE, HOUSEHOLD_ADDRESSES, addresses_read, held_household_records, match_person_addresses, store_address_matches
from linkage.model import store_compared_pairs
from data_contracts import load_contracts
from expectations.worker import suites_done
from ingestion.load import not_covered
from linkage.person_records import PERSON_RECORDS, store_links_made, write_linked_records, write_person_records
from reports.linkage_report import linkage_report
from pipelines.apart import apart
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from warehouse import (
    handoff_folder,
    read_table,
    replace_tables,
    sql_literal,
    table_exists,
    write_text_atomically,
)

LINKAGE = "linkage"
#: The last run's candidate pairs and their comparison levels, by profile digest (no names), and
#: the digests of the profiles it held: a month's run compares only pairs touching a new profile.
COMPARED_PAIRS, COMPARED_PROFILES = "compared_pairs", "compared_profiles"
#: What the clusterer made of each group of profiles it took apart, by the digest of all it was
#: given: a group given the same next month is not taken apart again.
CLUSTERED_GROUPS = "clustered_groups"
LINKED_RECORDS_FILE = "linked_records.parquet"
LINKAGE_REPORT_FILE = "linkage_report.html"


class LinkageConfig(dg.Config):
    """Thresholds an analyst may tune (posterior match probabilities)."""

    link_threshold: float = LinkageSettings.link_threshold
    review_lower: float = LinkageSettings.review_lower


@dg.asset(
    partitions_def=PARTITIONS,
    name=PERSON_RECORDS,
    group_name=LINKAGE,
    kinds={"duckdb", "polars"},
    deps=[dg.AssetKey(c.raw_table) for c in load_contracts().values() if c.holds_people],
)
@apart
def person_records(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """One row per person mention across all sources, standardised (names, dates, sex,
    postcode, address) with provenance (source, file, row) and the event attributes
    linkage and families need. The mentions of a file the last run read the same way
    (`person_records_made`) stay as the table holds them rather than being made again."""
    # the contract suites block this step, so they are done: the process `earlyhelp run` started
    # for them ends here, before the run's heaviest steps
    suites_done()
    with settings.warehouse() as con:
        by_source = write_person_records(con, list(settings.contracts().values()), reuse=not settings.read_every_file)
    mentions = sum(by_source.values())
    unread = not_covered(settings.landing, list(settings.contracts()))
    context.log.info(f"person_records: {mentions:,} mentions")
    if unread:
        context.log.warning(f"person_records: not read, no data contract covers them: {', '.join(unread)}")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": mentions, "mentions_by_source": dg.MetadataValue.json(by_source), "landing_not_read": dg.MetadataValue.json(unread)}
    )


@dg.asset(partitions_def=PARTITIONS, group_name=LINKAGE, kinds={"duckdb", "polars"}, deps=[dg.AssetKey(PERSON_RECORDS)])
@apart
def person_links(context: dg.AssetExecutionContext, config: LinkageConfig, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """Every mention linked to a person (Fellegi-Sunter, EM-estimated, constrained clustering).
    Person ids carry over from the previous run; reviewers' decisions in `review_decisions`
    are honoured; uncertain pairs left apart go to `review_queue`. Pairs of profiles the last run
    compared (`compared_pairs`) are not compared again, nor groups it took apart given the same
    (`clustered_groups`): the links are those of a run from nothing."""
    # the compared pairs' levels (4.1M rows at 1.2M residents) go from the warehouse to the linkage
    # and back as Parquet in a private folder: profile digests and level codes, no names
    with settings.warehouse() as con, handoff_folder(settings.warehouse_path) as handoff:
        previous = PreviousIds(con, "person_links", "record_key", "person_id") if table_exists(con, "person_links") else None
        decisions = read_table(con, "review_decisions")
        known = None if settings.read_every_file else read_table(con, COMPARED_PROFILES)
        compared = None
        if known is not None:
            known_levels = handoff / "known_levels.parquet"
            con.execute(f"COPY {COMPARED_PAIRS} TO {sql_literal(str(known_levels))} (FORMAT parquet)")
            compared = ComparedPairs(known, known_levels)
        taken_apart = None if settings.read_every_file else read_table(con, CLUSTERED_GROUPS)
        result = link_persons(
            MentionsTable(con, PERSON_RECORDS), LinkageSettings(link_threshold=config.link_threshold, review_lower=config.review_lower), previous, decisions, compared,
            ClusteredGroups(taken_apart) if taken_apart is not None else None, levels_to=handoff,
        )
        model = pl.DataFrame({"parameters": [str(result.model.summary())]})

        def also(con) -> None:
            store_compared_pairs(con, COMPARED_PAIRS, result.compared)
            store_links_made(con)

        replace_tables(con, {
            "person_links": result.person_links, "review_queue": result.review_queue, "linkage_model": model,
            COMPARED_PROFILES: result.compared.profiles, CLUSTERED_GROUPS: result.groups.groups,
        }, also=also)
    groups = group_link_rates(result.linked.persons, settings.reference_date)
    report = linkage_report(result.linked, result.pairs, result.stats, result.model.summary(), config.link_threshold, groups)
    write_text_atomically(report, settings.output / LINKAGE_REPORT_FILE)
    context.log.info(f"person_links: {result.stats['records']:,} mentions -> {result.stats['persons']:,} persons; {result.stats['review_queue']:,} pairs for review")
    return dg.MaterializeResult(
        metadata={
            **result.stats,
            "model": dg.MetadataValue.json(result.model.summary()),
            "linkage_report": dg.MetadataValue.path(str(settings.output / LINKAGE_REPORT_FILE)),
            "linkage_by_group": dg.MetadataValue.json(groups.with_columns(pl.col("linked_across_sources", "in_review_queue").round(4)).to_dicts()),
        }
    )


@dg.asset(partitions_def=PARTITIONS, group_name=LINKAGE, kinds={"duckdb", "polars"}, deps=["person_links", GAZETTEER_TABLE])
@apart
def family_members(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """Households as of the reference month, from current address, stated relationships and
    recency; a household with a dependent child is a family. Where the council sends its address
    gazetteer, partners' addresses are matched to its properties first (`address_matches`; a line
    the last run matched against the same gazetteer keeps its match) and households form on the
    property. Also writes `families` and the `linked_records.parquet` export (source, file, row,
    person_id, family_id, match_probability)."""
    with settings.warehouse() as con:
        previous = read_table(con, "family_members", "person_id, family_ref AS id", lazy=True)
        matching = match_person_addresses(con, reuse=not settings.read_every_file)
        read = addresses_read(con, matching)
        # the records are held in DuckDB while families form, not in Polars (1.6 GB at 1.2M residents)
        with held_household_records(con, read) as records:
            result = form_families(records, settings.reference_date, previous)
        replace_tables(con, {"family_members": result.members, "families": result.families, HOUSEHOLD_ADDRESSES: read},
                       also=lambda con: store_address_matches(con, matching))
        write_linked_records(con, settings.output / LINKED_RECORDS_FILE)
    context.log.info(f"family_members: {result.stats['households']:,} households, {result.stats['families']:,} families")
    return dg.MaterializeResult(metadata={**result.stats, **matching.stats, "linked_records": dg.MetadataValue.path(str(settings.output / LINKED_RECORDS_FILE))})


@dg.asset(partitions_def=PARTITIONS, group_name="evaluation", kinds={"polars"}, deps=["family_members"])
@apart
def linkage_quality(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """Pairwise precision, recall and F1 of persons and families against `truth.csv`, when the
    landing folder is a synthetic county that has one (figures only, never personal data)."""
    truth_path = settings.landing / "truth.csv"
    if not truth_path.exists():
        return dg.MaterializeResult(metadata={"truth": "absent: nothing to score against"})
    scores = score_linked_records(settings.output / LINKED_RECORDS_FILE, truth_path)
    for s in scores.values():
        context.log.info(f"{s['level']}: precision {s['precision']:.4f}, recall {s['recall']:.4f}, F1 {s['f1']:.4f}")
    return dg.MaterializeResult(metadata={f"{level}_{k}": v for level, s in scores.items() for k, v in s.items() if k != "level"})


LINKAGE_ASSETS = [person_records, person_links, family_members, linkage_quality]
