"""Unlabeled text for PPT's self-supervised pre-training: documents split into sentences.

A corpus file is one of

* plain text (any suffix but ``.jsonl`` / ``.json``): documents separated by one or more blank
  lines; the lines of one document are joined with a space;
* JSON Lines (``.jsonl`` / ``.json``): one object per line, the document's text under ``"text"``
  (other keys are ignored, blank lines and blank texts are skipped).

Documents are split into sentences by :func:`split_sentences`, a rule-based splitter (no model,
no download). Its rule: a sentence ends at ``.``, ``!``, ``?`` or ``…`` (a run of them, then
any closing quotes or brackets) followed by white space and a next sentence that starts with an
upper-case letter or a digit (after any opening quote or bracket); except that a ``.`` does not
end a sentence after a known abbreviation (``Mr.``, ``Dr.``, ``e.g.``, ``etc.``, month names, ...;
see ``ABBREVIATIONS``; ``No.``, ``Fig.``, ... only before a number), a single-letter initial (``J. R. R. Tolkien``) or a dotted acronym
(``U.S.``, ``a.m.``). It errs towards fewer, longer sentences: a sentence that really ends in
an abbreviation or acronym is joined to the next one.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from ..tasks.data import json_line

JSONL_SUFFIXES = (".jsonl", ".json")

ABBREVIATIONS = frozenset(
    """mr mrs ms messrs dr prof rev hon gen maj col lt sgt capt cmdr adm gov sen rep pres st mt ft jr sr
    v vs etc cf al approx ca circa dept eds inc ltd corp bros ave blvd univ ph.d
    jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e a.k.a""".split()
)
"""Words (lower case, without the final ``.``) after which a ``.`` never ends a sentence."""

NUMBER_ABBREVIATIONS = frozenset("no nos vol vols pp p fig figs ch sec art rs".split())
"""Words that are abbreviations only before a number (``No. 5``, ``Fig. 2``): ``"it was no. It"`` splits."""

_BOUNDARY = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")
_OPENERS = "\"'`\u201c\u2018([{"
_ACRONYM = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]?$")  # U.S, a.m, e.g (the final "." already cut)


@dataclass(frozen=True)
class Document:
    """One document of a corpus: its sentences in order.

    ``index`` is its 0-based position among the corpus's documents, ``line`` the 1-based line of
    the file where it starts (for messages and for finding it again).
    """

    index: int
    line: int
    sentences: tuple[str, ...]


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences by the rule in the module docstring.

    White space is collapsed to single spaces first; empty pieces are dropped.

    >>> split_sentences("Dr. Smith arrived at 5 p.m. on Monday. He left! Did he? Yes.")
    ['Dr. Smith arrived at 5 p.m. on Monday.', 'He left!', 'Did he?', 'Yes.']
    """
    text = " ".join(str(text).split())
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        following = text[match.end():].lstrip(_OPENERS)
        if not following or not (following[0].isupper() or following[0].isdigit()):
            continue
        if text[match.start()] == "." and _is_abbreviation(text[start:match.start()], following[0].isdigit()):
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _is_abbreviation(before: str, number_follows: bool) -> bool:
    """Whether the word just before a ``.`` (``before`` ends there) makes it an abbreviation's."""
    words = before.split()
    if not words:
        return False
    word = words[-1].lstrip(_OPENERS)
    if len(word) == 1 and word.isupper():  # an initial: "J. R. R. Tolkien"
        return True
    if number_follows and word.lower() in NUMBER_ABBREVIATIONS:
        return True
    return word.lower() in ABBREVIATIONS or bool(_ACRONYM.match(word))


def read_corpus(path: str | os.PathLike) -> list[Document]:
    """Read the documents of a corpus file (plain text or JSON Lines; see the module docstring).

    Raises :class:`DataError` for a missing file, text that is not UTF-8, a malformed JSON line
    or one without a ``"text"`` string (naming ``file:line``), and a corpus with no documents.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise DataError(
            f"corpus file {what}: {path}; give a text file with documents separated by blank lines, "
            'or a .jsonl file with one {"text": ...} object per line'
        )
    blocks = _jsonl_blocks(path) if path.suffix.lower() in JSONL_SUFFIXES else _text_blocks(path)
    documents = []
    for line, text in blocks:
        sentences = split_sentences(text)
        if sentences:
            documents.append(Document(index=len(documents), line=line, sentences=tuple(sentences)))
    if not documents:
        raise DataError(
            f"{path}: the corpus holds no documents (the file is empty or blank); write documents "
            "separated by blank lines, or one JSON object with a \"text\" field per line"
        )
    return documents


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, text)`` of each line, decoded one by one so that an error names its line."""
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{line_no}: not UTF-8 text ({err.reason}); convert the corpus to UTF-8") from err
            yield line_no, text.lstrip("\ufeff") if line_no == 1 else text


def _text_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line, text)`` of each blank-line-separated block of a plain-text file."""
    blocks: list[tuple[int, str]] = []
    lines: list[str] = []
    first = 0
    for line_no, line in _lines(path):
        if line.strip():
            first = first if lines else line_no
            lines.append(line.strip())
        elif lines:
            blocks.append((first, " ".join(lines)))
            lines = []
    if lines:
        blocks.append((first, " ".join(lines)))
    return blocks


def _jsonl_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each JSON object of a JSON Lines file."""
    blocks: list[tuple[int, str]] = []
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        row = json_line(line, where, 'a .jsonl corpus holds one object per line, e.g. '
                                     '{"text": "First sentence. Second sentence."}')
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            found = f"keys {sorted(row)}" if isinstance(row, dict) else f"a JSON {type(row).__name__}"
            raise DataError(
                f"{where}: expected an object with a \"text\" string, found {found}; a plain-text "
                "corpus needs a suffix other than .jsonl/.json"
            )
        if row["text"].strip():
            blocks.append((line_no, row["text"]))
    return blocks


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (recorded with a pre-trained prompt to name its corpus)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
