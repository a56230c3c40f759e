"""Fellegi-Sunter person linkage: blocking, comparison and scoring in DuckDB, EM in numpy.

The steps, Splink's split:

1. **Profiles.** Identical standardised mentions (a pupil's ten termly rows,
   say) collapse into one profile, so pairs are formed between distinct
   descriptions of people, not rows.
2. **Blocking.** Candidate pairs are the union of several rules, so one error
   in one field does not lose a true pair: date of birth with phonetic surname,
   with canonical forename, with postcode district; phonetic surname with
   canonical forename and district; forename with surname; each identifier;
   forename and surname swapped.
3. **Comparison.** Each pair gets a level per comparison (names by
   Jaro-Winkler with nicknames, dates of birth allowing a transposed day and
   month or a slip of one digit, postcode full/sector/district, address,
   sex, identifiers).
4. **Estimation without labels.** u-probabilities from random pairs; m and
   the match prior by expectation-maximisation over the candidate pairs'
   comparison patterns; term frequencies adjust exact name matches, so two
   SMITHs weigh less than two OYELARANs.
5. **Scoring.** Match weight (bits) and probability for every candidate pair, where the
   pairs are (DuckDB); only each pair's weight and probability come out to Polars.

A month's run compares only what is new: the last run's candidate pairs and their levels are
kept (`ComparedPairs`), keyed by digests of their two profiles, and only pairs touching a
profile the last run did not hold are blocked and compared. Estimation, scoring and
clustering run over every pair as before, so the result is the one a run from nothing gives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from linkage.comparisons import (
    BLOCKING_AS_THEY_ARE,
    BLOCKING_CODED,
    BLOCKING_RULES,
    BLOCKING_TABLE,
    COMPARISON_LIST,
    PROFILE_FIELDS,
    TF_FIELDS,
    TRAINING_RULES,
    comparison_sql,
    free_in,
    term_value_sql,
)
from linkage.names import canonical_forename, nickname_pairs, phonetic
from linkage.person_records import RECORD_POSITION
from warehouse import register, scratch, sql_literal, table_columns

#: Each comparison's level labels by code (0 the worst); -1 (not comparable) adds no evidence.
COMPARISONS: dict[str, tuple[str, ...]] = {c.name: c.labels for c in COMPARISON_LIST}


@dataclass
class LinkageSettings:
    """What an analyst may tune. Probabilities are posterior match probabilities."""

    link_threshold: float = 0.99
    review_lower: float = 0.80
    em_iterations: int = 40
    u_sample_pairs: int = 300_000
    seed: int = 2026
    # Refuse links between clusters whose birth dates no slip explains (a parent and a child
    # of one name), and between different forenames on one birth date (twins). Data sets
    # whose errors replace whole dates or names (FEBRL) turn these off.
    refuse_conflicting_birth_dates: bool = True
    refuse_twins: bool = True
    # Refuse links between clusters holding different NHS numbers, UPNs or NINOs: partners
    # copy these from a register. FEBRL corrupts its social security numbers; it turns this off.
    refuse_conflicting_identifiers: bool = True


@dataclass
class FittedModel:
    prior: float  # proportion of matches among candidate pairs
    m: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    pairs: int
    iterations: int
    tf_fields: tuple[str, ...] = TF_FIELDS

    def weights(self) -> dict[str, np.ndarray]:
        return {k: np.log2(self.m[k] / self.u[k]) for k in self.m}

    def summary(self) -> dict:
        """Parameters only (no data): for metadata and the linkage report."""
        return {
            "prior": round(self.prior, 6),
            "candidate_pairs": self.pairs,
            "em_iterations": self.iterations,
            "weights": {
                name: {level: round(float(w), 2) for level, w in zip(COMPARISONS[name], self.weights()[name])}
                for name in COMPARISONS
            },
        }


# ----------------------------------------------------------------- profiles

#: Profile fields `build_profiles` derives: a birth year from a stated age, the street from the address.
DERIVED_FIELDS = {
    "birth_year": "CAST(coalesce(year(dob), year(event_date) - age_stated) AS INTEGER)",
    "street": "regexp_replace(address, '^(FLAT [0-9A-Z]+ )?[0-9]+[A-Z]? ', '')",
}


@dataclass(frozen=True)
class MentionsTable:
    """person_records as a table of a DuckDB connection (the warehouse's, in a run): profiles are
    made from it where it is (`build_profiles`), never read whole into Python."""

    con: duckdb.DuckDBPyConnection
    table: str


#: Derived fields a field before them in PROFILE_FIELDS determines (the street: the address
#: without its flat and house number), which the profile key leaves out: two keys that agree as far
#: as the address agree on its street, so the mentions group and sort alike without it, and its
#: regular expression is worked out for each profile rather than for each of a county's millions
#: of mentions (at 1.2M residents `build_profiles` 5.0 -> 4.7-4.8 s cold and 4.8 -> 4.5 s a month,
#: medians of five and eight alternating, the same profiles, mapping and sources).
DETERMINED_BY = {"street": "address"}
#: The fields a profile's key writes out, in PROFILE_FIELDS' order.
KEY_FIELDS = tuple(f for f in PROFILE_FIELDS if f not in DETERMINED_BY)

#: A profile's key: its KEY_FIELDS as text, null as "~". Profiles are numbered (pid) in the key's
#: order, so a run numbers the same mentions alike.
_PROFILE_KEY_SQL = "concat_ws('|', " + ", ".join(f"coalesce(CAST(\"{f}\" AS VARCHAR), '~')" for f in KEY_FIELDS) + ")"


def _profile_fields(alias: str = "", fields: tuple[str, ...] = PROFILE_FIELDS) -> str:
    """The select list of a mention's profile fields (or `fields`; a birth year from a stated age,
    the street from the address) from person_records' columns, of the table aliased `alias` if given."""
    of = f"{alias}." if alias else ""
    return ", ".join(f'{DERIVED_FIELDS[f]} AS "{f}"' if f in DERIVED_FIELDS else f'{of}"{f}"' for f in fields)


def _profile_fields_sql(table: str, row: str, also: tuple[str, ...] = ()) -> str:
    """The mentions of `table` with the fields their key writes out (KEY_FIELDS), each with its
    place in the table (`row`: a column giving it) as _row, and the columns `also`."""
    return f'SELECT {row} AS _row, record_key, {"".join(f"{c}, " for c in also)}source, {_profile_fields(fields=KEY_FIELDS)} FROM "{table}"'


def mention_keys_sql(table: str, sources: tuple[str, ...], row: str = "rowid", also: tuple[str, ...] = ()) -> str:
    """SQL: each mention of `table` (person_records' columns) with its place in the table (`row`:
    a column giving it) as _row, its record_key, the columns `also`, its profile key (profile_key:
    mentions of one key are one profile) and its source's place in `sources` from 0 (source_place)."""
    places = "[" + ", ".join(sql_literal(s) for s in sources) + "]"
    return f"""SELECT _row, record_key, {"".join(f"{c}, " for c in also)}{_PROFILE_KEY_SQL} AS profile_key,
                      CAST(list_position({places}, source) - 1 AS UTINYINT) AS source_place
               FROM ({_profile_fields_sql(table, row, also)})"""


def _mentions_joined_on(con: duckdb.DuckDBPyConnection) -> str:
    """The column mentions are joined to their profiles on (`build_profiles`' temp tables): the
    key's hash rather than its text (at 1.2M residents 1.0 rather than 2.0 s), unless two of the
    profiles' keys share a hash; then the text."""
    distinct = con.execute("SELECT count(DISTINCT key_hash) = count(*) FROM profile_keys").fetchall()[0][0]
    return "key_hash" if distinct else "profile_key"


@dataclass(frozen=True)
class ProfileSources:
    """The sources that mention each profile: bit i of a profile's mask for `names[i]`."""

    names: tuple[str, ...]
    masks: pl.Series  # UInt64, in pid order


def build_profiles(records: pl.DataFrame | MentionsTable) -> tuple[pl.DataFrame, pl.DataFrame, ProfileSources]:
    """(profiles with pid and blocking keys, record_key -> pid in record_key order, the sources
    mentioning each profile).

    In DuckDB, over the warehouse's table when the records are one: a county's 3.7M mentions
    never come into Polars, where every text value costs 16 bytes beside its characters and the
    grouping held 2.7 GB more than its result at 1.2M residents (DuckDB's is bounded). The
    mentions are grouped by their key alone, each profile's fields read from its first mention
    after: grouping with every field spilled past the 1 GB bound and took twice as long. A
    profile's sources are counted in that grouping, as bits: what the run reports of its persons
    (`LinkedPersons`) then needs no second pass over the mentions (joining them to their persons
    again took 3 s at 1.2M residents)."""
    if isinstance(records, MentionsTable):
        con, table, row, own = records.con, records.table, "rowid", False
    else:
        con, table, row, own = scratch(), "profile_mentions", "_row", True
        register(con, table, records.with_row_index("_row"))
    try:
        # each mention's place in person_records' order, where the records have one, goes with it
        # to person_links (`linkage.person_records.mention_join`)
        also = (RECORD_POSITION,) if RECORD_POSITION in (records.columns if own else table_columns(con, table)) else ()
        names = tuple(s for (s,) in con.execute(f'SELECT DISTINCT source FROM "{table}" ORDER BY source').fetchall())
        if len(names) > 64:
            raise ValueError(f"person_records: {len(names)} sources, past the 64 a profile's mask of sources holds")
        # each mention's key made once, for the grouping and the mapping both: made twice, a 1.2M
        # county's profiles took 11.8 s rather than 9.8. (person_records holding every mention's key
        # would save 3.5 s more in a month, but writing that table cold took 9 s longer.) With the
        # key's 64-bit hash, for the mapping to join on (below).
        con.execute(f"CREATE OR REPLACE TEMP TABLE mention_keys AS SELECT *, hash(profile_key) AS key_hash FROM ({mention_keys_sql(table, names, row, also)})")
        # in the key's order, so a profile's place in the table is its pid
        con.execute("""
            CREATE OR REPLACE TEMP TABLE profile_keys AS
            SELECT profile_key, min(_row) AS first_row, CAST(count(*) AS UINTEGER) AS mentions, hash(profile_key) AS key_hash,
                   bit_or(CAST(1 AS UBIGINT) << source_place) AS sources
            FROM mention_keys GROUP BY profile_key ORDER BY profile_key
        """)
        # a profile's fields from one of its mentions (a key holds every field, so its mentions
        # agree), derived after the join: for the profiles' first mentions alone, not for every one
        profiles = con.sql(f"""SELECT CAST(k.rowid AS BIGINT) AS pid, {_profile_fields("d")}, k.mentions, k.sources
                               FROM profile_keys k JOIN "{table}" d ON d.{row} = k.first_row ORDER BY pid""").pl()
        mapping = con.sql(f"""SELECT m.record_key, {"".join(f"m.{c}, " for c in also)}CAST(k.rowid AS BIGINT) AS pid
                              FROM mention_keys m JOIN profile_keys k USING ({_mentions_joined_on(con)}) ORDER BY m.record_key""").pl()
    finally:
        con.execute("DROP TABLE IF EXISTS profile_keys; DROP TABLE IF EXISTS mention_keys")
        if own:
            con.close()
    sources = ProfileSources(names, profiles["sources"])
    profiles = profiles.drop("sources").with_columns(
        canonical_forename(pl.col("forename")).alias("forename_canonical"),
        phonetic(profiles["surname"]).alias("surname_phonetic"),
    )
    return profiles, mapping, sources


# ----------------------------------------------------------------- blocking

def blocking_keys(profiles: pl.DataFrame) -> pl.DataFrame:
    """What the blocking rules read of each profile (`linkage.comparisons.BLOCKING_TABLE`): pid,
    the fields read as they are, and the text fields coded as integers, one dictionary for all."""
    # Polars' categories are one dictionary for every column cast to them (a county's names and
    # postcodes: some 100,000 strings), so a forename's code is a surname's where they are equal
    return profiles.select(
        "pid", *BLOCKING_AS_THEY_ARE,
        *(pl.col(c) if c != "forename_initial" else pl.col("forename").str.slice(0, 1).alias(c) for c in BLOCKING_CODED),
    ).with_columns(pl.col(BLOCKING_CODED).cast(pl.Categorical).to_physical())


def hold_blocking_keys(con: duckdb.DuckDBPyConnection, profiles: pl.DataFrame, table: str = BLOCKING_TABLE) -> None:
    """Temp table `table`: the profiles' `blocking_keys`, for the blocking rules' joins."""
    register(con, "_blocking_keys", blocking_keys(profiles))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM _blocking_keys")
    finally:
        con.unregister("_blocking_keys")


def candidate_pairs(con: duckdb.DuckDBPyConnection) -> int:
    """Create temp table `candidates(l, r)` from the union of the blocking rules, over the profiles'
    blocking keys (`hold_blocking_keys`); returns its size."""
    selects = [rule.pairs_sql() for rule in BLOCKING_RULES]
    con.execute("CREATE OR REPLACE TEMP TABLE candidates AS " + " UNION ".join(selects))
    return con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]


# ----------------------------------------------------------------- the last run's comparisons

@dataclass
class ComparedPairs:
    """The candidate pairs a run compared, kept for the next run: each pair's comparison levels
    by the digests of its two profiles, and the digest of every profile that run held.

    A pair is a candidate, and its levels are what they are, by its two profiles alone, and a
    profile's digest covers every field it has (derived ones too) and the comparisons, blocking
    rules and nicknames in force; so the next run blocks and compares only the pairs that touch
    a profile new to it, and finds every candidate and level a run from nothing would."""

    profiles: pl.DataFrame  # digest (UInt64): every profile the run held
    # digest_l, digest_r, one Int8 column per comparison; or a Parquet file of them, as the pipeline
    # passes a county's (4.1M pairs at 1.2M residents) between the warehouse and the linkage
    levels: pl.DataFrame | Path
    # the Parquet file holds only the pairs compared this run: the others are the pairs of the
    # run before (the `last` it was given) whose two profiles this run holds (`store_compared_pairs`)
    added_to_last: bool = False

    def __post_init__(self) -> None:
        self.profiles = self.profiles.select(pl.col("digest").cast(pl.UInt64))


def store_compared_pairs(con: duckdb.DuckDBPyConnection, table: str, compared: ComparedPairs) -> None:
    """Make `table` hold every pair `compared` stands for: where it holds only the pairs compared
    this run (`added_to_last`), the table (the run before's pairs) loses those with a profile this
    run lacks and gains those; otherwise it is written whole. A month at 1.2M residents adds
    519,000 pairs to 7.9M: person_links' tables were written in 3.2 s with the 8.4M written
    again, 2.5 s so."""
    if isinstance(compared.levels, Path):
        source = f"read_parquet({sql_literal(str(compared.levels))})"
    else:
        source = "_compared_levels"
        register(con, source, compared.levels)
    register(con, "_compared_profiles", compared.profiles)
    try:
        if compared.added_to_last:
            con.execute(
                f"""DELETE FROM "{table}" WHERE digest_l NOT IN (SELECT digest FROM _compared_profiles)
                    OR digest_r NOT IN (SELECT digest FROM _compared_profiles)"""
            )
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM {source}')
        else:
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM {source}')
    finally:
        con.unregister("_compared_profiles")
        if source == "_compared_levels":
            con.unregister(source)


def _comparisons_version() -> str:
    """What a pair's levels (with its shared names and `sure`) rest on besides its two profiles;
    part of every profile's digest, so a change to any of them leaves nothing the last run
    compared reusable. DuckDB's version too: its string functions measure the levels, and its
    hash makes the digest (`_digest_sql`)."""
    text = "\n".join([comparison_sql(), SURE_SQL, *(rule.sql for rule in BLOCKING_RULES), nickname_pairs().write_csv(), f"duckdb {duckdb.__version__}"])
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_sql(columns: list[str]) -> str:
    """A profile's digest: DuckDB's 64-bit hash of the comparisons' version and every field, so two
    profiles share one only if they are the same description of a person. The fields are hashed
    as they are, not written out as text first: MD5 of them as one string took 3.1 s against 1.2 s
    for a 1.2M county's 1.9M profiles. A DuckDB whose hash differs has another version, so after
    an upgrade every pair is compared again once (`_comparisons_version`)."""
    fields = ", ".join(f'"{c}"' for c in columns)
    return f"hash('{_comparisons_version()}', {fields})"


def _compare_what_is_new(con: duckdb.DuckDBPyConnection, last: ComparedPairs) -> None:
    """Temp table `candidate_levels`: every candidate pair's levels, the last run's for pairs of
    profiles it held (`known_profiles`), compared now for pairs touching a profile it did not."""
    if isinstance(last.levels, Path):
        con.execute(f"CREATE OR REPLACE TEMP VIEW known_levels AS SELECT * FROM read_parquet({sql_literal(str(last.levels))})")
    else:
        register(con, "known_levels", last.levels)
    con.execute("CREATE OR REPLACE TEMP TABLE new_profiles AS SELECT p.* FROM profiles p ANTI JOIN known_profiles k USING (digest)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE new_blocking_keys AS SELECT b.* FROM {BLOCKING_TABLE} b SEMI JOIN new_profiles n USING (pid)")
    selects = [f"{rule.pairs_sql('new_blocking_keys', BLOCKING_TABLE)} UNION {rule.pairs_sql(BLOCKING_TABLE, 'new_blocking_keys')}" for rule in BLOCKING_RULES]
    con.execute("CREATE OR REPLACE TEMP TABLE new_candidates AS " + " UNION ".join(selects))
    compare_into(con, "new_candidates", "candidate_levels", sure=True)
    # everything a pair's scoring reads was kept with it (KEPT_COLUMNS), so the known pairs need of
    # their profiles only the pids: reading the names and identifiers of both again for the shared
    # names and `sure` made this 2.5 rather than 0.9 s a month at 1.2M residents
    con.execute(
        f"""INSERT INTO candidate_levels BY NAME
            SELECT l.pid AS l, r.pid AS r, {", ".join(f"k.{c}" for c in KEPT_COLUMNS)}
            FROM known_levels k JOIN profiles l ON l.digest = k.digest_l JOIN profiles r ON r.digest = k.digest_r"""
    )
    if isinstance(last.levels, Path):
        con.execute("DROP VIEW known_levels")
    else:
        con.unregister("known_levels")


#: The last run's comparisons are reused when at least this share of the profiles is one it held.
#: Below it, blocking the new profiles against all (each rule twice, one side new) and reading the
#: known pairs back costs more than comparing every pair afresh, which finds the same levels: at
#: 1.2M residents, after a change to the comparisons (no profile known), 32 s against 17 s.
MIN_KNOWN_SHARE = 0.5


def _reusable(con: duckdb.DuckDBPyConnection, last: ComparedPairs | None) -> bool:
    """The last run's comparisons are worth using: it held most of this run's profiles
    (MIN_KNOWN_SHARE; its digests registered as `known_profiles`), and no two of this run's
    profiles share a digest (64 bits: all but impossible, and then everything is compared again)."""
    if last is None or last.profiles.is_empty():
        return False
    distinct, total, known = con.execute(
        "SELECT count(DISTINCT digest), count(*), count(*) FILTER (WHERE digest IN (SELECT digest FROM known_profiles)) FROM profiles"
    ).fetchall()[0]
    return distinct == total and known >= MIN_KNOWN_SHARE * total


# ----------------------------------------------------------------- comparison

#: A level code is small (-1 to a comparison's few levels): the candidates' levels are held as such.
LEVEL_TYPE = "TINYINT"
#: What the next run keeps of each pair compared, beside its profiles' digests: its levels, whether
#: it shares each name a frequency adjusts (`term_value_sql`) and whether it is `sure`: all it is
#: scored and estimated on, each a function of its two profiles alone.
KEPT_COLUMNS = (*COMPARISONS, *(f"same_{name}" for name in TF_FIELDS), "sure")


def compare_into(con: duckdb.DuckDBPyConnection, pairs_table: str, target: str, sure: bool = False) -> None:
    """Temp table `target`: comparison levels for every pair in `pairs_table(l, r)`, then whether it
    shares each name whose frequency adjusts an exact match, and with `sure` whether it meets the
    DETERMINISTIC_RULE (`SURE_SQL`). Kept in DuckDB: a county's millions of candidate pairs are
    estimated and scored there, never copied out whole."""
    register(con, "nicknames", nickname_pairs())
    items = [f"CAST({c.level_sql()} AS {LEVEL_TYPE}) AS {c.name}" for c in COMPARISON_LIST] + term_value_sql() + ([SURE_SQL] if sure else [])
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {target} AS
            SELECT p.l, p.r, {", ".join(items)}
            FROM {pairs_table} p JOIN profiles l ON l.pid = p.l JOIN profiles r ON r.pid = p.r"""
    )


def compare(con: duckdb.DuckDBPyConnection, pairs_table: str) -> pl.DataFrame:
    """Comparison levels for every pair in `pairs_table(l, r)`, as a frame (a few pairs: random ones, a reviewer's)."""
    compare_into(con, pairs_table, "compared_levels")
    return con.sql("SELECT * FROM compared_levels").pl()


def random_pairs(con: duckdb.DuckDBPyConnection, n: int, seed: int) -> None:
    """Temp table `random_pairs(l, r)`: profiles paired at random (nearly all non-matches)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE random_pairs AS
        WITH a AS (SELECT pid, row_number() OVER (ORDER BY hash(pid + {seed})) AS i FROM profiles),
             b AS (SELECT pid, row_number() OVER (ORDER BY hash(pid * 7 + {seed + 1})) AS i FROM profiles),
             c AS (SELECT pid, row_number() OVER (ORDER BY hash(pid * 13 + {seed + 2})) AS i FROM profiles)
        SELECT l, r FROM (
            SELECT a.pid AS l, b.pid AS r FROM a JOIN b USING (i) WHERE a.pid <> b.pid
            UNION ALL
            SELECT a.pid, c.pid FROM a JOIN c USING (i) WHERE a.pid <> c.pid
        ) ORDER BY hash(l * 1000003 + r + {seed}), l, r  -- a fixed sample, whatever the threads did
        LIMIT {n}
        """
    )


# ----------------------------------------------------------------- estimation

def _level_frequencies(levels: pl.DataFrame, counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name, labels in COMPARISONS.items():
        values = levels[name].to_numpy()
        weights = np.ones(len(values)) if counts is None else counts
        freq = np.array([weights[values == k].sum() for k in range(len(labels))], dtype=float)
        out[name] = (freq + 1.0) / (freq.sum() + len(labels))  # add-one smoothing: no zero probabilities
    return out


#: Rules whose agreement is all but certain, for the chance two random profiles match.
DETERMINISTIC_RULE = "(l.forename = r.forename AND l.surname = r.surname AND l.dob = r.dob) OR l.nhs_number = r.nhs_number OR l.upn = r.upn OR l.nino = r.nino"
DETERMINISTIC_RECALL = 0.8
#: A candidate pair's `sure`: whether it meets the DETERMINISTIC_RULE, worked out where its levels are,
#: its two profiles at hand, rather than by joining every candidate to its profiles again to count
#: them: a month's score_profiles at 1.2M residents 22.0 -> 21.2 s (a cold run's the same: there
#: every pair is compared, and the rule costs inside the comparison what the join cost).
SURE_SQL = f"coalesce({DETERMINISTIC_RULE}, false) AS sure"


def prior_m(levels: int) -> np.ndarray:
    """EM's starting m: among matches, each better level likelier than the one below it."""
    shape = np.linspace(0.02, 1.0, levels) ** 3
    return shape / shape.sum()


def _em_session(patterns: pl.DataFrame, free: tuple[str, ...], u: dict[str, np.ndarray], iterations: int) -> tuple[dict[str, np.ndarray], int]:
    """patterns: the session's pairs counted (`len`) by their levels in the `free` comparisons,
    in a fixed order (float sums repeat exactly)."""
    lv = {n: patterns[n].to_numpy() for n in free}
    counts = patterns["len"].to_numpy().astype(float)
    m = {name: prior_m(len(COMPARISONS[name])) for name in free}
    prior = 0.5
    iteration = 0
    for iteration in range(1, iterations + 1):
        log_odds = np.full(len(counts), np.log(prior) - np.log1p(-prior))
        for name in free:
            ok = lv[name] >= 0
            log_odds[ok] += np.log(m[name][lv[name][ok]]) - np.log(u[name][lv[name][ok]])
        g = 1 / (1 + np.exp(-np.clip(log_odds, -700, 700)))
        weighted = counts * g
        new_prior = float(np.clip(weighted.sum() / counts.sum(), 1e-6, 1 - 1e-6))
        for name in free:
            mass = np.array([weighted[lv[name] == j].sum() for j in range(len(COMPARISONS[name]))]) + 1e-3
            m[name] = mass / mass.sum()
        converged = abs(new_prior - prior) < 1e-6
        prior = new_prior
        if converged:
            break
    return m, iteration


def _session_patterns(con: duckdb.DuckDBPyConnection, rule, free: tuple[str, ...]) -> pl.DataFrame:
    """A training session's pairs counted by their levels in the comparisons `free` in it, sorted by
    those levels. The levels are read from the candidates' (table `candidate_levels`), which hold
    every pair a blocking rule made, and compared afresh only for pairs no blocking rule made: the
    same levels, without comparing most pairs twice."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE session_pairs AS {rule.pairs_sql()}")
    con.execute("CREATE OR REPLACE TEMP TABLE session_rest AS SELECT s.* FROM session_pairs s ANTI JOIN candidate_levels c ON c.l = s.l AND c.r = s.r")
    compare_into(con, "session_rest", "session_rest_levels")
    columns = ", ".join(free)
    return con.sql(
        f"""SELECT {columns}, count(*) AS len FROM (
                SELECT {columns} FROM candidate_levels c SEMI JOIN session_pairs s ON c.l = s.l AND c.r = s.r
                UNION ALL SELECT {columns} FROM session_rest_levels
            ) GROUP BY ALL ORDER BY ALL"""
    ).pl()


def fit(con: duckdb.DuckDBPyConnection, random_levels: pl.DataFrame, n_profiles: int, iterations: int = 40) -> FittedModel:
    """u from random pairs; m by EM in sessions; the prior from a deterministic rule.
    The candidates' levels are in the table `candidate_levels`, with `sure` (`compare_into`)."""
    u = _level_frequencies(random_levels)
    estimates: dict[str, list[np.ndarray]] = {name: [] for name in COMPARISONS}
    total_iterations = 0
    for rule in TRAINING_RULES:
        free = free_in(rule)
        patterns = _session_patterns(con, rule, free)
        if patterns.height == 0:
            continue
        m, used = _em_session(patterns, free, u, iterations)
        total_iterations += used
        for name in free:
            estimates[name].append(m[name])
    m = {}
    for name, labels in COMPARISONS.items():
        if estimates[name]:
            m[name] = np.mean(estimates[name], axis=0)
        else:
            m[name] = prior_m(len(labels))
    sure, pairs = con.execute("SELECT count(*) FILTER (WHERE sure), count(*) FROM candidate_levels").fetchall()[0]
    all_pairs = n_profiles * (n_profiles - 1) / 2
    prior = min(0.5, max(sure / DETERMINISTIC_RECALL, 1.0) / max(all_pairs, 1.0))
    return FittedModel(prior=float(prior), m=m, u=u, pairs=int(pairs), iterations=total_iterations)


def term_frequencies(profiles: pl.DataFrame, column: str) -> pl.DataFrame:
    """The chance two random profiles share each value of a name."""
    counts = profiles.group_by(column).len().drop_nulls()
    total = counts["len"].sum()
    return counts.select(pl.col(column).alias("value"), (pl.col("len") / total).alias("tf"))


#: A term-frequency adjustment's bounds: one rare name cannot decide alone, nor a common one veto.
TF_ADJUSTMENT_BITS = (-3.0, 6.0)
#: A value's frequency is taken as at least this (a name no other profile holds is not infinitely telling).
TF_FLOOR = 1e-6


def score(con: duckdb.DuckDBPyConnection, model: FittedModel, profiles: pl.DataFrame, levels: str = "candidate_levels") -> pl.DataFrame:
    """Match weight (bits) and probability of every pair in the table `levels` (`compare`'s
    columns), with term-frequency adjustment of exact names: (l, r, match_weight, match_probability).
    Computed in DuckDB, where the pairs are; the arithmetic is the Fellegi-Sunter sum in the
    comparisons' order (a level not comparable adds nothing), Splink's log2(u_exact / u_value)."""
    weights = model.weights()
    # DuckDB refuses a parameter its query does not use, so the adjustments' bounds are passed only with an adjustment
    parameters: dict[str, object] = {"prior": float(np.log2(model.prior / (1 - model.prior))), "two": 2.0, "one": 1.0, "nothing": 0.0}
    terms = ["$prior"]
    for name in COMPARISONS:
        parameters[f"w_{name}"] = [float(w) for w in weights[name]]
        terms.append(f"CASE WHEN c.{name} >= 0 THEN $w_{name}[c.{name} + 1] ELSE $nothing END")
    # each profile's names' frequencies, looked up by the pair's left profile (its shared name is
    # that profile's): joined on an integer, where the pairs carry no text
    adjustments, frequencies = [], profiles.select("pid")
    for name in model.tf_fields:
        exact = len(COMPARISONS[name]) - 1
        parameters.update({f"u_{name}": float(model.u[name][exact]), "floor": TF_FLOOR, "low": TF_ADJUSTMENT_BITS[0], "high": TF_ADJUSTMENT_BITS[1]})
        tf = term_frequencies(profiles, name).rename({"value": name, "tf": f"tf_{name}"})
        frequencies = frequencies.with_columns(profiles.select(name).join(tf, on=name, how="left", maintain_order="left")[f"tf_{name}"])
        ratio = f"$u_{name} / least(greatest(f.tf_{name}, $floor), $one)"
        # ln(x) / ln(2), not log2: the arithmetic of the Polars scoring this replaced, so weights repeat bit for bit
        adjustment = f"least(greatest(ln({ratio}) / ln($two), $low), $high)"
        # an exact level of names not shared (forename and surname swapped), or of a name with no
        # frequency, adds nothing; said outright, because DuckDB's greatest() skips a NULL where a clip would keep it
        adjustments.append(f"CASE WHEN c.{name} = {exact} AND c.same_{name} AND f.tf_{name} IS NOT NULL THEN {adjustment} ELSE $nothing END")
    weight = f"({' + '.join(terms)}) + ({' + '.join(adjustments) or '$nothing'})"
    joins = "LEFT JOIN name_frequencies f ON f.pid = c.l" if model.tf_fields else ""
    register(con, "name_frequencies", frequencies)
    try:
        return con.sql(
            f"""SELECT l, r, match_weight, $one / ($one + pow($two, -match_weight)) AS match_probability
                FROM (SELECT c.l, c.r, {weight} AS match_weight FROM {levels} c {joins})""",
            params=parameters,
        ).pl()
    finally:
        con.unregister("name_frequencies")


@dataclass
class ScoredPairs:
    profiles: pl.DataFrame
    mapping: pl.DataFrame  # record_key -> pid
    sources: ProfileSources
    pairs: pl.DataFrame  # l, r, match_weight, match_probability
    model: FittedModel
    blocking: dict[str, int] = field(default_factory=dict)
    compared: ComparedPairs | None = None  # for the next run


def score_profiles(
    records: pl.DataFrame | MentionsTable, settings: LinkageSettings, last: ComparedPairs | None = None, levels_to: Path | None = None,
) -> ScoredPairs:
    """Profiles, candidate pairs, the fitted model and every candidate pair's score. With `last`
    (the last run's `compared`), only pairs touching a profile new since then are compared.
    levels_to: a folder where the pairs' levels for the next run are written as Parquet
    (`compared.levels` is then that file), rather than returned as a frame."""
    profiles, mapping, sources = build_profiles(records)
    con = scratch()
    try:
        register(con, "profiles_frame", profiles)
        con.execute(f"CREATE TEMP TABLE profiles AS SELECT *, {_digest_sql(profiles.drop('pid', 'mentions').columns)} AS digest FROM profiles_frame")
        hold_blocking_keys(con, profiles)
        if last is not None:
            register(con, "known_profiles", last.profiles)
        reused = _reusable(con, last)
        if reused:
            _compare_what_is_new(con, last)
        else:
            candidate_pairs(con)
            compare_into(con, "candidates", "candidate_levels", sure=True)
        # (in no particular order: estimation works on counts of patterns and clustering sorts the
        # links itself; sorting 8 million pairs here held two copies at 1.2M residents)
        random_pairs(con, settings.u_sample_pairs, settings.seed)
        random_levels = compare(con, "random_pairs")
        model = fit(con, random_levels, profiles.height, settings.em_iterations)
        pairs = score(con, model, profiles)
        digests = con.sql("SELECT pid, digest FROM profiles ORDER BY pid").pl()
        kept = f"""SELECT l.digest AS digest_l, r.digest AS digest_r, {", ".join(f"c.{c}" for c in KEPT_COLUMNS)}
                   FROM candidate_levels c JOIN profiles l ON l.pid = c.l JOIN profiles r ON r.pid = c.r"""
        if levels_to is None:
            kept_levels: pl.DataFrame | Path = con.sql(kept).pl()
        else:
            # the pipeline's: where the last run's pairs were reused, only the pairs compared now
            # are written out, and the warehouse's table of the last run's gains them
            kept_levels = levels_to / "compared_levels.parquet"
            added = f"{kept} SEMI JOIN new_candidates n ON n.l = c.l AND n.r = c.r" if reused else kept
            con.execute(f"COPY ({added}) TO {sql_literal(str(kept_levels))} (FORMAT parquet)")
        compared = ComparedPairs(profiles=digests.select("digest"), levels=kept_levels, added_to_last=reused and levels_to is not None)
        new_profiles = con.execute("SELECT count(*) FROM new_profiles").fetchall()[0][0] if reused else profiles.height
    finally:
        con.close()
    profiles = profiles.with_columns(digests["digest"])  # pids are 0..n-1 in order, as are the digests
    blocking = {"candidate_pairs": pairs.height, "profiles_compared_afresh": new_profiles}
    return ScoredPairs(profiles=profiles, mapping=mapping, sources=sources, pairs=pairs, model=model, blocking=blocking, compared=compared)
