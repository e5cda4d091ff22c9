"""Reading and writing example files.

An example is a plain ``dict[str, Any]``; its gold label is the string under ``"label"``.
Files are JSON Lines (``.jsonl`` / ``.json``: one object per line), CSV or TSV (a header
row names the columns). TSV is read as GLUE's readers do: no quoting, a ``"`` is literal text
and every line is one row. CSV follows RFC 4180: a quoted field may span lines, and a reader
that merges lines into one row, or drops a row, logs a warning naming the file and lines; a
quote never closed is an error naming the line it opens on. Text reads the same whatever the
platform's line ends (``\n``, ``\r\n``, ``\r``), from files and from stdin (:func:`read_lines`).
Every row comes back with an ``"idx"``: the file's own when it has one, else the row's 0-based
position among the data rows, so error messages and predictions can point back at it;
:func:`read_numbered_examples` also gives the line each row starts on.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

from softprompt.atomic import atomic_write_text
from softprompt.errors import ConfigError, DataError

FORMATS = ("jsonl", "json", "csv", "tsv")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_LINE_END = re.compile(r"\r\n|\r|\n")

log = logging.getLogger(__name__)


def read_lines(stream, where: str = "<stdin>") -> list[str]:
    """The non-blank lines of a text stream (e.g. ``sys.stdin``), without their line ends.

    ``\n``, ``\r\n`` and ``\r`` all end a line, so a file written on any platform reads the
    same; a leading byte-order mark is dropped. Blank lines are skipped with a warning naming
    them (``where:LINE``), since outputs then no longer pair with input lines one to one.
    """
    return [line for _, line in read_numbered_lines(stream, where)]


def read_numbered_lines(stream, where: str = "<stdin>") -> list[tuple[int, str]]:
    """:func:`read_lines`' lines, each as ``(line, text)`` with its 1-based line number in the
    stream (blank lines skipped still count), so a message about one can name ``where:LINE``."""
    text = stream.read()
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    blank = [i for i, line in enumerate(lines, start=1) if not line.strip()]
    if blank:
        log.warning("%s: skipped %d blank line(s) at line(s) %s", where, len(blank), _line_list(blank))
    return [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]


def _line_list(numbers: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(map(str, numbers[:most]))
    return shown + (f" and {len(numbers) - most} more" if len(numbers) > most else "")


def label_to_str(value: Any) -> Any:
    """Return a label as a string: ``1 -> "1"``, ``True -> "true"``; other values unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def example_ref(example: Mapping[str, Any]) -> str:
    """``" (example idx=3)"`` when the example has an idx, else ``""``; for error messages."""
    idx = example.get("idx") if isinstance(example, Mapping) else None
    return f" (example idx={idx})" if idx is not None else ""


def read_examples(
    path: str | os.PathLike,
    format: str | None = None,
    field_map: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Read the examples of one file.

    ``format``: one of ``jsonl``, ``json`` (both JSON Lines), ``csv``, ``tsv``; by default
    taken from the file's suffix. ``field_map`` maps our field name to the file's column,
    e.g. ``{"text": "sentence", "label": "sentiment"}``; other columns keep their names.
    A label that is a number or a bool becomes a string. ``limit`` keeps the first N rows.
    Raises :class:`DataError` naming the file and 1-based line of a malformed row.
    """
    return [row for _, row in read_numbered_examples(path, format, field_map, limit)]


def read_numbered_examples(
    path: str | os.PathLike,
    format: str | None = None,
    field_map: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """:func:`read_examples`' rows, each as ``(line, row)`` with the 1-based line of the file the
    row starts on, so a later check of the row (:meth:`softprompt.tasks.task.Task.read_file`) can
    name ``FILE:LINE``."""
    path = Path(path)
    if not path.is_file():  # before its format: a missing file.txt is missing, not of an unknown format
        what = "is a folder, not a file" if path.is_dir() else "not found"
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(f"data file {what}: {path}{where}; check the path")
    fmt = _resolve_format(path, format)
    field_map = check_field_map(field_map)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a whole number >= 0 or None, got {limit!r}")
    rows: list[tuple[int, dict[str, Any]]] = []
    if limit == 0:
        return rows
    reader = _jsonl_rows(path) if fmt == "jsonl" else _delimited_rows(path, fmt, field_map)
    for line_no, raw in reader:
        where = f"{path}:{line_no}"
        row = apply_field_map(raw, field_map, where)
        if "label" in row:
            row["label"] = label_to_str(row["label"])
        row.setdefault("idx", len(rows))
        rows.append((line_no, row))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def write_examples(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines (UTF-8), atomically: readers never see half a file."""
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"row {i} is a {type(row).__name__}, not a dict; cannot write {path}")
        try:
            lines.append(json.dumps(dict(row), ensure_ascii=False) + "\n")
        except (TypeError, ValueError) as err:
            raise DataError(f"row {i} cannot be written as JSON to {path}: {err}") from err
    atomic_write_text(path, "".join(lines))


def _resolve_format(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ConfigError(f"unknown data format {format!r}; supported: {', '.join(FORMATS)}")
        return "jsonl" if fmt == "json" else fmt
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; supported: "
            f"{', '.join(_SUFFIX_FORMATS)}: rename it (or link it) with one of those suffixes, which is how the "
            f"command line tells the format (in Python, pass format=, one of {', '.join(FORMATS)})"
        )
    return fmt


def check_field_map(field_map: Mapping[str, str] | None) -> dict[str, str]:
    if not field_map:
        return {}
    if not isinstance(field_map, Mapping):
        raise ConfigError(f"field_map must map our field name to the file's, got {field_map!r}")
    for ours, theirs in field_map.items():
        if not (isinstance(ours, str) and ours and isinstance(theirs, str) and theirs):
            raise ConfigError(
                f"field_map entry {ours!r}: {theirs!r} must map a field name to a column name, "
                'e.g. {"text": "sentence"} (--field-map text=sentence)'
            )
    return dict(field_map)


def apply_field_map(row: dict[str, Any], field_map: Mapping[str, str], where: str,
                    optional: Collection[str] = ()) -> dict[str, Any]:
    """``row`` with the columns ``field_map`` names renamed to our field names (``{ours: theirs}``);
    :class:`DataError` naming ``where`` if a mapped column is missing, unless its field is one of
    ``optional`` (e.g. ``"label"`` for inputs to predict), which is then left out."""
    if not field_map:
        return row
    field_map = {ours: theirs for ours, theirs in field_map.items() if ours not in optional or theirs in row}
    missing = [theirs for theirs in field_map.values() if theirs not in row]
    if missing:
        raise DataError(
            f"{where}: the field map needs column(s) {', '.join(map(repr, missing))}, but the "
            f"row has {', '.join(map(repr, row))}; fix --field-map (ours=theirs)"
        )
    out = {k: v for k, v in row.items() if k not in field_map}
    for ours, theirs in field_map.items():
        out[ours] = row[theirs]
    sources = set(field_map.values()) - set(field_map)
    return {k: v for k, v in out.items() if k not in sources}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    line_no = 0
    with open(path, encoding="utf-8-sig") as fh:
        try:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield line_no, _parse_json_line(line, f"{path}:{line_no}", line_no)
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{line_no + 1}: not UTF-8 text ({err.reason})") from err


def _parse_json_line(line: str, where: str, line_no: int) -> dict[str, Any]:
    hint = ""
    if line_no == 1 and line.lstrip().startswith("["):
        hint = "; this looks like one JSON array: write one object per line (JSON Lines)"
    value = json_line(line, where, f"each line must be one JSON object{hint}")
    if not isinstance(value, dict):
        raise DataError(
            f"{where}: expected a JSON object ({{...}}), got a JSON {_json_type(value)}{hint}"
        )
    return value


def json_line(line: str, where: str, advice: str) -> Any:
    """The JSON value on one line of a JSON Lines file. The line end is dropped before parsing, so
    the column of an error counts within this line: a line cut short (``{"label": ``) is named at
    its end, not at column 1 of a line that does not exist. Raises :class:`DataError`
    ``"{where}: invalid JSON (<what> at column N); {advice}"``."""
    text = line.rstrip("\r\n")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        end = ", the end of the line" if err.pos >= len(text.rstrip()) else ""
        raise DataError(f"{where}: invalid JSON ({err.msg} at column {err.colno}{end}); {advice}") from err


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _delimited_rows(
    path: Path, fmt: str, field_map: Mapping[str, str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a CSV (RFC 4180 quoting, strict) or TSV (no quoting: quotes are literal text)."""
    if fmt == "tsv":
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    else:
        dialect = {"delimiter": ",", "strict": True}
    merged: list[str] = []
    dropped: list[int] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, **dialect)
        header: list[str] | None = None
        last_line = 0
        try:
            for cells in reader:
                line_no, last_line = last_line + 1, reader.line_num
                if last_line > line_no:
                    merged.append(f"{line_no}-{last_line}")
                    cells = [_LINE_END.sub("\n", cell) for cell in cells]
                if not any(cell.strip() for cell in cells):
                    if cells:  # a row of empty cells, not an empty line
                        dropped.append(line_no)
                    continue
                if header is None:
                    header = _check_header(cells, path, line_no, field_map)
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}:{line_no}: expected {len(header)} columns "
                        f"({', '.join(header)}), found {len(cells)}; {_column_advice(fmt, line_no, last_line)}"
                    )
                yield line_no, dict(zip(header, cells))
        except csv.Error as err:
            if "unexpected end of data" in str(err):
                raise DataError(
                    f"{path}:{last_line + 1}: a quote opened on this line is never closed, so lines "
                    f"{last_line + 1}-{reader.line_num} would be read as one field; close or double "
                    "the quote (\"\" inside a quoted field)"
                ) from err
            raise DataError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({err})") from err
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{last_line + 1}: not UTF-8 text ({err.reason})") from err
    if header is None:
        raise DataError(f"{path}: empty file; a {fmt.upper()} file needs a header row naming its columns")
    if merged:
        log.warning("%s: lines %s were each read as one row (a quoted field spans line breaks); "
                    "check the quotes if that is not meant", path, _line_list(merged))
    if dropped:
        log.warning("%s: skipped %d row(s) with every cell empty, at line(s) %s", path, len(dropped),
                    _line_list(dropped))


def _column_advice(fmt: str, first: int, last: int) -> str:
    if fmt == "tsv":
        return "a TSV field cannot hold a tab or a line break (quotes are read as text)"
    advice = "quote fields that contain the delimiter ',' or a line break"
    if last > first:
        advice += f"; lines {first}-{last} were read as one row: check for an unmatched quote there"
    return advice


def _check_header(cells: list[str], path: Path, line_no: int, field_map: Mapping[str, str]) -> list[str]:
    header = [cell.strip() for cell in cells]
    if any(not name for name in header) or len(set(header)) != len(header):
        raise DataError(
            f"{path}:{line_no}: the header row must name every column once, got {header}; "
            "the first row of a CSV/TSV file is its header"
        )
    missing = [theirs for theirs in field_map.values() if theirs not in header]
    if missing:
        raise DataError(
            f"{path}:{line_no}: the field map needs column(s) {', '.join(map(repr, missing))}, "
            f"but the header has {', '.join(map(repr, header))}; fix --field-map (ours=theirs)"
        )
    return header
