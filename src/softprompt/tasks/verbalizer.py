"""Verbalizers: how labels map to words, and word scores to label scores.

A model scores each candidate word as the continuation ``prefix + word`` of the rendered
template (the prefix is a space for BPE, SentencePiece and WordPiece alike; when the template
ends in whitespace the prefix's space merges into it, and the word's token ids are those it has
in that natural text: :mod:`softprompt.answer_tokens`). A label's score is the weighted
log-mean-exp of its words' log-scores.

- :class:`Verbalizer`: one fixed label set for the task, one or more words per label.
- :class:`ChoiceVerbalizer`: each example brings its own candidates (COPA-style).

A knowledgeable verbalizer (KPT: many weighted words per label, refined and calibrated on
data) fits as a subclass of :class:`Verbalizer`: it fills ``words`` and ``weights`` from its
knowledge base and overrides :meth:`Verbalizer.aggregate` to add calibration; register it in
``VERBALIZER_TYPES`` so a saved prompt rebuilds it.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, ClassVar, Mapping, Sequence

import torch

from softprompt.errors import ConfigError, DataError, UnknownLabelError
from softprompt.tasks.data import example_ref, label_to_str

_LABEL_WORDS_SYNTAX = '"positive=great,good;negative=terrible,bad"'


class Verbalizer:
    """A fixed label set, each label with its words and their weights.

    ``label_words`` maps a label to a word or a list of words: ``{"positive": "great",
    "negative": ["terrible", "bad"]}``. ``weights`` (optional) gives each label's words
    positive weights; they are relative within a label and normalised to sum to 1 (the
    default is uniform), so no label gains from having more words.
    """

    type_name: ClassVar[str] = "fixed"
    is_fixed: ClassVar[bool] = True

    def __init__(
        self,
        label_words: Mapping[str, str | Sequence[str]],
        weights: Mapping[str, Sequence[float]] | None = None,
        prefix: str = " ",
    ) -> None:
        if not isinstance(label_words, Mapping) or not label_words:
            raise ConfigError(f"a verbalizer needs at least one label with its words, e.g. {_LABEL_WORDS_SYNTAX}")
        if not isinstance(prefix, str):
            raise ConfigError(f"the verbalizer prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.labels: list[str] = []
        self.words: list[list[str]] = []
        seen: dict[str, str] = {}
        for label, words in label_words.items():
            if not isinstance(label, str) or not label:
                raise ConfigError(f"verbalizer labels must be non-empty strings, got {label!r}")
            if not isinstance(words, (str, Sequence)):
                raise ConfigError(f"label {label!r} needs a word or a list of words, got {words!r}")
            words = [words] if isinstance(words, str) else list(words)
            if not words:
                raise ConfigError(f"label {label!r} has no words; give at least one")
            for word in words:
                _check_word(word, label, prefix)
                if word in seen:
                    raise ConfigError(
                        f"word {word!r} is given for both {seen[word]!r} and {label!r}; "
                        "each word may stand for one label only, once"
                    )
                seen[word] = label
            self.labels.append(label)
            self.words.append(words)
        self.weights: list[list[float]] = _check_weights(weights, self.labels, self.words)

    def label_names(self, example: Mapping[str, Any] | None = None) -> list[str]:
        return list(self.labels)

    def candidates(self, example: Mapping[str, Any] | None = None) -> list[list[str]]:
        """Words per label, in label order (without the prefix)."""
        return [list(words) for words in self.words]

    def gold_index(self, example: Mapping[str, Any]) -> int:
        """Position of ``example["label"]`` in :meth:`label_names`."""
        label = _gold_label(example)
        labels = self.label_names(example)
        if label not in labels:
            close = _same_number(label, labels) or difflib.get_close_matches(str(label), labels, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownLabelError(
                f"unknown label {label!r}{example_ref(example)}{hint}; the verbalizer knows "
                f"{', '.join(map(repr, labels))}; fix the data's labels or give words for this "
                f"label, e.g. --label-words {_LABEL_WORDS_SYNTAX}"
            )
        return labels.index(label)

    def flat_words(
        self, example: Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[int], list[float]]:
        """All words flattened (label 0's, then label 1's, ...), their label index, their weight."""
        words, owners, weights = [], [], []
        for i, (label_words, label_weights) in enumerate(zip(self.words, self.weights)):
            words.extend(label_words)
            owners.extend([i] * len(label_words))
            weights.extend(label_weights)
        return words, owners, weights

    def aggregate(self, word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
        """Label log-scores from word log-scores: ``log(sum_w weight_w * exp(score_w))`` per label.

        ``word_scores: [batch, n_words]`` in :meth:`flat_words` order; ``word_label: [n_words]``
        the label index of each word. Returns ``[batch, n_labels]``; differentiable. With one
        word per label it returns ``word_scores`` unchanged.
        """
        n_words = _check_shapes(word_scores, word_label, n_labels)
        weights = self.flat_words()[2]
        if len(weights) != n_words:
            raise ValueError(f"word_scores has {n_words} words, the verbalizer has {len(weights)}")
        log_weights = torch.tensor(weights, dtype=word_scores.dtype, device=word_scores.device).log()
        return _grouped_logsumexp(word_scores + log_weights, word_label, n_labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "label_words": {label: list(words) for label, words in zip(self.labels, self.words)},
            "weights": {label: list(weights) for label, weights in zip(self.labels, self.weights)},
            "prefix": self.prefix,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verbalizer:
        _check_type(data, cls.type_name)
        if "label_words" not in data:
            raise ConfigError(f"a saved verbalizer needs 'label_words', got keys {sorted(data)}")
        return cls(data["label_words"], weights=data.get("weights"), prefix=data.get("prefix", " "))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __repr__(self) -> str:
        pairs = ", ".join(f"{label}={'|'.join(words)}" for label, words in zip(self.labels, self.words))
        return f"{type(self).__name__}({pairs}; prefix={self.prefix!r})"


class ChoiceVerbalizer(Verbalizer):
    """Each example has its own candidates: the strings in ``example[choices_field]``.

    The gold label is the text of the correct choice. There is no fixed label set, so
    ``labels``, ``words`` and ``weights`` are empty; ask :meth:`label_names` and
    :meth:`candidates` with the example.
    """

    type_name: ClassVar[str] = "choice"
    is_fixed: ClassVar[bool] = False

    def __init__(self, choices_field: str = "choices", prefix: str = " ") -> None:
        if not isinstance(choices_field, str) or not choices_field:
            raise ConfigError(f"choices_field must name a field, got {choices_field!r}")
        if not isinstance(prefix, str):
            raise ConfigError(f"the verbalizer prefix must be a string, got {prefix!r}")
        self.choices_field = choices_field
        self.prefix = prefix
        self.labels, self.words, self.weights = [], [], []

    def label_names(self, example: Mapping[str, Any] | None = None) -> list[str]:
        if example is None:
            raise ConfigError("a choice verbalizer has no fixed labels: pass the example")
        choices = example.get(self.choices_field) if isinstance(example, Mapping) else None
        if not isinstance(choices, (list, tuple)) or not choices:
            raise DataError(
                f"example{example_ref(example)} needs a non-empty list under "
                f"{self.choices_field!r} (its candidate answers), got {choices!r}"
            )
        names = [str(choice) for choice in choices]
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise DataError(
                f"the choices of example{example_ref(example)} must be distinct, non-empty "
                f"texts, got {names!r}"
            )
        return names

    def candidates(self, example: Mapping[str, Any] | None = None) -> list[list[str]]:
        return [[name] for name in self.label_names(example)]

    def flat_words(
        self, example: Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[int], list[float]]:
        names = self.label_names(example)
        return names, list(range(len(names))), [1.0] * len(names)

    def aggregate(self, word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
        """As :meth:`Verbalizer.aggregate`, with uniform weights over each label's words."""
        _check_shapes(word_scores, word_label, n_labels)
        counts = torch.bincount(word_label, minlength=n_labels).to(word_scores.dtype)
        log_weights = -counts.log()[word_label]
        return _grouped_logsumexp(word_scores + log_weights, word_label, n_labels)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "choices_field": self.choices_field, "prefix": self.prefix}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChoiceVerbalizer:
        _check_type(data, cls.type_name)
        return cls(data.get("choices_field", "choices"), prefix=data.get("prefix", " "))

    def __repr__(self) -> str:
        return f"ChoiceVerbalizer(choices_field={self.choices_field!r}, prefix={self.prefix!r})"


VERBALIZER_TYPES: dict[str, type[Verbalizer]] = {
    Verbalizer.type_name: Verbalizer,
    ChoiceVerbalizer.type_name: ChoiceVerbalizer,
}


def verbalizer_from_dict(data: Mapping[str, Any]) -> Verbalizer:
    """Rebuild a verbalizer saved with ``to_dict()``, of the class its ``"type"`` names."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    if kind not in VERBALIZER_TYPES:
        raise ConfigError(
            f"unknown verbalizer type {kind!r} in {data!r}; known: {', '.join(VERBALIZER_TYPES)}"
        )
    return VERBALIZER_TYPES[kind].from_dict(data)


def parse_label_words(spec: str) -> dict[str, list[str]]:
    """Parse ``"positive=great,good;negative=terrible"`` into ``{label: [words]}``."""
    error = f"cannot read label words {spec!r}: write label=word,word;label=word, e.g. {_LABEL_WORDS_SYNTAX}"
    if not isinstance(spec, str):
        raise ConfigError(error)
    result: dict[str, list[str]] = {}
    for entry in spec.split(";"):
        if not entry.strip():
            continue
        label, sep, words_text = entry.partition("=")
        label = label.strip()
        words = [word.strip() for word in words_text.split(",")]
        if not sep or not label or not all(words):
            raise ConfigError(f"{error} (bad entry {entry.strip()!r})")
        if label in result:
            raise ConfigError(f"{error} (label {label!r} is given twice)")
        result[label] = words
    if not result:
        raise ConfigError(error)
    return result


def _check_word(word: Any, label: str, prefix: str) -> None:
    if not isinstance(word, str) or not word.strip():
        raise ConfigError(f"label {label!r} has an empty word {word!r}; words must be non-empty strings")
    if word != word.strip():
        raise ConfigError(
            f"word {word!r} of label {label!r} has spaces around it; the prefix {prefix!r} is "
            "put before each word for you: write the bare word"
        )


def _check_weights(
    weights: Mapping[str, Sequence[float]] | None, labels: list[str], words: list[list[str]]
) -> list[list[float]]:
    weights = dict(weights or {})
    unknown = [label for label in weights if label not in labels]
    if unknown:
        raise ConfigError(f"weights given for unknown label(s) {unknown}; labels are {labels}")
    result = []
    for label, label_words in zip(labels, words):
        given = weights.get(label)
        if given is None:
            result.append([1.0 / len(label_words)] * len(label_words))
            continue
        given = [float(w) for w in given]
        if len(given) != len(label_words):
            raise ConfigError(
                f"label {label!r} has {len(label_words)} words but {len(given)} weights; "
                "give one weight per word"
            )
        if not all(math.isfinite(w) and w > 0 for w in given):
            raise ConfigError(f"weights of label {label!r} must be positive numbers, got {given}")
        total = sum(given)
        result.append(given if abs(total - 1.0) < 1e-9 else [w / total for w in given])
    return result


def _same_number(label: Any, labels: Sequence[str]) -> list[str]:
    """The labels that write the same number as ``label`` (``"1"`` for ``"1.0"``), if it is one."""
    def number(text: Any) -> float | None:
        try:
            value = float(str(text))
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    value = number(label)
    return [] if value is None else [name for name in labels if number(name) == value]


def _gold_label(example: Mapping[str, Any]) -> Any:
    if not isinstance(example, Mapping) or "label" not in example:
        raise UnknownLabelError(
            f"example{example_ref(example)} has no 'label' field; labelled data needs one "
            "(--field-map label=COLUMN renames a column)"
        )
    return label_to_str(example["label"])


def _check_type(data: Mapping[str, Any], expected: str) -> None:
    if not isinstance(data, Mapping) or data.get("type", expected) != expected:
        raise ConfigError(f"expected a saved verbalizer of type {expected!r}, got {data!r}")


def _check_shapes(word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> int:
    if word_scores.dim() != 2 or word_label.dim() != 1 or word_label.numel() != word_scores.shape[1]:
        raise ValueError(
            f"expected word_scores [batch, n_words] and word_label [n_words], got "
            f"{tuple(word_scores.shape)} and {tuple(word_label.shape)}"
        )
    if word_label.numel() and (int(word_label.min()) < 0 or int(word_label.max()) >= n_labels):
        raise ValueError(f"word_label values must lie in [0, {n_labels}), got {word_label.tolist()}")
    return word_scores.shape[1]


def _grouped_logsumexp(scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
    """``scores: [batch, n_words]`` -> ``[batch, n_labels]``: logsumexp over each label's words."""
    member = word_label.to(scores.device)[:, None] == torch.arange(n_labels, device=scores.device)
    masked = scores[:, :, None].masked_fill(~member, float("-inf"))  # [batch, n_words, n_labels]
    return torch.logsumexp(masked, dim=1)
