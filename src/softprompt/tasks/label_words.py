"""Label-word lists read from and written to files (KPT's released format and CSV/JSON).

KPT (Hu et al., ACL 2022, "Knowledgeable Prompt-tuning") releases one list per task: a ``.txt``
file whose line i holds the words of the task's i-th label, comma-separated, the class name
first (Yahoo's as JSON, ``{label: [words]}``). :func:`read_label_words` reads those and the same
shapes from a user's file; :func:`write_label_words` writes KPT's ``.txt`` format back.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ConfigError

FORMATS = (".txt", ".csv", ".json")


@dataclass
class LabelWords:
    """Words per label, as read: ``words`` maps each label (in the verbalizer's order) to its
    words, stripped, each once, the class name first; ``repeated`` maps a label to the words its
    list gave more than once (and how often), collapsed here; ``source`` is the file read."""

    words: dict[str, list[str]]
    repeated: dict[str, dict[str, int]] = field(default_factory=dict)
    source: str | None = None

    def counts(self) -> dict[str, int]:
        """Words per label."""
        return {label: len(ws) for label, ws in self.words.items()}


def read_label_words(path: str | Path, labels: Sequence[str]) -> LabelWords:
    """Read the label words of ``path`` for a task whose verbalizer has ``labels`` (in order).

    Formats by extension: ``.txt`` (line i = the words of ``labels[i]``, comma-separated, blank
    lines skipped: KPT's format), ``.csv`` (one row per label: ``label,word,word,...``),
    ``.json`` (``{label: [words]}``, or a list of word lists in label order). Words are stripped;
    words of several tokens ("sci fi") are kept whole; a word repeated within a label is kept once
    and counted in :attr:`LabelWords.repeated`. Raises :class:`ConfigError` for a missing or
    unreadable file, an unknown extension, a positional file whose line count differs from the
    labels', a named file missing one of ``labels`` or naming a label the task lacks, or a label
    left without words.
    """
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ConfigError(f"--label-words-file {p}: unknown format {p.suffix!r}; use one of {', '.join(FORMATS)}")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--label-words-file {p} cannot be read ({exc.strerror or exc}); check the path") from exc
    labels = list(labels)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        named = _positional([line.split(",") for line in text.splitlines() if line.strip()], labels, p)
    elif suffix == ".csv":
        rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
        named = _named({row[0].strip(): row[1:] for row in rows}, labels, p)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--label-words-file {p} is not valid JSON ({exc}); fix the file") from exc
        if isinstance(data, Mapping):
            named = _named(data, labels, p)
        elif isinstance(data, list):
            named = _positional(data, labels, p)
        else:
            raise ConfigError(f"--label-words-file {p} must hold {{label: [words]}} or a list of word lists")
    words, repeated = {}, {}
    for label, given in named.items():
        if isinstance(given, str) or not isinstance(given, Sequence):
            raise ConfigError(f"--label-words-file {p}: the words of label {label!r} must be a list, got {given!r}")
        kept: list[str] = []
        counts: dict[str, int] = {}
        for word in given:
            word = str(word).strip()
            if not word:
                continue
            counts[word] = counts.get(word, 0) + 1
            if counts[word] == 1:
                kept.append(word)
        if not kept:
            raise ConfigError(f"--label-words-file {p}: label {label!r} has no words; give at least its class name")
        words[label] = kept
        extra = {w: n for w, n in counts.items() if n > 1}
        if extra:
            repeated[label] = extra
    return LabelWords(words=words, repeated=repeated, source=str(p))


def write_label_words(path: str | Path, words: Mapping[str, Sequence[str]]) -> Path:
    """Write ``words`` (label -> words, in label order, class name first) in the format the path's
    extension names, as :func:`read_label_words` reads it back: ``.json`` ``{label: [words]}``,
    ``.csv`` one row ``label,word,...`` per label, else KPT's ``.txt`` (one comma-separated line
    per label, in label order). Raises :class:`ConfigError` for a word holding a comma or line
    break in ``.txt`` (the format cannot hold them). Written atomically. Returns the path."""
    import csv
    import io
    import json

    from ..atomic import atomic_write_text

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        text = json.dumps({label: list(ws) for label, ws in words.items()}, indent=1, ensure_ascii=False) + "\n"
    elif suffix == ".csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([label, *ws] for label, ws in words.items())
        text = buf.getvalue()
    else:
        lines = []
        for label, ws in words.items():
            bad = [w for w in ws if "," in w or "\n" in w]
            if bad:
                raise ConfigError(f"label {label!r}: words {bad} hold a comma or line break, which the .txt format "
                                  "cannot hold; write a .json file instead")
            lines.append(",".join(ws))
        text = "\n".join(lines) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, text)
    return p


def _positional(lines: list, labels: list[str], p: Path) -> dict[str, list]:
    if len(lines) != len(labels):
        raise ConfigError(
            f"--label-words-file {p} has {len(lines)} lists of words but the task has {len(labels)} labels "
            f"({', '.join(labels)}); line i must hold the words of the i-th label, or write a .json "
            "({label: [words]}) or .csv (label,word,word,...) file that names each label"
        )
    return dict(zip(labels, lines))


def _named(data: Mapping, labels: list[str], p: Path) -> dict[str, list]:
    data = {str(k).strip(): v for k, v in data.items()}
    unknown = [k for k in data if k not in labels]
    missing = [label for label in labels if label not in data]
    if unknown or missing:
        parts = ([f"names labels the task lacks: {unknown}"] if unknown else []) + \
                ([f"lacks words for labels {missing}"] if missing else [])
        raise ConfigError(f"--label-words-file {p} {' and '.join(parts)}; the task's labels are {labels}: "
                          "name each of them once (or pass --label-words to change the task's labels)")
    return {label: data[label] for label in labels}
