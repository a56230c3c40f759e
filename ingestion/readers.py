"""Read a landing file (CSV, Parquet or XLSX) into an all-text frame with row numbers.

Every value arrives as text exactly as the partner wrote it (types are the
contract's business, not the reader's), and every record keeps its number in
the file: 1 is the first record under the header, and a CSV record counts once
even when a quoted field spans lines. Problems that belong to one record (bytes
that are not UTF-8, a record with the wrong number of fields) are returned as
row problems so the record is quarantined, not lost; problems with the whole
file raise FileRefused.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

ROW = "_row"
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".xlsx")
REPLACEMENT_CHAR = "\ufffd"
#: Cells longer than this are refused by the reader's CSV fallback before they reach memory twice.
CSV_FIELD_LIMIT = 1_000_000


class FileRefused(Exception):
    """The whole file cannot be read. The message names the problem, never a value."""


@dataclass
class RowProblem:
    row: int
    column: str | None  # the partner's column name, or None for the whole record
    reason: str


@dataclass
class ExtractFile:
    header: list[str]  # column names as the file gives them
    frame: pl.DataFrame  # one String column per header name, plus _row
    row_problems: list[RowProblem] = field(default_factory=list)
    raw_records: dict[int, list[str]] = field(default_factory=dict)  # malformed records, kept whole
    # who last saved the file and when, as the file itself records it (an XLSX workbook's document
    # properties; a CSV or Parquet file records neither): for a returned meeting pack, who recorded
    # the meeting's decisions
    saved_by: str | None = None
    saved_at: dt.datetime | None = None


def column(columns: list[str], name: str, offset: int = 0) -> pl.Expr:
    """A file's column by position (its place in `columns`, plus `offset`): `pl.col` would read
    a header such as `*` or `^.*$` as a wildcard or a pattern, and a partner's header is
    whatever the partner wrote."""
    return pl.nth(columns.index(name) + offset)


def normalise_header(name: str) -> str:
    """Column names match case-insensitively after trimming spaces (the spec)."""
    return name.replace("\ufeff", "").strip().lower()


def _check_header(header: list[str]) -> None:
    if not header or all(not h.strip() for h in header):
        raise FileRefused("the header row is empty")
    seen: set[str] = set()
    for number, name in enumerate(header, start=1):
        key = normalise_header(name)
        if key in seen:
            # by position, not by name: a file sent without its header has data in that row
            raise FileRefused(f"header column {number} repeats the name of an earlier column")
        seen.add(key)


def read_extract(path: Path, date_formats: dict[str, str] | None = None) -> ExtractFile:
    """Read one landing file. date_formats maps a normalised header to the strptime
    format in which typed date cells (XLSX, Parquet) are written back as text."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRefused(f"not a CSV, Parquet or XLSX file (suffix {suffix or 'none'!r})")
    if path.stat().st_size == 0:
        raise FileRefused("the file is empty (0 bytes)")
    if suffix == ".csv":
        return _read_csv(path.read_bytes())
    if suffix == ".parquet":
        return _read_parquet(path, date_formats or {})
    return _read_xlsx(path, date_formats or {})


#: Characters of a CSV file in which its header is looked for first (see `_first_record`).
HEADER_PREFIX = 1 << 16


class _CsvText:
    """A CSV file's text as Polars holds it (`whole`, one string), decoded into a Python string
    only where Python's csv module must read it (`text`): for a school month's file at 1.2M
    residents, decoding took 0.04 s and handing the string to Polars 0.04-0.07 s more, both in
    the interpreter the files read side by side share, where Polars takes the bytes and checks
    they are UTF-8 in 0.005 s. The seven largest sources read (every file, alternating with the
    decoding reader, four each): 14.8 -> 14.1 s, 24.0 -> 23.2 CPU-s (medians), the same frames."""

    def __init__(self, whole: pl.Series, data: bytes | None = None, text: str | None = None):
        self.whole, self._data, self._text = whole, data, text

    @classmethod
    def of_bytes(cls, data: bytes) -> _CsvText | None:
        """The text of bytes that are UTF-8 throughout; None where they are not."""
        try:
            return cls(pl.Series([data]).cast(pl.String), data=data)
        except pl.exceptions.ComputeError:
            return None

    @classmethod
    def of_text(cls, text: str) -> _CsvText:
        return cls(pl.Series([text]), text=text)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._data.decode("utf-8")
        return self._text

    def head(self) -> tuple[str, bool]:
        """(the text's first HEADER_PREFIX characters or so, whether that is the whole text).
        From bytes, a character the cut splits is left out: it ends the head."""
        if self._text is not None:
            return self._text[:HEADER_PREFIX], len(self._text) <= HEADER_PREFIX
        return self._data[:HEADER_PREFIX].decode("utf-8", errors="ignore"), len(self._data) <= HEADER_PREFIX


def _read_csv(data: bytes) -> ExtractFile:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data or data.isspace():  # (not strip(), which copies the file)
        raise FileRefused("the file is empty")
    # a NUL byte is a NUL character, and the bytes are searched faster
    source = _CsvText.of_bytes(data) if b"\x00" not in data else None
    lossy = False
    if source is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            lossy = True
        if "\x00" in text:
            if "\x00" in text.split("\n", 1)[0]:
                raise FileRefused("the header row contains NUL bytes; it is not a text CSV file")
            # a NUL inside a record spoils that record only: marked like any unreadable byte
            text, lossy = text.replace("\x00", REPLACEMENT_CHAR), True
        source = _CsvText.of_text(text)
    try:
        header = _first_record(source)
    except (csv.Error, StopIteration) as exc:
        raise FileRefused(f"the header row could not be read as CSV ({type(exc).__name__})") from None
    _check_header(header)
    # Polars pads short records and reads a blank line as a record, so every record's
    # field count is checked first
    records = _records_if_well_formed(source, len(header))
    result = None
    if records is not None:
        try:
            frame = pl.read_csv(
                io.BytesIO(source.text.encode("utf-8")) if lossy else io.BytesIO(data),
                infer_schema=False,
                has_header=True,
                new_columns=header,
                raise_if_empty=False,
            )
        except pl.exceptions.PolarsError:
            # only what Polars cannot parse goes the slow way: a wrong argument must fail loudly,
            # not send every file down the slow path (as a renamed argument once did, unseen)
            frame = None
        if frame is not None and frame.height == records - 1:
            # an empty field is missing, quoted ("") or not, as the slow path reads it; by position,
            # as a header may read as a Polars pattern
            frame = frame.select(pl.when(pl.nth(i) != "").then(pl.nth(i)) for i in range(frame.width))
            frame = frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
            result = ExtractFile(header=header, frame=frame)
    if result is None:
        result = _read_csv_records(source.text, header)
    if lossy:
        result.row_problems.extend(_replacement_problems(result.frame, header))
    return result


def _first_record(source: _CsvText) -> list[str]:
    """The first record of a CSV text, read from its first HEADER_PREFIX characters when it ends
    within them: the csv module reading the whole text copied a school month's file, 0.06 s of
    its 0.5. A record not ended there is read from the whole text."""
    head, whole = source.head()
    if not whole:
        prefix = io.StringIO(head, newline="")
        try:
            record = next(csv.reader(prefix))
        except (csv.Error, StopIteration):
            record = None  # the cut may have made the trouble: the whole text decides
        if record is not None and prefix.tell() < len(head):
            return record
        head = source.text
    return next(csv.reader(io.StringIO(head, newline="")))


def _plain_record(width: int) -> str:
    """A line that is one whole record of `width` fields, each unquoted (no quote, comma or line
    break) or quoted whole with any quote inside doubled (RFC 4180), as every reader reads alike."""
    field = r'(?:"(?:[^"]|"")*"|[^,"\r\n]*)'
    return f"^{field}(?:,{field}){{{width - 1}}}\r?$"


def _records_if_well_formed(source: _CsvText, width: int) -> int | None:
    """The number of records, the header's included, when every one has `width` fields; None
    when one has not, or cannot be read. Most files are a record a line, every line plain
    (`_plain_record`): those are counted by Polars' regex engine, at 1.2M residents 0.08 rather
    than 0.27 s for a school month's file, and outside the GIL, which the files read side by side
    share. Any other file (a quoted field over two lines, a stray quote or carriage return, a
    blank line, a line longer than a field may be) is read with Python's csv module, as the slow
    path reads it. One field is never plain: a blank line would be one."""
    if width >= 2:
        lines = source.whole.str.split("\n").explode()
        if source.whole.str.ends_with("\n").item():
            lines = lines.head(len(lines) - 1)
        if (lines.str.len_chars().max() or 0) <= CSV_FIELD_LIMIT and lines.str.contains(_plain_record(width)).all():
            return len(lines)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        lengths = [len(record) for record in csv.reader(io.StringIO(source.text, newline=""))]
    except csv.Error:
        return None
    return len(lengths) if all(n == width for n in lengths[1:]) else None


def _read_csv_records(text: str, header: list[str]) -> ExtractFile:
    """The slow, forgiving path: Python's csv module, one record at a time, so a
    malformed record is quarantined with its number instead of failing the file."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        next(reader)
    except csv.Error:
        raise FileRefused("the header row could not be read as CSV") from None
    rows: list[list[str | None]] = []
    numbers: list[int] = []
    problems: list[RowProblem] = []
    raw: dict[int, list[str]] = {}
    number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            number += 1
            reason = "could not be read as a CSV record"
            if "field larger" in str(exc):
                reason = f"has a field longer than {CSV_FIELD_LIMIT:,} characters"
            problems.append(RowProblem(number, None, reason))
            raw[number] = []
            continue
        number += 1
        if len(record) != len(header):
            if not record or (len(record) == 1 and not record[0]):
                number -= 1  # a blank line is not a record
                continue
            problems.append(RowProblem(number, None, f"has {len(record)} fields where the header has {len(header)}"))
            raw[number] = record
            record = (record + [""] * len(header))[: len(header)]
        rows.append([v if v != "" else None for v in record])
        numbers.append(number)
    columns = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    frame = pl.DataFrame(columns, schema={name: pl.String for name in header})
    # columns by position: a header may read as a Polars pattern (`*`)
    frame = pl.DataFrame([pl.Series(ROW, numbers, dtype=pl.Int64), *frame.get_columns()])
    return ExtractFile(header=header, frame=frame, row_problems=problems, raw_records=raw)


def _replacement_problems(frame: pl.DataFrame, header: list[str]) -> list[RowProblem]:
    problems = []
    for name in header:
        bad = frame.filter(column(header, name, offset=1).str.contains(REPLACEMENT_CHAR, literal=True))[ROW].to_list()
        problems.extend(RowProblem(r, name, "contains bytes that are not valid UTF-8 text (or a NUL byte)") for r in bad)
    return problems


def _cell_text(value: object, fmt: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.strftime(fmt) if fmt else value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "Y" if value else "N"
    text = str(value)
    return text if text != "" else None


def _read_parquet(path: Path, date_formats: dict[str, str]) -> ExtractFile:
    try:
        frame = pl.read_parquet(path)
    except Exception:
        raise FileRefused("the file could not be read as Parquet") from None
    header = list(frame.columns)
    _check_header(header)
    exprs = []
    for name in header:
        dtype = frame.schema[name]
        fmt = date_formats.get(normalise_header(name))
        cell = column(header, name)
        if dtype.is_temporal() and fmt:
            exprs.append(cell.dt.strftime(fmt).alias(name))
        elif dtype == pl.Float64 or dtype == pl.Float32:
            exprs.append(
                pl.when(cell == cell.round(0))
                .then(cell.cast(pl.Int64, strict=False).cast(pl.String))
                .otherwise(cell.cast(pl.String))
                .alias(name)
            )
        else:
            exprs.append(cell.cast(pl.String).alias(name))
    frame = frame.select(exprs).with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    return ExtractFile(header=header, frame=frame)


def _read_xlsx(path: Path, date_formats: dict[str, str]) -> ExtractFile:
    import openpyxl

    try:
        # a formula is read as the text it is, never as a value a spreadsheet worked out: a cell
        # typed "=see minutes" is what its author wrote, and a contract refuses or keeps it as text
        book = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except Exception:
        raise FileRefused("the file could not be read as an XLSX workbook") from None
    try:
        properties = book.properties
        saved_by = (properties.lastModifiedBy or properties.creator or "").strip() or None
        saved_at = properties.modified.replace(tzinfo=None) if properties.modified else None
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        try:
            header_cells = next(rows)
        except StopIteration:
            raise FileRefused("the first sheet is empty") from None
        header = [str(c) if c is not None else "" for c in header_cells]
        while header and header[-1] == "":
            header.pop()
        _check_header(header)
        formats = [date_formats.get(normalise_header(h)) for h in header]
        records, numbers, number = [], [], 0
        for cells in rows:
            number += 1  # the sheet's row under its header, empty or not
            values = list(cells[: len(header)]) + [None] * max(0, len(header) - len(cells))
            if all(v is None for v in cells):
                continue  # an empty sheet row is formatting, not a record
            records.append([_cell_text(v, f) for v, f in zip(values, formats)])
            numbers.append(number)
    finally:
        book.close()
    frame = pl.DataFrame(
        {name: [r[i] for r in records] for i, name in enumerate(header)},
        schema={name: pl.String for name in header},
    )
    # columns by position: a header may read as a Polars pattern (`*`)
    frame = pl.DataFrame([pl.Series(ROW, numbers, dtype=pl.Int64), *frame.get_columns()])
    return ExtractFile(header=header, frame=frame, saved_by=saved_by, saved_at=saved_at)
