"""The council's address gazetteer (LLPG) for the synthetic county, with the gaps real ones have.

One row per addressable property, as spec version 2 lays out `address_gazetteer`: a house is
one row; a flat is a row under its building's (PARENT_UPRN), and the building has a row of its
own. Real gazetteers are never complete (GeoPlace: new builds arrive months late, and some
conversions' flats are never split out), so a few properties are missing, and some flats are
missing while their building is there. The truth of which property each partner row was
recorded at is written beside it (`truth_addresses.csv`), for scoring address matching.
"""

from __future__ import annotations

import numpy as np
import polars as pl

#: Shares of properties a gazetteer lacks: a whole property (a new build), a flat whose
#: building is there (illustrative; GeoPlace reports LLPGs of councils at 99%+ of properties).
MISSING_PROPERTY = 0.02
MISSING_FLAT = 0.15
_PROPERTY_BASE = 100_000_000
_BUILDING_BASE = 200_000_000


def property_uprn(address_id: pl.Expr) -> pl.Expr:
    """The UPRN of the synthetic county's address `address_id` (a house, or a flat)."""
    return (pl.lit(_PROPERTY_BASE) + address_id).cast(pl.String)


def address_gazetteer(addresses: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """`addresses`: the county's (address_id, flat, house_number, street, town, postcode)."""
    n = addresses.height
    missing = rng.random(n) < MISSING_PROPERTY
    flat_missing = rng.random(n) < MISSING_FLAT
    frame = addresses.with_columns(pl.Series("missing", missing), pl.Series("flat_missing", flat_missing)).filter(~pl.col("missing"))
    common = [pl.col("house_number").cast(pl.String).alias("PAO"), pl.col("street").alias("STREET"), pl.col("town").alias("TOWN"), pl.col("postcode").alias("POSTCODE")]
    houses = frame.filter(pl.col("flat") == 0).select(property_uprn(pl.col("address_id")).alias("UPRN"), pl.lit(None, pl.String).alias("PARENT_UPRN"), pl.lit(None, pl.String).alias("SAO"), *common)
    in_flats = frame.filter(pl.col("flat") > 0)
    building = (pl.lit(_BUILDING_BASE) + pl.col("address_id")).cast(pl.String)
    buildings = in_flats.select(building.alias("UPRN"), pl.lit(None, pl.String).alias("PARENT_UPRN"), pl.lit(None, pl.String).alias("SAO"), *common)
    flats = in_flats.filter(~pl.col("flat_missing")).select(
        property_uprn(pl.col("address_id")).alias("UPRN"), building.alias("PARENT_UPRN"), (pl.lit("Flat ") + pl.col("flat").cast(pl.String)).alias("SAO"), *common
    )
    return pl.concat([houses, buildings, flats]).sort("UPRN")
