import polars as pl
from hypothesis import example, given
from hypothesis import strategies as st

from ingestion.identifiers import (
    is_valid_nhs_number,
    is_valid_upn,
    nhs_check_digit,
    nhs_number_is_valid,
    nino_is_valid,
    postcode_is_valid,
    postcode_normalised,
    upn_check_letter,
    upn_is_valid,
)


def test_known_numbers():
    assert is_valid_nhs_number("943 476 5919")
    assert not is_valid_nhs_number("9434765918")
    assert is_valid_upn("T919288923761")  # from the spec's examples
    assert not is_valid_upn("A919288923761")


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_polars_nhs_check_agrees_with_python(first_nine):
    check = nhs_check_digit(first_nine)
    candidates = [first_nine + str(d) for d in range(10)]
    frame = pl.DataFrame({"n": candidates}).select(nhs_number_is_valid(pl.col("n")).alias("ok"))
    assert frame["ok"].to_list() == [is_valid_nhs_number(c) for c in candidates]
    assert sum(frame["ok"]) == (0 if check is None else 1)


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.sampled_from("ABCDEFGHJKLMNPQRTUVWXYZ"))
def test_polars_upn_check_agrees_with_python(digits, letter):
    value = letter + digits
    ok = pl.DataFrame({"u": [value]}).select(upn_is_valid(pl.col("u")))[0, 0]
    assert ok == is_valid_upn(value) == (upn_check_letter(digits) == letter)


# any text at all, as a partner may send it: signs, spaces, other scripts' digits, eleven digits
_ANY_VALUE = st.one_of(st.text(max_size=14), st.text(alphabet="0123456789 +-.\u0663", max_size=13))


@given(_ANY_VALUE)
@example("94347659190")  # a valid number and one digit more
@example("9434765919\n")
@example(" 943 476 5919 ")
@example("+943476591")
def test_polars_nhs_check_agrees_with_python_on_any_text(value):
    ok = pl.DataFrame({"n": [value]}).lazy().select(nhs_number_is_valid(pl.col("n"))).collect()[0, 0]
    assert ok == is_valid_nhs_number(value)


@given(_ANY_VALUE.map(lambda v: "T" + v))
def test_polars_upn_check_agrees_with_python_on_any_text(value):
    ok = pl.DataFrame({"u": [value]}).lazy().select(upn_is_valid(pl.col("u"))).collect()[0, 0]
    assert ok == is_valid_upn(value)


def test_nino_and_postcode_shapes():
    frame = pl.DataFrame({"v": ["AB123456C", "AB 12 34 56 C", "AB123456E", "A1234567C"]})
    assert frame.select(nino_is_valid(pl.col("v")))["v"].to_list() == [True, True, False, False]
    postcodes = pl.DataFrame({"p": ["wd9 2wn", "CM97JS", "EC1A 1BB", "W1A0AX", "12345", "WD9 2W"]})
    assert postcodes.select(postcode_is_valid(pl.col("p")))["p"].to_list() == [True, True, True, True, False, False]
    assert postcodes.head(3).select(postcode_normalised(pl.col("p")))["p"].to_list() == ["WD9 2WN", "CM9 7JS", "EC1A 1BB"]
