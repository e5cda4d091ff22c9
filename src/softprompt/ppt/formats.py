"""PPT's self-supervised pre-training formats (Gu et al., 2021), built from unlabeled documents.

Each format is a softprompt task (template + verbalizer) and a builder that turns documents
(:class:`~softprompt.ppt.corpus.Document`) into labelled examples, deterministically per seed:

* ``pair``: sentence-pair classification, 3 balanced classes, as PPT: sentence 2 is the *next*
  sentence after sentence 1 (label ``next``, word "yes"), another sentence of the same
  document that is not adjacent to it (``same_document``, "maybe"), or a sentence of another
  document (``other_document``, "no"). Every anchor sentence could take any of the three labels
  (it has a next sentence and a non-adjacent one), so its position gives nothing away.
* ``choice``: multiple choice, PPT's next-sentence selection: the true next sentence among
  ``options`` candidates (default 4): one distractor from the same document when it has a
  sentence other than the anchor and its successor, the rest from other documents (one each
  where there are enough). The candidates are the row's ``choices`` and the label is the text
  of the true one, as softprompt's own multiple-choice tasks (COPA); the gold position is
  balanced over the slots.
* ``single``: single-sentence classification with self-supervised labels, standing in for
  PPT's sentiment pseudo-labels (which came from a trained sentiment classifier we do not
  have offline): is this sentence the *first* sentence of its document (``first``, "yes") or a
  later one (``later``, "no")? Balanced classes, labels exact by construction. It asks, like
  sentiment, for a judgement about one sentence as a whole (does it open a topic or continue
  one: a full name versus a pronoun, a definition versus a detail) and needs no word list.
* ``unified``: PPT's unified multiple-choice format: the three above in equal shares, each cast
  as a question with lettered options, answered with the option's letter (the row's ``choices``
  are the letters). The option order of ``pair`` and ``single`` questions is shuffled per row, so
  a prompt cannot learn "A means yes" and has to read the options.

Rows carry their provenance besides the template's fields: ``doc`` / ``position`` of the anchor
sentence (corpus document index, sentence index), and ``doc2`` / ``position2`` (``pair``) or
``sources`` (``choice``: one ``[doc, position]`` per candidate).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..config import PRETRAIN_FORMATS
from ..errors import ConfigError, DataError
from ..tasks.task import Task
from ..tasks.template import Template
from ..tasks.verbalizer import ChoiceVerbalizer, Verbalizer
from .corpus import Document

FORMATS = PRETRAIN_FORMATS  # the names, with pretrain-prompt's --format option (config.py)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

PAIR_QUESTION = "Does sentence 2 follow sentence 1 in the same text?"
SINGLE_QUESTION = "Does a text begin with this sentence?"
CHOICE_QUESTION = "Which sentence comes next?"

PAIR_LABEL_WORDS = {"next": "yes", "same_document": "maybe", "other_document": "no"}
SINGLE_LABEL_WORDS = {"first": "yes", "later": "no"}


@dataclass(frozen=True)
class PPTFormat:
    """A pre-training format: its template and verbalizer (``label_words``, or None for a
    :class:`ChoiceVerbalizer` over the row's ``choices``)."""

    name: str
    template: str
    label_words: dict[str, str] | None
    description: str

    def task(self) -> Task:
        """The softprompt task of this format (named ``ppt_<format>``)."""
        verbalizer = ChoiceVerbalizer("choices") if self.label_words is None else Verbalizer(self.label_words)
        return Task(name=f"ppt_{self.name}", template=Template(self.template), verbalizer=verbalizer,
                    description=self.description)

    @property
    def label_words_spec(self) -> str:
        """The verbalizer as ``--label-words`` text: ``"next=yes;..."``, or ``"choices:choices"`` for
        the multiple-choice formats (each row's candidates are in its ``choices`` field)."""
        if self.label_words is None:
            return "choices:choices"
        return ";".join(f"{label}={word}" for label, word in self.label_words.items())


PPT_FORMATS: dict[str, PPTFormat] = {
    "pair": PPTFormat(
        "pair", "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: " + PAIR_QUESTION + "\nAnswer:",
        PAIR_LABEL_WORDS, "PPT sentence pair: next sentence / same document / other document (yes / maybe / no)"),
    "choice": PPTFormat(
        "choice", "{sentence}\nQuestion: " + CHOICE_QUESTION + "\nAnswer:", None,
        "PPT next-sentence selection: pick the true next sentence among the candidates"),
    "single": PPTFormat(
        "single", "{sentence}\nQuestion: " + SINGLE_QUESTION + "\nAnswer:", SINGLE_LABEL_WORDS,
        "PPT single sentence (stand-in for sentiment pseudo-labels): does a text begin with this sentence?"),
    "unified": PPTFormat(
        "unified", "{context}\nQuestion: {question}\nOptions:\n{options}\nAnswer:", None,
        "PPT unified multiple choice: pair, choice and single questions answered with an option letter"),
}


def get_format(name: str) -> PPTFormat:
    """The format called ``name`` (one of :data:`FORMATS`)."""
    if name not in PPT_FORMATS:
        raise ConfigError(f"unknown PPT format {name!r}; choose one of {', '.join(FORMATS)}")
    return PPT_FORMATS[name]


def build_examples(documents: Sequence[Document], format: str, n: int, seed: int = 0, options: int = 4,
                   where: str = "the corpus") -> list[dict[str, Any]]:
    """``n`` labelled examples of ``format`` from ``documents``, the same for the same ``seed``.

    ``options`` is the number of candidates of a ``choice`` question (also inside ``unified``).
    Raises :class:`DataError`, naming ``where``, when the documents are too few or too short for
    the format (e.g. ``pair`` needs two documents and one of at least three sentences).
    """
    get_format(format)
    if n < 1:
        raise ConfigError(f"the number of examples must be at least 1, got {n}")
    if not 2 <= options <= len(LETTERS):
        raise ConfigError(f"a choice question needs 2 to {len(LETTERS)} options, got {options}")
    rng = random.Random(seed)
    if format != "unified":
        return _BUILDERS[format](list(documents), n, rng, options, where)
    sources = _balanced(("pair", "choice", "single"), n, rng)
    streams = {}
    for source in ("pair", "choice", "single"):  # fixed order: the sub-seeds do not depend on dict order
        sub = random.Random(rng.getrandbits(64))
        count = sources.count(source)
        streams[source] = iter(_BUILDERS[source](list(documents), count, sub, options, where) if count else [])
    return [_as_unified(source, next(streams[source]), rng, idx) for idx, source in enumerate(sources)]


def hold_out(documents: Sequence[Document], share: float, seed: int = 0, minimum: int = 2
             ) -> tuple[list[Document], list[Document]]:
    """Split ``documents`` into ``(train, dev)`` at random (per ``seed``), ``dev`` about ``share``
    of them (at least ``minimum``), so dev examples never reuse a training document."""
    if len(documents) < 2 * minimum:
        raise DataError(
            f"the corpus has {len(documents)} documents: too few to hold out {minimum} for dev examples and keep "
            f"{minimum} for training; give at least {2 * minimum} documents (separated by blank lines)"
        )
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_dev = min(max(minimum, round(len(documents) * share)), len(documents) - minimum)
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return [documents[i] for i in train], [documents[i] for i in dev]


# ----------------------------------------------------------------------------- builders
def _pair_rows(docs: list[Document], n: int, rng: random.Random, options: int, where: str) -> list[dict[str, Any]]:
    anchors = [(d, i) for d in docs for i in range(len(d.sentences) - 1) if _far(d, i)]
    if len(docs) < 2 or not anchors:
        raise _too_small(where, "pair", docs, "at least 2 documents, one of them with at least 3 sentences "
                                             "(for the 'same document, not next' class)")
    pool = _cycle(anchors, rng)
    rows = []
    for label in _balanced(tuple(PAIR_LABEL_WORDS), n, rng):
        d, i = next(pool)
        if label == "next":
            e, j = d, i + 1
        elif label == "same_document":
            e, j = d, rng.choice(_far(d, i))
        else:
            e = _other_document(docs, d, rng)
            j = rng.randrange(len(e.sentences))
        rows.append({"idx": len(rows), "sentence1": d.sentences[i], "sentence2": e.sentences[j], "label": label,
                     "doc": d.index, "position": i, "doc2": e.index, "position2": j})
    return rows


def _choice_rows(docs: list[Document], n: int, rng: random.Random, options: int, where: str) -> list[dict[str, Any]]:
    anchors = [(d, i) for d in docs for i in range(len(d.sentences) - 1)]
    if len(docs) < 2 or not anchors:
        raise _too_small(where, "choice", docs, "at least 2 documents, one of them with at least 2 sentences")
    pool = _cycle(anchors, rng)
    rows = []
    for gold_slot in _balanced(tuple(range(options)), n, rng):
        d, i = next(pool)
        picks = _distractors(docs, d, i, options - 1, rng, where)
        rng.shuffle(picks)
        picks.insert(gold_slot, (d, i + 1))
        rows.append({"idx": len(rows), "sentence": d.sentences[i], "choices": [e.sentences[j] for e, j in picks],
                     "label": d.sentences[i + 1], "doc": d.index, "position": i,
                     "sources": [[e.index, j] for e, j in picks]})
    return rows


def _single_rows(docs: list[Document], n: int, rng: random.Random, options: int, where: str) -> list[dict[str, Any]]:
    long_docs = [d for d in docs if len(d.sentences) >= 2]
    if not long_docs:
        raise _too_small(where, "single", docs, "a document with at least 2 sentences (a first and a later one)")
    firsts = _cycle([(d, 0) for d in long_docs], rng)
    laters = _cycle([(d, i) for d in long_docs for i in range(1, len(d.sentences))], rng)
    rows = []
    for label in _balanced(tuple(SINGLE_LABEL_WORDS), n, rng):
        d, i = next(firsts if label == "first" else laters)
        rows.append({"idx": len(rows), "sentence": d.sentences[i], "label": label, "doc": d.index, "position": i})
    return rows


_BUILDERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "pair": _pair_rows, "choice": _choice_rows, "single": _single_rows,
}
_PROVENANCE = ("doc", "position", "doc2", "position2", "sources")


def _as_unified(source: str, row: dict[str, Any], rng: random.Random, idx: int) -> dict[str, Any]:
    """One row of ``source`` as a lettered multiple-choice question."""
    if source == "pair":
        context, question = f"Sentence 1: {row['sentence1']}\nSentence 2: {row['sentence2']}", PAIR_QUESTION
        texts, answer = list(PAIR_LABEL_WORDS.values()), PAIR_LABEL_WORDS[row["label"]]
        rng.shuffle(texts)
    elif source == "single":
        context, question = row["sentence"], SINGLE_QUESTION
        texts, answer = list(SINGLE_LABEL_WORDS.values()), SINGLE_LABEL_WORDS[row["label"]]
        rng.shuffle(texts)
    else:  # choice: its candidates are already in a balanced random order
        context, question = row["sentence"], CHOICE_QUESTION
        texts, answer = list(row["choices"]), row["label"]
    letters = list(LETTERS[: len(texts)])
    return {"idx": idx, "context": context, "question": question,
            "options": "\n".join(f"({letter}) {text}" for letter, text in zip(letters, texts)),
            "choices": letters, "label": letters[texts.index(answer)], "source": source, "answer": answer,
            **{key: row[key] for key in _PROVENANCE if key in row}}


# ----------------------------------------------------------------------------- helpers
def _balanced(labels: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` labels, each of ``labels`` used equally often (counts differ by at most one), shuffled."""
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _cycle(items: Sequence[Any], rng: random.Random) -> Iterator[Any]:
    """Endless shuffled passes over ``items``: every item is used once before any is used again."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order


def _far(d: Document, i: int) -> list[int]:
    """Positions of ``d`` not adjacent to ``i`` (``|j - i| >= 2``)."""
    return [j for j in range(len(d.sentences)) if abs(j - i) >= 2]


def _other_document(docs: list[Document], d: Document, rng: random.Random) -> Document:
    """A document other than ``d``, uniformly (``docs`` holds ``d`` and at least one other)."""
    while True:
        e = docs[rng.randrange(len(docs))]
        if e.index != d.index:
            return e


def _distractors(docs: list[Document], d: Document, i: int, k: int, rng: random.Random, where: str
                 ) -> list[tuple[Document, int]]:
    """``k`` wrong candidates for the sentence after ``d.sentences[i]``, all texts distinct from each
    other, the anchor and the answer: one from ``d`` (not ``i`` or ``i + 1``) when it has one, the rest
    from other documents, each from a different document while random draws find new ones."""
    taken = {d.sentences[i], d.sentences[i + 1]}
    picks: list[tuple[Document, int]] = []
    same = [j for j in range(len(d.sentences)) if j not in (i, i + 1) and d.sentences[j] not in taken]
    if same and k:
        j = rng.choice(same)
        picks.append((d, j))
        taken.add(d.sentences[j])
    used = {d.index}
    for _ in range(20 * k):
        if len(picks) == k:
            return picks
        e = docs[rng.randrange(len(docs))]
        j = rng.randrange(len(e.sentences))
        if e.index in used or e.sentences[j] in taken:
            continue
        picks.append((e, j))
        used.add(e.index)
        taken.add(e.sentences[j])
    # a small corpus: fewer fresh documents than distractors needed, so take several from one
    rest = [(e, j) for e in docs if e.index != d.index for j in range(len(e.sentences))
            if e.sentences[j] not in taken]
    rng.shuffle(rest)
    for e, j in rest:
        if len(picks) == k:
            break
        if e.sentences[j] not in taken:
            picks.append((e, j))
            taken.add(e.sentences[j])
    if len(picks) < k:
        raise _too_small(where, "choice", docs, f"{k} distinct sentences besides each anchor and its next sentence "
                                               f"(for {k + 1} options; pass fewer options)")
    return picks


def _too_small(where: str, format: str, docs: list[Document], need: str) -> DataError:
    longest = max((len(d.sentences) for d in docs), default=0)
    return DataError(
        f"{where}: too small for the PPT format {format!r}, which needs {need}; it has {len(docs)} document(s), "
        f"the longest with {longest} sentence(s). Give more text (documents separated by blank lines)"
    )
