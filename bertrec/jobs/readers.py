"""Input files of the batch jobs: Parquet, CSV and JSON Lines read as records, and the checks
that decide which rows (ids, texts, histories) a job can use."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bertrec.errors import ConfigError, FileFormatError, NotFoundError

SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A record is the row's values by column, or None with the reason it could not be read.
Record = tuple[dict[str, Any] | None, str | None]


def input_format(path: str | os.PathLike[str]) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file suffix.

    Raises:
        ConfigError: the suffix is not one bertrec reads.
    """
    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its suffix; use one of "
            f"{', '.join(SUFFIX_FORMATS)} (Parquet, CSV with a header row, or JSON Lines)"
        )
    return fmt


def check_input(
    path: str | os.PathLike[str], first_column: str, second_column: str
) -> tuple[Path, str]:
    """The input file and its format, once the two column names it is read by make sense.

    Raises:
        ConfigError: a column name is empty or both are the same; unknown suffix.
        NotFoundError: the file does not exist or is a directory.
        FileFormatError: the file cannot be read (permissions).
    """
    for col in (first_column, second_column):
        if not isinstance(col, str) or not col:
            raise ConfigError(f"column names must be non-empty strings, got {col!r}")
    if first_column == second_column:
        raise ConfigError(f"the two columns must differ, both are {first_column!r}")
    fmt = input_format(path)
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"input file {str(p)!r} does not exist; check the path")
    if not p.is_file():
        raise NotFoundError(f"input {str(p)!r} is not a file; give the file itself")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise FileFormatError(
            f"cannot read input file {str(p)!r}: {exc.strerror or exc}; check its permissions"
        ) from exc
    return p, fmt


def missing_columns(wanted: Sequence[str], have: Sequence[str], where: str) -> None:
    """Raise when a wanted column is not among ``have``.

    Raises:
        ConfigError: naming the first missing column and the columns there are.
    """
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ConfigError(
            f"column {missing[0]!r} is not in {where} (it has: {', '.join(map(str, have))}); "
            "name the right one with the --*-column options"
        )


def repeated_columns(wanted: Sequence[str], have: Sequence[str], where: str) -> None:
    """Raise when a wanted column appears more than once among ``have``: which of them a
    row's value would come from is a guess (Python's CSV reader takes the last).

    Raises:
        ConfigError: naming the repeated column.
    """
    for c in wanted:
        if list(have).count(c) > 1:
            raise ConfigError(
                f"column {c!r} appears {list(have).count(c)} times in the header of {where}; "
                "rename the copies so that each column name is used once"
            )


def parquet_schema(path: Path) -> pa.Schema:
    """The Arrow schema of a Parquet input file.

    Raises:
        FileFormatError: the file is not Parquet, or is truncated or corrupted.
    """
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise _bad_parquet(path, exc) from exc


def _bad_parquet(path: Path, exc: BaseException) -> FileFormatError:
    detail = " ".join(str(exc).split())[:200]  # Arrow's messages span lines; ours is one
    return FileFormatError(
        f"input {str(path)!r} is not a readable Parquet file ({type(exc).__name__}: "
        f"{detail}); it may be truncated or corrupted: write it again"
    )


def check_columns(path: Path, fmt: str, columns: Sequence[str]) -> None:
    """Fail before any output is written when a column is not in the input, or is there
    twice.

    JSON Lines has no header: its first object stands for the file, since a column missing
    there is almost surely a wrong name rather than a bad row.

    Raises:
        ConfigError: a column is missing or repeated.
        FileFormatError: a Parquet file that cannot be read.
    """
    if fmt == "parquet":
        names = parquet_schema(path).names
        missing_columns(columns, names, str(path))
        repeated_columns(columns, names, str(path))
    elif fmt == "csv":
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            header = next(csv.reader(f), [])
        missing_columns(columns, header, str(path))
        repeated_columns(columns, header, str(path))
    else:
        with open(path, "rb") as f:
            first = next((o for line in f if isinstance(o := _json_or_none(line), dict)), None)
        if first is not None:
            missing_columns(columns, list(first), f"the first record of {str(path)!r}")


def input_columns(path: Path, fmt: str) -> list[str]:
    """The input's column names (JSON Lines: the first record's keys)."""
    if fmt == "parquet":
        return list(parquet_schema(path).names)
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            return list(next(csv.reader(f), []))
    with open(path, "rb") as f:
        first = next((o for line in f if isinstance(o := _json_or_none(line), dict)), None)
    return list(first or {})


def check_text_type(path: Path, column: str) -> None:
    """Refuse a Parquet text column that does not hold strings.

    Raises:
        ConfigError: the column is missing or is not a string column.
    """
    t = _column_type(path, column)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        raise ConfigError(
            f"text column {column!r} of {str(path)!r} has type {t}, not string; name the text "
            "column with --text-column"
        )


def check_list_type(path: Path, column: str) -> None:
    """Refuse a Parquet history column that does not hold lists.

    Raises:
        ConfigError: the column is missing or is not a list column.
    """
    t = _column_type(path, column)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise ConfigError(
            f"history column {column!r} of {str(path)!r} has type {t}, not a list of item ids"
        )


def _column_type(path: Path, column: str) -> pa.DataType:
    schema = parquet_schema(path)
    missing_columns([column], schema.names, str(path))
    t = schema.field(column).type
    return t.value_type if pa.types.is_dictionary(t) else t


# -- records --------------------------------------------------------------------------------


def iter_records(path: Path, fmt: str, columns: Sequence[str]) -> Iterator[Record]:
    """Every row of the input, in file order, as ``(values by column, None)`` or, for a row
    that cannot be read at all (JSON Lines only), ``(None, reason)``."""
    readers = {"parquet": _iter_parquet, "csv": _iter_csv, "jsonl": _iter_jsonl}
    return readers[fmt](path, columns)


def _iter_parquet(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise _bad_parquet(path, exc) from exc
    with pf:
        missing_columns(columns, pf.schema_arrow.names, str(path))
        batches = pf.iter_batches(batch_size=65536, columns=list(columns))
        while True:
            # Only the reading is guarded: a corrupted page surfaces here, mid-file.
            try:
                batch = next(batches, None)
            except (OSError, pa.ArrowException) as exc:
                raise _bad_parquet(path, exc) from exc
            if batch is None:
                return
            values = {c: batch.column(c).to_pylist() for c in columns}
            for i in range(batch.num_rows):
                yield {c: values[c][i] for c in columns}, None


def _iter_csv(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    # surrogateescape keeps a bad byte as a lone surrogate, so that one row is rejected
    # instead of the whole file failing to decode.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        missing_columns(columns, list(reader.fieldnames or []), str(path))
        repeated_columns(columns, list(reader.fieldnames or []), str(path))
        for row in reader:
            yield {c: row.get(c) for c in columns}, None


def _iter_jsonl(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                yield None, "blank line"
                continue
            try:
                obj = json.loads(line)
            except UnicodeDecodeError:
                yield None, "line is not valid UTF-8"
                continue
            except json.JSONDecodeError as exc:
                yield None, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(obj, dict):
                yield None, f"line is a JSON {type(obj).__name__}, not an object"
                continue
            yield {c: obj.get(c) for c in columns}, None


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return None


# -- values ---------------------------------------------------------------------------------


def key_type(path: Path, fmt: str, column: str) -> pa.DataType:
    """The Arrow type of an id column: int64 or string, fixed for the whole file.

    CSV has no types: its ids are int64 when every non-empty one is a decimal integer that
    fits in 64 bits (as JSON Lines and Parquet integer ids are), else strings. JSON Lines
    takes the type of the first usable id; Parquet the column's type.

    Raises:
        ConfigError: a Parquet id column is neither integers nor strings.
    """
    if fmt == "csv":
        return pa.int64() if _csv_ints(path, column) else pa.string()
    if fmt == "parquet":
        t = _column_type(path, column)
        if pa.types.is_integer(t):
            return pa.int64()
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return pa.string()
        raise ConfigError(
            f"id column {column!r} of {str(path)!r} has type {t}; ids must be integers or strings"
        )
    with open(path, "rb") as f:
        for line in f:
            obj = _json_or_none(line)
            v = obj.get(column) if isinstance(obj, dict) else None  # bad lines: rejects later
            if isinstance(v, str):
                return pa.string()
            if isinstance(v, int) and not isinstance(v, bool):
                return pa.int64()
    return pa.string()


_INT = re.compile(r"[+-]?\d+")


def _csv_ints(path: Path, column: str) -> bool:
    seen = False
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        for row in csv.DictReader(f):
            value = (row.get(column) or "").strip()
            if not value:
                continue
            if not _INT.fullmatch(value) or not INT64_MIN <= int(value) <= INT64_MAX:
                return False
            seen = True
    return seen


def csv_key(value: Any, kind: pa.DataType) -> Any:
    """A CSV id as the column's type: an int for an int64 id column (see ``key_type``)."""
    if kind == pa.int64() and isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return value


def check_key(value: Any, kind: pa.DataType, what: str) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` is a usable id of Arrow type ``kind``, else a reason."""
    if value is None or value == "":
        return None, f"missing {what}"
    if kind == pa.int64():
        if isinstance(value, bool) or not isinstance(value, int):
            return (
                None,
                f"{what} {value!r} is {type(value).__name__}, not an integer like the others",
            )
        if not INT64_MIN <= value <= INT64_MAX:
            return None, f"{what} {value} does not fit in 64 bits"
        return value, None
    if not isinstance(value, str):
        return None, f"{what} {value!r} is {type(value).__name__}, not a string like the others"
    if not _valid_unicode(value):
        return None, f"{what} is not valid Unicode"
    return value, None


class FirstRows:
    """The row where each id was first written, to reject the rows that repeat it."""

    def __init__(self) -> None:
        self._rows: dict[Any, int] = {}

    def duplicate(self, key: Any, row: int) -> str | None:
        """None the first time ``key`` is seen (it is remembered at ``row``), else the
        reason to reject this row."""
        first = self._rows.setdefault(key, row)
        return None if first == row else f"duplicate id {key!r} (first at row {first})"


def text_reason(text: Any) -> str | None:
    """Why ``text`` cannot be encoded, or None when it can."""
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if not _valid_unicode(text):
        return "text is not valid Unicode (lone surrogate or undecodable bytes)"
    if not text.strip():
        return "text is empty or whitespace only"
    return None


def check_history(value: Any, item_type: pa.DataType) -> tuple[list[Any] | None, str | None]:
    """``(history, None)`` when ``value`` is a list of ids of ``item_type``, else a reason."""
    if value is None:
        return None, "missing history"
    if not isinstance(value, list):
        return None, f"history is {type(value).__name__}, not a list of item ids"
    for j, item in enumerate(value):
        _, reason = check_key(item, item_type, "item id")
        if reason is not None:
            return None, f"history[{j}]: {reason}"
    return value, None


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
