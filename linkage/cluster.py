"""Cluster linked profiles into persons, resisting over-merging.

Links are taken strongest first (union-find). Two clusters are never joined
when their members contradict each other, however strong the link:

- different NHS numbers, UPNs or National Insurance numbers, where each side's number is
  established (carried by at least ESTABLISHED_BY mentions): one mention keyed with another
  member's number (valid, and wrong) does not keep a person apart from their own records, and
  does not join them to the other member either (the birth-date rule refuses that);
- dates of birth that no recording slip explains (not equal, not day and month
  transposed, not a day or one digit apart, not a default date such as 1 January standing
  for a day of its year, not a year keyed one out), or stated ages more than a year
  from each other's birth year: so a parent and a child of the same name stay
  two people;
- names each side mostly uses that are not alike, unless the two share a date of birth (so a
  record with no birth date cannot bring one person's name into another's on an identifier
  keyed wrongly);
- the same date of birth where the forenames each side mostly uses are neither
  alike nor nicknames of each other (nor an initial of the other): so twins (same surname,
  birth date and address) stay two, while a typo, a nickname or an initial in one record does
  not split, nor does a middle name where both sides carry one established identifier;
- a reviewer's NON_MATCH decision between any two of their mentions.

Because a link is refused when it would join contradictory clusters, one bad
link cannot chain two large clusters together.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import jellyfish
import numpy as np
import polars as pl

from linkage.comparisons import IDENTIFIER_FIELDS
from linkage.names import nickname_pairs
from warehouse import started_process, usable_cores, without_cycle_collection


#: Mentions that must carry an identifier before it can keep two clusters apart: a number keyed
#: once may be another member's (spec v2: NHS_NUMBER is "missing, mistyped or another family
#: member's in a few rows"); one carried twice was copied from a register.
ESTABLISHED_BY = 2


#: The empty set most clusters hold for their birth years, established identifiers and forbidden
#: profiles, shared until one gains a value (the clusterer holds ~180,000 clusters at 1.2M residents).
_NOTHING: frozenset = frozenset()


@dataclass(slots=True)
class _Cluster:
    members: list[int]
    dobs: set[dt.date] = field(default_factory=set)
    # every two of its birth dates a slip apart: true of any cluster the rules made (each link
    # checked every date across it), so a link need only check the dates one side lacks; a
    # reviewer's match, which skips the rules, may join dates that are not
    dobs_agree: bool = True
    # the birth years its dates and its stated ages give, kept as clusters merge rather than
    # worked out from the dates at every link
    years: frozenset[int] | set[int] = _NOTHING
    # identifier -> value -> mentions carrying it (an identifier appears with its first value)
    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    # the identifiers some value of which is established (ESTABLISHED_BY mentions): kept as
    # clusters merge, so a check is a set lookup rather than a walk over every value held
    established: frozenset[str] | set[str] = _NOTHING
    # dob -> (forename, surname) -> mentions: the name a person mostly goes by on a birth date
    names_by_dob: dict[dt.date, dict[tuple[str, str], int]] = field(default_factory=dict)
    # (forename, surname) -> mentions, birth date or not: the name a person mostly goes by
    names: dict[tuple[str, str], int] = field(default_factory=dict)
    forbidden: frozenset[int] | set[int] = _NOTHING
    # `_most_used(names)`, worked out when first asked and forgotten when the cluster grows: a
    # large cluster is asked again at every link that reaches it
    usual_name: tuple[str, str] | None = None


@functools.lru_cache(maxsize=1 << 16)  # a large cluster's dates meet the same dates link after link
def _dob_compatible(a: dt.date, b: dt.date) -> bool:
    if a == b:
        return True
    if a.year == b.year and a.month == b.day and a.day == b.month:
        return True
    if abs((a - b).days) == 1:
        return True
    # a default date keyed where the real one was not known (A&E and police systems require one):
    # 1 January stands for any day of its year, the 1st for any day of its month
    for default, other in ((a, b), (b, a)):
        if default.day == 1 and default.year == other.year and (default.month == 1 or default.month == other.month):
            return True
    # a year keyed one out across a decade (2019 for 2020): a parent and a child are years apart
    if abs(a.year - b.year) == 1 and (a.month, a.day) == (b.month, b.day):
        return True
    sa, sb = a.strftime("%Y%m%d"), b.strftime("%Y%m%d")
    return sum(x != y for x, y in zip(sa, sb)) == 1


def _most_used(names: dict[tuple[str, str], int]) -> tuple[str, str]:
    if len(names) == 1:  # most profiles, at most links: one name on a date
        return next(iter(names))
    # ties go to the longer name: the formal one, not the nickname (Oliver, not Ollie)
    return max(names, key=lambda n: (names[n], len(n[0]), n))


#: The identifiers a profile may carry, each of which keeps clusters apart once established.
IDENTIFIERS = IDENTIFIER_FIELDS
#: What the clusterer reads of each profile (`mentions`, where profiles count them).
CLUSTERER_COLUMNS = ("pid", "dob", "birth_year", "forename", "surname", *IDENTIFIERS, "mentions")


def names_alike(a: str, b: str, nicknames: set[tuple[str, str]]) -> bool:
    """One keying slip, a nickname (`nicknames`: `nickname_pairs` as a set), a shortened form or
    an initial; not merely a similar name (Oliver, Olivia)."""
    if a == b or (a, b) in nicknames:
        return True
    if (len(a) == 1 or len(b) == 1) and a[:1] == b[:1]:
        return True
    if jellyfish.damerau_levenshtein_distance(a, b) <= 1:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 3 and long.startswith(short)


def _nicknames() -> set[tuple[str, str]]:
    pairs = nickname_pairs()
    return set(zip(pairs["name_a"].to_list(), pairs["name_b"].to_list()))


class ConstrainedClusterer:
    """Union-find over profiles with the contradiction rules above."""

    def __init__(
        self,
        profiles: pl.DataFrame,
        cannot_link: list[tuple[int, int]] = (),
        birth_dates: bool = True,
        twins: bool = True,
        identifiers: bool = True,
    ):
        self.check_identifiers = identifiers
        self.check_birth_dates = birth_dates
        self.check_twins = twins
        self._nicknames = _nicknames()
        # Most profiles are never linked: their state is built only when a link first touches
        # them, from plain tuples (a county has millions of profiles; a Python object each is slow).
        columns = [c for c in CLUSTERER_COLUMNS if c not in ("pid", "mentions")]
        frame = profiles.select("pid", *columns, (pl.col("mentions") if "mentions" in profiles.columns else pl.lit(1)).fill_null(1).alias("mentions"))
        self.pids = frame["pid"]
        self._rows = dict(zip(frame["pid"].to_list(), zip(*(frame[c].to_list() for c in (*columns, "mentions")))))
        self.parent: dict[int, int] = {}
        self.clusters: dict[int, _Cluster] = {}
        for a, b in cannot_link:
            if a in self._rows and b in self._rows:
                self._cluster(a).forbidden |= {b}
                self._cluster(b).forbidden |= {a}
        self.refused = 0
        # set when a decision turned on which name a cluster uses most, so on how many mentions
        # carry each (a profile's `mentions`): read and cleared by the caller after each link
        self.weighed = False

    def _cluster(self, root: int) -> _Cluster:
        cluster = self.clusters.get(root)
        if cluster is None:
            dob, birth_year, forename, surname, nhs_number, upn, nino, mentions = self._rows[root]
            cluster = _Cluster(members=[root])
            if dob is not None:
                cluster.dobs.add(dob)
                cluster.years = {dob.year}
                if forename:
                    cluster.names_by_dob[dob] = {(forename, surname or ""): mentions}
            elif birth_year is not None:
                cluster.years = {birth_year}
            if forename:
                cluster.names[(forename, surname or "")] = mentions
            if nhs_number or upn or nino:  # most profiles carry none
                for key, value in (("nhs_number", nhs_number), ("upn", upn), ("nino", nino)):
                    if value:
                        cluster.ids[key] = {value: mentions}
                        if mentions >= ESTABLISHED_BY:
                            cluster.established |= {key}
            self.clusters[root] = cluster
        return cluster

    def find(self, pid: int) -> int:
        parent = self.parent
        root = pid
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(pid, pid) != root:
            parent[pid], pid = root, parent[pid]
        return root

    def _names_alike(self, a: str, b: str) -> bool:
        return names_alike(a, b, self._nicknames)

    @staticmethod
    def _usual_name(cluster: _Cluster) -> tuple[str, str]:
        if cluster.usual_name is None:
            cluster.usual_name = _most_used(cluster.names)
        return cluster.usual_name

    def _alike(self, x: tuple[str, str], y: tuple[str, str]) -> bool:
        (forename_x, surname_x), (forename_y, surname_y) = x, y
        if self._names_alike(forename_x, forename_y):
            return True
        return bool(surname_x and surname_y) and self._names_alike(forename_x, surname_y) and self._names_alike(surname_x, forename_y)

    def contradicts(self, a: _Cluster, b: _Cluster) -> bool:
        both = a.established & b.established
        for key in both if self.check_identifiers else ():
            if a.ids[key].keys().isdisjoint(b.ids[key]):
                return True
        if self.check_birth_dates:
            if a.dobs and b.dobs and not self._dobs_compatible(a, b):
                return True
            # every year on one side within a year of every year on the other
            if a.years and b.years and (max(a.years) - min(b.years) > 1 or max(b.years) - min(a.years) > 1):
                return True
        # twins have numbers of their own: one established number on both sides is one person
        # known by two names (a middle name used as a forename), not twins
        one_person = bool(both) and any(not a.ids[key].keys().isdisjoint(b.ids[key]) for key in both)
        twin_dates = a.names_by_dob.keys() & b.names_by_dob.keys() if self.check_twins and not one_person else ()
        # whether the names most used decided (`weighed`): asked only where a side has a choice
        chosen = False
        # names that are not alike join only on a shared birth date (a middle name used as a
        # forename): a record with no birth date, keyed with another member's NHS number, does
        # not carry one person's name into another's
        if self.check_twins and not one_person and a.names and b.names and a.dobs.isdisjoint(b.dobs):
            alike = self._alike(self._usual_name(a), self._usual_name(b))
            chosen = (len(a.names) > 1 or len(b.names) > 1) and not self._whichever(a.names, b.names, alike)
            if not alike:
                return self._refused_on_names(a, b, chosen)
        for dob in twin_dates:
            # the name each side mostly uses on that date must be alike (a typo, a nickname,
            # forename and surname swapped); twins go by different names
            on_a, on_b = a.names_by_dob[dob], b.names_by_dob[dob]
            alike = self._alike(_most_used(on_a), _most_used(on_b))
            chose = (len(on_a) > 1 or len(on_b) > 1) and not self._whichever(on_a, on_b, alike)
            if not alike:
                return self._refused_on_names(a, b, chose)
            chosen = chosen or chose
        if self._forbidden(a, b):
            return True
        self.weighed = self.weighed or chosen
        return False

    @staticmethod
    def _forbidden(a: _Cluster, b: _Cluster) -> bool:
        return bool((a.forbidden and not a.forbidden.isdisjoint(b.members)) or (b.forbidden and not b.forbidden.isdisjoint(a.members)))

    def _whichever(self, names_a: dict[tuple[str, str], int], names_b: dict[tuple[str, str], int], alike: bool) -> bool:
        """Whether every name of one side is as alike to every name of the other as the two most
        used are: then how often each is used (any of them may be the most used) changes nothing."""
        return all(self._alike(x, y) == alike for x in names_a for y in names_b)

    def _refused_on_names(self, a: _Cluster, b: _Cluster, chosen: bool) -> bool:
        """A link refused because the names most used are not alike: `weighed` where other names
        would have been alike (`chosen`), unless a reviewer's decision refuses it anyway."""
        if chosen and not self._forbidden(a, b):
            self.weighed = True
        return True

    @staticmethod
    def _dobs_compatible(a: _Cluster, b: _Cluster) -> bool:
        """Every birth date of one cluster a slip from every date of the other. Where both sides'
        own dates agree, a date both hold meets the other side's as one of its own: only the
        dates each side lacks are compared (usually none: a person's links carry their date)."""
        if a.dobs_agree and b.dobs_agree:
            if a.dobs <= b.dobs or b.dobs <= a.dobs:
                return True
            return all(_dob_compatible(x, y) for x in a.dobs - b.dobs for y in b.dobs - a.dobs)
        return all(_dob_compatible(x, y) for x in a.dobs for y in b.dobs)

    def link(self, l: int, r: int, force: bool = False) -> bool:
        ra, rb = self.find(l), self.find(r)
        if ra == rb:
            return True
        a, b = self._cluster(ra), self._cluster(rb)
        if not force and self.contradicts(a, b):
            self.refused += 1
            return False
        agree = a.dobs_agree and b.dobs_agree
        if force and self.check_birth_dates and agree and a.dobs and b.dobs:
            # joined past the birth-date rule: dates that do not agree are compared whole from now on
            # (with the rule off, the dates are never compared)
            agree = self._dobs_compatible(a, b)
        if len(a.members) < len(b.members):
            ra, rb, a, b = rb, ra, b, a
        a.dobs_agree = agree
        self.parent[rb] = ra
        a.members += b.members
        a.dobs |= b.dobs
        a.years |= b.years
        for dob, names in b.names_by_dob.items():
            held = a.names_by_dob.get(dob)
            if held is None:
                a.names_by_dob[dob] = names  # b is let go below: its counts are a's now
                continue
            for key, count in names.items():
                held[key] = held.get(key, 0) + count
        for key, count in b.names.items():
            a.names[key] = a.names.get(key, 0) + count
        a.usual_name = None
        a.forbidden |= b.forbidden
        for key, values in b.ids.items():
            held = a.ids.setdefault(key, {})
            for value, count in values.items():
                held[value] = total = held.get(value, 0) + count
                if total >= ESTABLISHED_BY and key not in a.established:
                    a.established |= {key}
        a.established |= b.established
        del self.clusters[rb]
        return True

    def assignments(self) -> pl.DataFrame:
        """pid -> cluster, numbered by each cluster's smallest pid (deterministic)."""
        rows = [(pid, min(c.members)) for c in self.clusters.values() for pid in c.members]
        linked = pl.DataFrame(rows, schema={"pid": pl.Int64, "cluster": pl.Int64}, orient="row")
        alone = pl.DataFrame({"pid": self.pids.cast(pl.Int64)}).join(linked, on="pid", how="anti").with_columns(pl.col("pid").alias("cluster"))
        return pl.concat([linked, alone]).sort("pid")


@dataclass
class ClusteredGroups:
    """What the constrained clusterer made of each group it took apart, for the next run: per
    group, the digest of all it was given (`_group_digests`) and, for each of its profiles (by
    profile digest), the person it joined (labelled by one member's digest) and the links it
    refused. A group given the same again is the same again: the clusterer is not run on it; so is
    one given the same but for its profiles' counts of mentions, where no link in it turned on
    the name a cluster went by most and no identifier's count crossed ESTABLISHED_BY (`plain`)."""

    # group (String), profile (UInt64), person (UInt64), refused (Int64), plain (String), weighed
    # (Boolean): the group's digest with mentions read only for identifiers, and whether the names
    # most used decided a link in it (`_group_digests`)
    groups: pl.DataFrame
    afresh: int = 0  # of these, the groups this run took apart (the rest were as the last run gave them)

    def __post_init__(self) -> None:
        # a table written before `plain` and `weighed` were kept: its groups are reused only given the same
        missing = [pl.lit(None, pl.String).alias("plain")] * ("plain" not in self.groups.columns) + [pl.lit(True).alias("weighed")] * ("weighed" not in self.groups.columns)
        self.groups = self.groups.with_columns(missing).select(
            pl.col("group").cast(pl.String), pl.col("profile", "person").cast(pl.UInt64), pl.col("refused").cast(pl.Int64),
            pl.col("plain").cast(pl.String), pl.col("weighed").cast(pl.Boolean),
        )


def _clusterer_version() -> str:
    """The clusterer's rules as this code states them: its source, the nicknames and the string
    distance it reads. Part of every group's digest, so a change reuses nothing."""
    text = Path(__file__).read_bytes() + nickname_pairs().write_csv().encode() + version("jellyfish").encode()
    return hashlib.sha256(text).hexdigest()


def _group_digests(careful: pl.DataFrame, profiles: pl.DataFrame, ordered_links: pl.DataFrame, decisions: list[tuple[int, int, str]], rules: str) -> pl.DataFrame:
    """component -> group and plain: the digest of what the clusterer is given for it (each
    profile's digest and mentions, its links in the order they are taken, reviewers' decisions
    inside it, the rules); and the same with each profile's mentions read only as far as they
    count for its identifiers (`plain`: at least ESTABLISHED_BY or not, and only where it carries
    one). A group whose clustering the names most used never decided (`weighed` false) is the same
    again given the same `plain`: its mentions are read for nothing else. A child's attendance
    adds a mention to its profile every month.

    The profiles and links go into the digest as 64-bit numbers, every group's a slice of one
    array sorted by group (its profiles by digest, its links in order), each part preceded by its
    length: at 1.2M residents the 62,000 groups' digests 0.86 -> 0.55 s (medians of five,
    alternating), where each group's text was built, sorted and joined in Polars."""
    mentions = (pl.col("mentions") if "mentions" in profiles.columns else pl.lit(1)).fill_null(1)
    identified = pl.any_horizontal(pl.col(c).cast(pl.String).fill_null("") != "" for c in IDENTIFIERS)
    digest = profiles.select(
        "pid", "digest", mentions.alias("mentions"), pl.when(identified).then(mentions.clip(upper_bound=ESTABLISHED_BY)).otherwise(1).alias("counted"),
    )
    members = careful.join(digest, on="pid").sort("component", "digest", "mentions")
    of = {"l": digest.select(pl.col("pid").alias("l"), pl.col("digest").alias("dl")), "r": digest.select(pl.col("pid").alias("r"), pl.col("digest").alias("dr"))}
    links = ordered_links.with_row_index("order").join(careful.rename({"pid": "l"}), on="l").join(of["l"], on="l").join(of["r"], on="r").sort("component", "order")
    decided = pl.DataFrame(decisions, schema={"l": pl.Int64, "r": pl.Int64, "decision": pl.String}, orient="row")
    decided = (
        decided.join(careful.rename({"pid": "l"}), on="l").join(careful.rename({"pid": "r", "component": "component_r"}), on="r")
        .filter(pl.col("component") == pl.col("component_r")).join(of["l"], on="l").join(of["r"], on="r")
        .group_by("component").agg(pl.concat_str("decision", pl.col("dl").cast(pl.String), pl.col("dr").cast(pl.String), separator="-").sort().str.join(",").alias("decisions"))
    )
    decisions_of = dict(decided.iter_rows())

    def numbers(frame: pl.DataFrame, *columns: str) -> bytes:
        return np.column_stack([frame[c].cast(pl.UInt64).to_numpy() for c in columns]).tobytes()

    def slices(of_group: pl.Series, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = of_group.to_numpy()
        return np.searchsorted(at, groups, side="left") * 16, np.searchsorted(at, groups, side="right") * 16

    groups = members["component"].unique(maintain_order=True).to_numpy()
    held = {"group": numbers(members, "digest", "mentions"), "plain": numbers(members.sort("component", "digest", "counted"), "digest", "counted")}
    taken = numbers(links, "dl", "dr")
    (m_start, m_end), (l_start, l_end) = slices(members["component"], groups), slices(links["component"], groups)
    given = rules.encode()
    digests: dict[str, list[str]] = {"group": [], "plain": []}
    for i, component in enumerate(groups.tolist()):
        in_order = taken[l_start[i]:l_end[i]]
        rest = len(in_order).to_bytes(8, "little") + in_order + decisions_of.get(component, "").encode()
        for name, numbered in held.items():
            own = numbered[m_start[i]:m_end[i]]
            digests[name].append(hashlib.sha256(given + len(own).to_bytes(8, "little") + own + rest).hexdigest())
    return pl.DataFrame({"component": pl.Series(groups).cast(careful["component"].dtype), **{k: pl.Series(v, dtype=pl.String) for k, v in digests.items()}})


def cluster_persons(
    profiles: pl.DataFrame,
    pairs: pl.DataFrame,
    threshold: float,
    must_link: list[tuple[int, int]] = (),
    cannot_link: list[tuple[int, int]] = (),
    birth_dates: bool = True,
    twins: bool = True,
    identifiers: bool = True,
    last: ClusteredGroups | None = None,
) -> tuple[pl.DataFrame, int, ClusteredGroups | None]:
    """Cluster profiles: reviewers' matches first, then links at or above `threshold`, strongest first.
    Returns (pid -> cluster, number of links refused as contradictory, the groups taken apart).
    With a `digest` column in `profiles`, the groups are remembered, and with `last` (the last
    run's) a group given exactly what it was given then is not taken apart again. From
    SHARED_FROM_LINKS links a worker process is spawned (`_take_apart`), so a script calling this
    on a large county must guard its main (`if __name__ == "__main__":`), as with any
    multiprocessing: Dagster's and earlyhelp's own entry points do."""
    links = pairs.filter(pl.col("match_probability") >= threshold).select("l", "r", "match_weight")
    # Most linked groups cannot contradict themselves (one birth date, forenames all alike, one of
    # each identifier): every link in them would be taken, so each is a person as it stands, found
    # without a Python step per link. Only the others go through the constrained clusterer.
    component = _components(profiles["pid"], links, must_link)
    in_care = pl.col("component").is_in(_groups_that_may_contradict(profiles, component, must_link, cannot_link).implode())
    careful, whole = component.filter(in_care), component.filter(~in_care)
    careful_links = links.join(careful.select(pl.col("pid").alias("l")), on="l", how="semi")
    # where there may be enough links to share (`_take_apart`), the second process is started
    # now, and imports while the groups are weighed, rather than when its share is ready
    second = _second_process() if _may_share(careful_links.height) else None
    try:
        refused_at_once = 0
        if birth_dates:
            # a link between two profiles whose own birth dates no slip explains is refused whatever
            # their clusters hold by then (the rule only gains dates as clusters grow): those are
            # counted here, in one pass, instead of link by link (most of the refusals at 1.2M)
            forced = component.filter(pl.col("pid").is_in([p for pair in must_link for p in pair]))["component"].implode()
            reviewed = careful.filter(pl.col("component").is_in(forced))["pid"].implode()
            judged = _with_birth_dates_conflict(careful_links, profiles).with_columns(pl.col("birth_dates_conflict") & ~pl.col("l").is_in(reviewed))
            refused_at_once = int(judged["birth_dates_conflict"].sum())
            careful_links = judged.filter(~pl.col("birth_dates_conflict")).drop("birth_dates_conflict")
        ordered = careful_links.sort(["match_weight", "l", "r"], descending=[True, False, False]).select("l", "r")
        groups = None
        if "digest" in profiles.columns:
            rules = f"{_clusterer_version()}|{birth_dates}|{twins}|{identifiers}"
            decisions = [(a, b, "MATCH") for a, b in must_link] + [(a, b, "NON_MATCH") for a, b in cannot_link]
            groups = careful.join(_group_digests(careful, profiles, ordered, decisions, rules), on="component")
        known = last.groups if last is not None and groups is not None else ClusteredGroups(pl.DataFrame(schema={"group": pl.String, "profile": pl.UInt64, "person": pl.UInt64, "refused": pl.Int64})).groups
        if groups is not None:
            # each group given as the last run's was: the same digest, or the same plain one where the
            # names most used decided nothing (`source`: the last run's group it is taken from)
            same = groups.join(known.select("group").unique(), on="group", how="semi").with_columns(pl.col("group").alias("source"))
            plain = known.filter(pl.col("weighed").not_()).group_by("plain").agg(pl.col("group").first().alias("source"))
            again = pl.concat([same, groups.join(same, on="pid", how="anti").join(plain, on="plain")])
        else:
            again = careful.head(0)
        fresh = careful.join(again, on="pid", how="anti")
        given = profiles.select(c for c in CLUSTERER_COLUMNS if c in profiles.columns).join(fresh, on="pid", how="semi")
        fresh_links = ordered.join(fresh.select(pl.col("pid").alias("l"), "component"), on="l")
        taken_apart, refused, weighed, refused_by_clusterer = _take_apart(given, fresh, fresh_links, list(must_link), list(cannot_link), (birth_dates, twins, identifiers), second)
    finally:
        if second is not None:
            second.shutdown(cancel_futures=True)
    del given
    if groups is not None:
        digest = profiles.select("pid", "digest")
        made = (
            taken_apart.join(fresh, on="pid").join(digest, on="pid")
            .with_columns(pl.col("digest").min().over("cluster").alias("person"))
            .join(groups.select("pid", "group", "plain"), on="pid")
            .with_columns(
                pl.col("component").replace_strict(refused, default=0, return_dtype=pl.Int64).alias("refused"),
                pl.col("component").is_in(pl.Series(list(weighed), dtype=fresh["component"].dtype).implode()).alias("weighed"),
            )
        )
        kept = again.join(digest, on="pid").join(known.drop("plain"), left_on=["source", "digest"], right_on=["group", "profile"])
        reused = kept.select("pid", pl.col("pid").min().over("group", "person").alias("cluster"))
        stored = ["group", pl.col("digest").alias("profile"), "person", "refused", "plain", "weighed"]
        groups = ClusteredGroups(pl.concat([made.select(stored), kept.select(stored)]), afresh=made["group"].n_unique())
        taken_apart = pl.concat([taken_apart, reused])
        refused_again = int(kept.group_by("group").agg(pl.col("refused").first())["refused"].sum())
    else:
        refused_again = 0
    whole = whole.select("pid", pl.col("pid").min().over("component").alias("cluster"))
    return pl.concat([taken_apart, whole]).sort("pid"), refused_by_clusterer + refused_again + refused_at_once, groups


#: Links to take before the groups are shared between this process and a second one: the
#: clusterer is plain Python, on one core, while a council's machine has two or more. Groups are
#: apart (no link joins two), so each share is clustered as it would be with the others.
SHARED_FROM_LINKS = 200_000


def _may_share(links: int) -> bool:
    """Whether `links` links are enough to share between two processes, and a second may be started."""
    return links >= SHARED_FROM_LINKS and usable_cores() >= 2 and not multiprocessing.current_process().daemon


def _second_process() -> ProcessPoolExecutor:
    """The process a share of the groups goes to, started now (`warehouse.started_process`): its
    half second of imports was waited for when it was started with its share in hand."""
    return started_process(__name__)


def _take_apart(
    given: pl.DataFrame, fresh: pl.DataFrame, links: pl.DataFrame, must_link: list[tuple[int, int]], cannot_link: list[tuple[int, int]], rules: tuple[bool, bool, bool],
    second: ProcessPoolExecutor | None = None,
) -> tuple[pl.DataFrame, dict[int, int], set[int], int]:
    """The constrained clusterer over the groups in `fresh` (pid, component), given their
    profiles and their links (l, r, component) in the order they are taken. Returns (pid ->
    cluster, links refused by component, the components where the names most used decided a
    link (`ConstrainedClusterer.weighed`), links refused). From SHARED_FROM_LINKS links, half the
    work (by links) goes to a second process (`second`, or one started now) while this one does
    the rest: the same clusters."""
    if not _may_share(links.height):
        return _cluster_share(given, links.select("l", "r", "component"), must_link, cannot_link, rules)
    # the largest groups first, each to the share with fewer links so far
    sizes = links.group_by("component").len().sort(["len", "component"], descending=[True, False])
    loads, share_of = [0, 0], {}
    for component, n in sizes.iter_rows():
        share = 0 if loads[0] <= loads[1] else 1
        share_of[component] = share
        loads[share] += n
    share = pl.col("component").replace_strict(share_of, default=0, return_dtype=pl.Int8)
    fresh = fresh.with_columns(share.alias("share"))
    links = links.with_columns(share.alias("share"))
    shares = []
    for k in (0, 1):
        pids = fresh.filter(pl.col("share") == k)["pid"]
        inside = set(pids.to_list())
        shares.append((
            given.join(pids.to_frame(), on="pid", how="semi"),
            links.filter(pl.col("share") == k).select("l", "r", "component"),
            [pair for pair in must_link if pair[0] in inside],
            [pair for pair in cannot_link if pair[0] in inside or pair[1] in inside],
        ))
    pool = second if second is not None else _second_process()
    try:
        other = pool.submit(_cluster_share_ipc, *(_to_ipc(f) for f in shares[1][:2]), *shares[1][2:], rules)
        taken, refused, weighed, total = _cluster_share(*shares[0], rules)
        taken_other, refused_other, weighed_other, total_other = other.result()
    finally:
        if second is None:
            pool.shutdown()
    return pl.concat([taken, pl.read_ipc(taken_other)]).sort("pid"), {**refused, **refused_other}, weighed | weighed_other, total + total_other


def _cluster_share(
    given: pl.DataFrame, links: pl.DataFrame, must_link: list[tuple[int, int]], cannot_link: list[tuple[int, int]], rules: tuple[bool, bool, bool],
) -> tuple[pl.DataFrame, dict[int, int], set[int], int]:
    """One share of the groups through the constrained clusterer: reviewers' matches, then the
    links in order (see `_take_apart`)."""
    # the clusters' millions of sets and dicts hold no cycles: at 1.2M residents the collector
    # walking them took 3.5 s of each share's clustering. They go before it runs again, or its
    # first collection walks them all once more.
    with without_cycle_collection():
        clusterer = ConstrainedClusterer(given, cannot_link, *rules)
        inside = set(given["pid"].to_list())
        for l, r in must_link:
            if l in inside:
                clusterer.link(l, r, force=True)
        refused: dict[int, int] = {}
        weighed: set[int] = set()
        for l, r, part in links.iter_rows():
            if not clusterer.link(l, r):
                refused[part] = refused.get(part, 0) + 1
            if clusterer.weighed:
                weighed.add(part)
                clusterer.weighed = False
        share = clusterer.assignments(), refused, weighed, clusterer.refused
        del clusterer
    return share


def _to_ipc(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer)
    return buffer.getvalue()


def _cluster_share_ipc(given: bytes, links: bytes, must_link, cannot_link, rules) -> tuple[bytes, dict[int, int], set[int], int]:
    """`_cluster_share` in the worker process: frames travel as Arrow IPC, not pickled rows."""
    taken, refused, weighed, total = _cluster_share(pl.read_ipc(given), pl.read_ipc(links), must_link, cannot_link, rules)
    return _to_ipc(taken), refused, weighed, total


def _with_birth_dates_conflict(links: pl.DataFrame, profiles: pl.DataFrame) -> pl.DataFrame:
    """links with `birth_dates_conflict`: True where the two profiles' birth dates `_dob_compatible`
    refuses, or their birth years lie more than one apart (the birth-date rule of
    `ConstrainedClusterer.contradicts`, column-wise). Dates before the year 1000 are left to the rule."""
    # each date's parts worked out once per profile, not per link and expression (Polars repeats
    # a shared part of an eager expression): 2.1 -> 0.9 s over the 1.6M links at 1.2M residents
    parts = [pl.col("dob").dt.year().cast(pl.Int64).alias("y"), pl.col("dob").dt.month().cast(pl.Int64).alias("m"), pl.col("dob").dt.day().cast(pl.Int64).alias("d")]
    dates = profiles.select("pid", "dob", *parts, pl.coalesce(pl.col("dob").dt.year(), pl.col("birth_year")).alias("year")).with_columns(
        (pl.col("y") * 10_000 + pl.col("m") * 100 + pl.col("d")).alias("ymd")
    )
    read = [c for c in dates.columns if c != "pid"]
    joined = links.join(dates.rename({"pid": "l", **{c: f"{c}_l" for c in read}}), on="l", how="left").join(
        dates.rename({"pid": "r", **{c: f"{c}_r" for c in read}}), on="r", how="left"
    )
    a, b = pl.col("dob_l"), pl.col("dob_r")
    ya, ma, da, yb, mb, db = (pl.col(f"{part}_{s}") for s in ("l", "r") for part in ("y", "m", "d"))
    # the digits of the two dates written YYYYMMDD that differ (one keyed wrong)
    digits_apart = pl.sum_horizontal([((pl.col("ymd_l") // 10**i) % 10 != (pl.col("ymd_r") // 10**i) % 10).cast(pl.Int32) for i in range(8)])
    compatible = (
        (a == b)
        | ((ya == yb) & (ma == db) & (da == mb))
        | ((a - b).dt.total_days().abs() == 1)
        | ((da == 1) & (ya == yb) & ((ma == 1) | (ma == mb)))
        | ((db == 1) & (ya == yb) & ((mb == 1) | (mb == ma)))
        | (((ya - yb).abs() == 1) & (ma == mb) & (da == db))
        | (digits_apart == 1)
    )
    dates_conflict = (a.is_not_null() & b.is_not_null() & (ya >= 1000) & (yb >= 1000) & ~compatible).fill_null(False)
    years_conflict = ((pl.col("year_l") - pl.col("year_r")).abs() > 1).fill_null(False)
    return joined.with_columns((dates_conflict | years_conflict).alias("birth_dates_conflict")).select(*links.columns, "birth_dates_conflict")


def _components(pids: pl.Series, links: pl.DataFrame, must_link: list[tuple[int, int]]) -> pl.DataFrame:
    """pid -> component: the groups that links (and reviewers' matches) connect."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    forced = pl.DataFrame(list(must_link), schema={"l": pl.Int64, "r": pl.Int64}, orient="row")
    edges = pl.concat([links.select("l", "r"), forced])
    size = int(pids.max()) + 1 if len(pids) else 0
    graph = coo_matrix((np.ones(edges.height, dtype=np.int8), (edges["l"].to_numpy(), edges["r"].to_numpy())), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return pl.DataFrame({"pid": pids.cast(pl.Int64), "component": labels[pids.to_numpy()]})


def _groups_that_may_contradict(
    profiles: pl.DataFrame, component: pl.DataFrame, must_link: list[tuple[int, int]], cannot_link: list[tuple[int, int]]
) -> pl.Series:
    """Components where some link could be refused: more than one birth date or value of an
    identifier, birth years more than one apart, forenames (any record's) two of which are not
    alike, or a reviewer's decision inside."""
    # the columns read, not every profile's fields: the join copies what it is given
    read = profiles.select("pid", "dob", "forename", "birth_year", *IDENTIFIERS)
    # `_components` gives the profiles' components in the profiles' order: taken as they are, not
    # joined on pid (1.94M profiles at 1.2M residents: 0.25 s)
    read = read.with_columns(component["component"]) if component["pid"].equals(read["pid"]) else read.join(component, on="pid")
    grouped = read.group_by("component").agg(
        pl.len().alias("profiles"),
        pl.col("dob").drop_nulls().n_unique().alias("dobs"),
        pl.col("forename").drop_nulls().n_unique().alias("forenames"),  # with a birth date or not: names that are not alike
        (pl.col("birth_year").max() - pl.col("birth_year").min()).fill_null(0).alias("year_span"),
        *[pl.col(c).drop_nulls().n_unique().alias(c) for c in IDENTIFIERS],
    )
    others = (pl.col("dobs") > 1) | (pl.col("year_span") > 1) | (pl.col("nhs_number") > 1) | (pl.col("upn") > 1) | (pl.col("nino") > 1)
    may = grouped.filter((pl.col("profiles") > 1) & (others | (pl.col("forenames") > 1)))
    # A group that may contradict itself only by its forenames, every two of which are alike (a
    # typo, a nickname, an initial: `names_alike`), refuses no link: the names most used on either
    # side of any link are alike, and with one birth date or none and one value of each
    # identifier no other rule has two values to set apart. So it is a person as it stands (at
    # 1.2M residents 28,000 of the 90,000 groups that went through the clusterer, 150,000 links).
    by_names = may.filter(~others).select("component")
    if by_names.height:
        names = read.join(by_names, on="component", how="semi").group_by("component").agg(pl.col("forename").drop_nulls().unique())
        nicknames = _nicknames()
        alike = [all(names_alike(a, b, nicknames) for a, b in itertools.combinations(held, 2)) for held in names["forename"].to_list()]
        may = may.join(names.filter(pl.Series(alike)).select("component"), on="component", how="anti")
    may = may["component"]
    reviewed = {p for pair in (*must_link, *cannot_link) for p in pair}
    if reviewed:
        touched = component.filter(pl.col("pid").is_in(list(reviewed)))["component"]
        may = pl.concat([may, touched]).unique()
    return may
