"""Linkage: records to persons, persons to households and families.

`link_persons` and `form_families` are the two steps the pipeline runs; each is
plain Python over Polars frames, with DuckDB doing the pair work.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from linkage.cluster import ClusteredGroups, cluster_persons
from linkage.evaluate import LinkedPersons
from linkage.families import FamilyRecords, form_households
from linkage.person_records import RECORD_POSITION
from linkage.model import COMPARISONS, ComparedPairs, FittedModel, LinkageSettings, MentionsTable, score_profiles
from linkage.stable_ids import FAMILY_REFS, PERSON_IDS, PreviousIds, assign_stable_ids
from warehouse import return_freed_memory

REVIEW_FIELDS = ("forename", "surname", "dob", "postcode")


@dataclass
class PersonLinkage:
    person_links: pl.DataFrame  # record_key, person_id, match_probability, and record_position where the records have it; in record_key order, which family formation reads (`held_household_records`)
    review_queue: pl.DataFrame  # uncertain pairs, with only the fields needed to decide
    model: FittedModel
    pairs: pl.DataFrame  # every candidate pair's match_weight and match_probability
    linked: LinkedPersons  # what can be said of the persons without truth
    stats: dict = field(default_factory=dict)  # counts only
    compared: ComparedPairs | None = None  # the candidate pairs' levels, for the next run to reuse
    groups: ClusteredGroups | None = None  # what the clusterer made of each group it took apart, likewise


def link_persons(
    records: pl.DataFrame | MentionsTable,
    settings: LinkageSettings | None = None,
    previous_ids: pl.DataFrame | pl.LazyFrame | PreviousIds | None = None,
    decisions: pl.DataFrame | None = None,
    compared: ComparedPairs | None = None,
    groups: ClusteredGroups | None = None,
    levels_to: Path | None = None,
) -> PersonLinkage:
    """records: person_records, as a frame or as the warehouse's table (`MentionsTable`: profiles
    are made where it is, never read whole into Python). previous_ids: (record_key, id) of the last
    run (lazy: read only while ids are assigned; or `PreviousIds`: read where the warehouse holds them).
    decisions: clerical review (record_key_l, record_key_r, decision MATCH/NON_MATCH).
    compared: the last run's `PersonLinkage.compared`: only pairs touching a profile new since
    then are compared again. groups: the last run's `PersonLinkage.groups`: a group of profiles
    given the clusterer exactly as then is not taken apart again. Either way the links are the
    same as without them. levels_to: a folder for the compared pairs' levels as Parquet
    (`score_profiles`), so they are never held in Python."""
    settings = settings or LinkageSettings()
    scored = score_profiles(records, settings, compared, levels_to)
    # the pair work is DuckDB's and done; what it freed is not kept through the clustering
    return_freed_memory()
    must, cannot = [], []
    if decisions is not None:
        # only the reviewed mentions' profiles: a dict of every mention took seconds at 1.2M residents
        reviewed = pl.concat([decisions["record_key_l"], decisions["record_key_r"]]).unique().implode()
        pid_of = dict(scored.mapping.filter(pl.col("record_key").is_in(reviewed)).select("record_key", "pid").iter_rows())
        for left, right, decision in decisions.select("record_key_l", "record_key_r", "decision").iter_rows():
            if left in pid_of and right in pid_of and pid_of[left] != pid_of[right]:
                (must if decision == "MATCH" else cannot).append((pid_of[left], pid_of[right]))
    clusters, refused, taken_apart = cluster_persons(
        scored.profiles, scored.pairs, settings.link_threshold, must, cannot,
        birth_dates=settings.refuse_conflicting_birth_dates, twins=settings.refuse_twins,
        identifiers=settings.refuse_conflicting_identifiers, last=groups,
    )
    # Profiles are numbered 0..n-1 and `clusters` is in that order, so a profile's cluster, its
    # strongest link and its mentions are found at its number: joining the 8M scored pairs to the
    # clusters twice and grouping them held about 500 MB more at 1.2M residents.
    if not clusters["pid"].equals(pl.Series("pid", range(scored.profiles.height), pl.Int64), check_names=False):
        raise RuntimeError("clustering did not return every profile once, in profile order")
    cluster_of = clusters["cluster"].to_numpy()
    # in the mapping's order, record_key's, as person_links is written
    records_clusters = scored.mapping.with_columns(cluster=clusters["cluster"].gather(scored.mapping["pid"]))
    assignment = assign_stable_ids(records_clusters, "record_key", "cluster", previous_ids, prefix=PERSON_IDS.prefix, width=PERSON_IDS.width)
    # a record's match probability: the strongest link holding its profile in its person; a profile
    # of several mentions held by no link is as sure as its mentions are alike
    left, right = scored.pairs["l"].to_numpy(), scored.pairs["r"].to_numpy()
    probability = scored.pairs["match_probability"].to_numpy()
    apart = cluster_of[left] != cluster_of[right]
    strongest = np.full(len(cluster_of), -np.inf)
    np.maximum.at(strongest, left[~apart], probability[~apart])
    np.maximum.at(strongest, right[~apart], probability[~apart])
    mentions = scored.profiles["mentions"].to_numpy()
    sure = pl.Series(np.where(np.isneginf(strongest), np.where(mentions > 1, 1.0, np.nan), strongest)).fill_nan(None)
    links = (
        records_clusters.with_columns(match_probability=sure.gather(records_clusters["pid"]))
        .join(assignment.of_cluster.rename({"id": "person_id"}), on="cluster", maintain_order="left")
        .select("record_key", "person_id", "match_probability", *(c for c in (RECORD_POSITION,) if c in records_clusters.columns))
    )
    del left, right, strongest
    # pairs in the uncertain band that clustering left apart go to a reviewer
    band = scored.pairs.filter(
        pl.col("match_probability").is_between(settings.review_lower, settings.link_threshold, closed="left") & pl.Series(apart)
    )
    review = _review_queue(band, scored)
    linked = LinkedPersons.of(
        scored.profiles, clusters["cluster"], assignment.of_cluster.rename({"id": "person_id"}), pl.concat([band["l"], band["r"]]).unique(), scored.sources,
    )
    stats = {
        "records": scored.mapping.height,
        "profiles": scored.profiles.height,
        "candidate_pairs": scored.pairs.height,
        "profiles_compared_afresh": scored.blocking["profiles_compared_afresh"],
        "links_refused_as_contradictory": refused,
        "groups_taken_apart_afresh": taken_apart.afresh if taken_apart is not None else None,
        "persons": clusters["cluster"].n_unique(),
        "review_queue": review.height,
        "ids_kept": assignment.kept,
        "ids_new": assignment.new,
        "ids_split": assignment.splits,
        "ids_merged": assignment.merges,
    }
    return PersonLinkage(
        person_links=links, review_queue=review, model=scored.model, pairs=scored.pairs.select("match_weight", "match_probability"), linked=linked, stats=stats,
        compared=scored.compared, groups=taken_apart,
    )


def _review_queue(band: pl.DataFrame, scored) -> pl.DataFrame:
    """One row per uncertain pair of profiles, shown through one record of each."""
    # only the profiles in the band: every profile's example record, twice, was the step's peak
    shown = pl.concat([band["l"], band["r"]]).unique().implode()
    example = scored.mapping.filter(pl.col("pid").is_in(shown)).group_by("pid").agg(pl.col("record_key").min())
    fields = scored.profiles.filter(pl.col("pid").is_in(shown)).select("pid", *REVIEW_FIELDS)
    left = fields.join(example, on="pid").rename({c: f"{c}_l" for c in (*REVIEW_FIELDS, "record_key")})
    right = fields.join(example, on="pid").rename({c: f"{c}_r" for c in (*REVIEW_FIELDS, "record_key")})
    queue = band.select("l", "r", "match_weight", "match_probability").join(left, left_on="l", right_on="pid").join(right, left_on="r", right_on="pid")
    ordered = ["record_key_l", "record_key_r", "match_probability", "match_weight"]
    ordered += [f"{c}_{side}" for c in REVIEW_FIELDS for side in ("l", "r")]
    return queue.select(ordered).sort(["match_probability", "record_key_l", "record_key_r"], descending=[True, False, False])


@dataclass
class Families:
    members: pl.DataFrame  # person_id, family_ref, placed_by, names, dob, age, dependent_child, ...
    families: pl.DataFrame  # family_ref, household_key, members, dependent_children, is_family
    stats: dict = field(default_factory=dict)


def form_families(linked: pl.DataFrame | FamilyRecords, reference: dt.date, previous_refs: pl.DataFrame | pl.LazyFrame | None = None) -> Families:
    """Households and families as of `reference`, with family references stable across runs.
    linked: person_records with `person_id` (`linked_person_records`), or those held in DuckDB
    (`FamilyRecords`)."""
    members, households = form_households(linked, reference)
    assignment = assign_stable_ids(members, "person_id", "household_key", previous_refs, prefix=FAMILY_REFS.prefix, width=FAMILY_REFS.width)
    members = members.join(assignment.ids.rename({"id": "family_ref"}), on="person_id")
    families = households.join(members.select("household_key", "family_ref").unique(), on="household_key").sort("family_ref")
    stats = {
        "persons": members.height,
        "households": households.height,
        "families": int(households["is_family"].sum()),
        "refs_kept": assignment.kept,
        "refs_new": assignment.new,
        "refs_split": assignment.splits,
        "refs_merged": assignment.merges,
        **{f"placed_by_{k.replace(' ', '_').replace(',', '')}": v for k, v in members.group_by("placed_by").len().iter_rows()},
    }
    return Families(members=members.sort("person_id"), families=families, stats=stats)


__all__ = ["COMPARISONS", "ClusteredGroups", "PreviousIds", "ComparedPairs", "LinkageSettings", "MentionsTable", "PersonLinkage", "link_persons", "Families", "FamilyRecords", "form_families"]
