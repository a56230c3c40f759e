"""Stable references: a person or family keeps its id from one monthly run to the next.

Each new cluster inherits the previous id most of its members carried; an old
id goes to the one cluster holding most of its members (a split leaves the
rest with new ids), and a cluster holding several old ids keeps the one most
of its members carried (a merge retires the others). Ties break on the id, then
on the cluster's first member.
New ids continue after the highest id ever issued. Every split and merge is
returned for the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from warehouse import register, sql_literal


@dataclass(frozen=True)
class IdFormat:
    """How a run writes the ids it issues: `prefix` and the number, zero-padded to `width` digits
    (P00000042). Ids of one width order as their numbers do, which family formation relies on to
    work on the numbers (`linkage.families.FamilyRecords`)."""

    prefix: str
    width: int

    def number_sql(self, column: str) -> str:
        """DuckDB: the number of the id in `column` where it is written exactly this way (prefix,
        then `width` digits), else null."""
        number = f"TRY_CAST({column}[{len(self.prefix) + 1}:] AS BIGINT)"
        return f"CASE WHEN {sql_literal(self.prefix)} || lpad(CAST({number} AS VARCHAR), {self.width}, '0') = {column} THEN {number} END"

    def text(self, number: pl.Expr) -> pl.Expr:
        """Polars: the id of each number, as `number_sql` reads it."""
        return pl.lit(self.prefix) + number.cast(pl.String).str.zfill(self.width)


#: The ids of persons (person_links) and the references of families (family_members).
PERSON_IDS, FAMILY_REFS = IdFormat("P", 8), IdFormat("F", 7)


@dataclass(frozen=True)
class PreviousIds:
    """The last run's ids where the warehouse holds them (`table`: `member`, `id`), read there:
    the votes of this run's clusters for them are counted by DuckDB, not brought into Polars
    (at 1.2M residents the last person ids are 3.7M mentions' keys and ids: reading them, joining
    them to the clusters' and counting took 1.8 s, DuckDB's join and count 0.7; a month's person
    ids on fixed inputs 2.38-2.90 -> 1.69-1.86 s. Not the family references: 944,000 persons'
    households, whose keys are text, took 0.73-0.82 s in Polars and 0.94-0.97 so)."""

    con: duckdb.DuckDBPyConnection
    table: str
    member: str
    id: str

    def votes(self, frame: pl.DataFrame, member: str, cluster: str) -> pl.DataFrame:
        """(cluster, old_id, len): how many of each cluster's members carried each old id."""
        register(self.con, "_id_voters", frame.select(member, cluster))
        try:
            return self.con.sql(
                f'SELECT v."{cluster}", p."{self.id}" AS old_id, CAST(count(*) AS UINTEGER) AS len '
                f'FROM _id_voters v JOIN "{self.table}" p ON p."{self.member}" = v."{member}" WHERE p."{self.id}" IS NOT NULL GROUP BY ALL'
            ).pl()
        finally:
            self.con.unregister("_id_voters")

    def highest(self, prefix: str) -> int | None:
        """The highest number of an id issued (the ids' text after `prefix`)."""
        return self.con.execute(f'SELECT max(CAST("{self.id}"[{len(prefix) + 1}:] AS BIGINT)) FROM "{self.table}"').fetchall()[0][0]


@dataclass
class Assignment:
    of_cluster: pl.DataFrame  # cluster -> id
    members: pl.DataFrame  # member, cluster
    splits: int
    merges: int
    new: int
    kept: int

    @property
    def ids(self) -> pl.DataFrame:
        """member -> id. Joined when asked: a caller holding its members' clusters joins
        `of_cluster` on the cluster (an integer) instead (3.7M mentions at 1.2M residents)."""
        member, cluster = self.members.columns
        return self.members.join(self.of_cluster, on=cluster).select(member, "id")


def assign_stable_ids(
    members: pl.DataFrame, member: str, cluster: str, previous: pl.DataFrame | pl.LazyFrame | PreviousIds | None, prefix: str, width: int
) -> Assignment:
    """members: (member, cluster); previous: (member, id) from the last run, or None; lazy, it is
    read here and let go after; or where the warehouse holds them (`PreviousIds`), read there.
    Returns member -> id, where id looks like P00000042 (prefix, zero-padded number)."""
    if isinstance(previous, pl.LazyFrame):
        previous = previous.collect()
    frame = members.select(member, cluster)
    # each cluster's first member, clusters in its order (one sort of the members: a minimum per
    # cluster of millions of string keys, sorted after, took three times as long); none where
    # they come sorted, as a run's mentions do (in record_key order)
    in_order = frame if frame[member].is_sorted() else frame.sort(member)
    first_member = in_order.unique(cluster, keep="first", maintain_order=True).select(cluster, pl.col(member).alias("first"))
    if isinstance(previous, PreviousIds):
        votes, issued = previous.votes(frame, member, cluster), previous.highest(prefix)
    elif previous is not None and previous.height:
        old = frame.join(previous.select(member, pl.col("id").alias("old_id")).filter(pl.col("old_id").is_not_null()), on=member, how="inner")
        votes, issued = old.group_by(cluster, "old_id").len(), previous["id"].str.slice(len(prefix)).cast(pl.Int64).max()
    else:
        votes, issued = pl.DataFrame(schema={cluster: frame.schema[cluster], "old_id": pl.String, "len": pl.UInt32}), None
    # A cluster voting for one old id that no other cluster votes for simply keeps it; the
    # greedy rule (strongest vote first) only has work to do where votes conflict, and only those
    # votes are put in its order (all of them: 0.5 s of a month's 2.6 at 1.2M residents). Each
    # cluster's and each old id's votes counted once, for this and for the splits and merges
    # reported (counted apart, 0.37 s of a month's person ids at 1.2M residents; once, 0.12)
    votes = votes.with_columns(pl.len().over(cluster).alias("_of_cluster"), pl.len().over("old_id").alias("_of_id"))
    splits = votes.filter(pl.col("_of_id") > 1)["old_id"].n_unique()
    merges = votes.filter(pl.col("_of_cluster") > 1)[cluster].n_unique()
    votes = votes.with_columns(((pl.col("_of_cluster") == 1) & (pl.col("_of_id") == 1)).alias("_alone")).drop("_of_cluster", "_of_id")
    plain = votes.filter("_alone").sort(cluster)
    contested = (
        votes.filter(~pl.col("_alone")).join(first_member, on=cluster)
        .sort(["len", "old_id", "first"], descending=[True, False, False])
    )
    taken_ids: set[str] = set()
    cluster_id: dict = {}
    for c, old in contested.select(cluster, "old_id").iter_rows():
        if c in cluster_id or old in taken_ids:
            continue
        cluster_id[c] = old
        taken_ids.add(old)
    kept = pl.concat([
        plain.select(cluster, pl.col("old_id").alias("id")),
        pl.DataFrame({cluster: list(cluster_id), "id": list(cluster_id.values())}, schema={cluster: frame.schema[cluster], "id": pl.String}),
    ])
    next_number = (issued or 0) + 1
    fresh = first_member.join(kept, on=cluster, how="anti").sort("first").with_row_index("n", offset=next_number).select(
        cluster, (pl.lit(prefix) + pl.col("n").cast(pl.String).str.zfill(width)).alias("id")
    )
    new = fresh.height
    return Assignment(of_cluster=pl.concat([kept, fresh]), members=members.select(member, cluster), splits=splits, merges=merges, new=new, kept=kept.height)
