"""Verbalizers: how labels map to words, and word scores to label scores.

A model scores each candidate word as the continuation ``prefix + word`` of the rendered
template (the prefix is a space for BPE, SentencePiece and WordPiece alike; when the template
ends in whitespace the prefix's space merges into it, and the word's token ids are those it has
in that natural text: :mod:`softprompt.answer_tokens`). A label's score is the weighted
log-mean-exp of its words' log-scores.

Every verbalizer is an :class:`torch.nn.Module` with one interface (``labels``,
``candidates``, ``label_names``, ``gold_index``, ``flat_words``, ``aggregate``, ``to_dict`` /
``from_dict``, ``prefix``, ``is_fixed``, :meth:`Verbalizer.build`,
:meth:`Verbalizer.conditioning`). A method holds its task's verbalizer as a submodule, so the
verbalizer's parameters are trained with the method's and saved with it (tensors
``verbalizer.<name>``):

- :class:`Verbalizer` (``"fixed"``): one fixed label set, one or more words per label with fixed
  weights; with ``shared_words=True`` a word may stand for several labels. No parameters.
- :class:`LearnedWeightsVerbalizer` (``"learned_weights"``): as ``"fixed"``, but each label's word
  weights are a softmax over trained per-word logits, started from the given weights (uniform by
  default): the aggregation of KPT (Hu et al., 2022, "Knowledgeable Prompt-tuning", section 3.3).
- :class:`AnswerVectorVerbalizer` (``"answer_vectors"``): one trained vector per label, scored at
  the answer slot in place of a vocabulary row (WARP, Hambardzumyan et al., 2021), started from the
  mean input embedding of the label name's tokens; handed to the backbone by
  :meth:`Verbalizer.conditioning`.
- :class:`ChoiceVerbalizer` (``"choice"``): each example brings its own candidates (COPA-style).

A new kind subclasses :class:`Verbalizer` and registers in ``VERBALIZER_TYPES`` so a saved output
rebuilds it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from softprompt.errors import ConfigError, DataError, UnknownLabelError, nearest
from softprompt.saved_parts import load_part_tensors, part_tensors
from softprompt.tasks.data import example_ref, label_to_str

_LABEL_WORDS_SYNTAX = '"positive=great,good;negative=terrible,bad"'


class Verbalizer(nn.Module):
    """A fixed label set, each label with its words and their weights.

    ``label_words`` maps a label to a word or a list of words: ``{"positive": "great",
    "negative": ["terrible", "bad"]}``. ``weights`` (optional) gives each label's words
    positive weights; they are relative within a label and normalised to sum to 1 (the
    default is uniform), so no label gains from having more words. ``shared_words``: let one
    word stand for several labels (refused by default: with one word per label, a word given
    twice is a mistake). Raises :class:`ConfigError` for a malformed label set.
    """

    type_name: ClassVar[str] = "fixed"
    is_fixed: ClassVar[bool] = True
    scores_slots: ClassVar[bool] = False
    """True for a verbalizer that scores a batch itself over several answer slots and has its own
    loss (``label_scores_of``, ``training_loss``: PTR's :class:`~softprompt.tasks.rules.RuleVerbalizer`)."""
    choices_field: str | None = None
    """The field of each row that lists its candidate answers (:class:`ChoiceVerbalizer`); None for
    a fixed label set."""

    def __init__(
        self,
        label_words: Mapping[str, str | Sequence[str]],
        weights: Mapping[str, Sequence[float]] | None = None,
        prefix: str = " ",
        shared_words: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(label_words, Mapping) or not label_words:
            raise ConfigError(f"a verbalizer needs at least one label with its words, e.g. {_LABEL_WORDS_SYNTAX}")
        if not isinstance(prefix, str):
            raise ConfigError(f"the verbalizer prefix must be a string, got {prefix!r}")
        if not isinstance(shared_words, bool):
            raise ConfigError(f"shared_words must be true or false, got {shared_words!r}")
        self.prefix = prefix
        self.shared_words = shared_words
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
                if word in seen and (seen[word] == label or not shared_words):
                    where = f"twice for {label!r}" if seen[word] == label else f"for both {seen[word]!r} and {label!r}"
                    advice = ("give it once" if seen[word] == label else
                              "each word stands for one label unless words may be shared: "
                              "--label-words 'shared:LABEL=WORD,...' (shared_words=True in Python)")
                    raise ConfigError(f"word {word!r} is given {where}; {advice}")
                seen[word] = label
            self.labels.append(label)
            self.words.append(words)
        self.given_weights: list[list[float]] = _check_weights(weights, self.labels, self.words)

    # ------------------------------------------------------------------ the label set
    @property
    def weights(self) -> list[list[float]]:
        """Each label's word weights (summing to 1 per label), as floats."""
        return [list(w) for w in self.given_weights]

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
            raise UnknownLabelError(self.unknown_label_message(label, example))
        return labels.index(label)

    def unknown_label_message(self, label: Any, example: Mapping[str, Any] | None = None,
                              data_labels: Sequence[Any] | None = None) -> str:
        """What :meth:`gold_index` says of ``label``, which the verbalizer lacks: the nearest label
        it knows, and a ``--label-words`` example for ``data_labels`` (the data's whole label set,
        where the caller has it; else the known labels and ``label``) that keeps the words of the
        labels it knows and leaves ``WORD`` for the others."""
        labels = self.label_names(example)
        close = next(iter(_same_number(label, labels)), None) or nearest(label, labels)
        hint = f" (did you mean {close!r}?)" if close else ""
        words = dict(zip(labels, self.candidates(example)))
        wanted = list(dict.fromkeys(map(str, data_labels))) if data_labels else [*labels, str(label)]
        shown = ", ".join(map(repr, wanted[:12])) + (f" and {len(wanted) - 12} more" if len(wanted) > 12 else "")
        data = f"; the data's labels are {shown}" if data_labels else ""
        syntax = ";".join(f"{name}={','.join(words.get(name) or ['WORD'])}" for name in wanted[:12])
        return (f"unknown label {label!r}{example_ref(example)}{hint}; the verbalizer knows "
                f"{', '.join(map(repr, labels))}{data}: fix the data's labels or give every label its words, "
                f"e.g. --label-words \"{syntax}\"")

    def flat_words(
        self, example: Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[int], list[float]]:
        """All words flattened (label 0's, then label 1's, ...), their label index, their weight.
        A word shared by two labels appears once for each."""
        words, owners, weights = [], [], []
        for i, (label_words, label_weights) in enumerate(zip(self.words, self.weights)):
            words.extend(label_words)
            owners.extend([i] * len(label_words))
            weights.extend(label_weights)
        return words, owners, weights

    def slot_words(self, label: str) -> dict[str, str] | None:
        """The word each answer slot holds for ``label`` (``{slot: word}``), where the verbalizer
        fills several slots per label and a prediction is explained by them; None here (one word
        list per label, one slot). PTR's rules answer it
        (:meth:`~softprompt.tasks.rules.RuleVerbalizer.slot_words`): ``predict`` prints the words
        of the predicted relation's rule."""
        return None

    def check_rows(self, rows: Sequence[Mapping[str, Any]], where: str = "the data") -> None:
        """Refuse ``rows`` (``where`` names them in the message, e.g. "the training rows") that
        this verbalizer cannot learn from as a whole. Each row's label is checked on its own by
        :meth:`gold_index`; a fixed label set asks nothing of the rows together, so this does
        nothing. PTR's rules override it (every relation of the data has a rule, and no rule is
        for a relation the data never holds: :meth:`~softprompt.tasks.rules.RuleVerbalizer.check_rows`)."""

    # --------------------------------------------------------------------- scores
    def build(self, backbone) -> None:
        """Make what depends on the model (answer vectors); the method holding the verbalizer
        calls it once with its backbone. Nothing to do here."""

    def conditioning(self):
        """What the verbalizer hands the backbone: a :class:`~softprompt.conditioning.Conditioning`
        (empty here: the words are scored with the model's own vocabulary rows)."""
        from softprompt.conditioning import Conditioning

        return Conditioning()

    def log_weights(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``[n_words]`` log-weight of each word of :meth:`flat_words` (normalised within its label)."""
        return torch.tensor(self.flat_words()[2], dtype=dtype, device=device).log()

    def aggregate(self, word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
        """Label log-scores from word log-scores: ``log(sum_w weight_w * exp(score_w))`` per label.

        ``word_scores: [batch, n_words]`` in :meth:`flat_words` order; ``word_label: [n_words]``
        the label index of each word. Returns ``[batch, n_labels]``; differentiable (also in the
        weights of :class:`LearnedWeightsVerbalizer`). With one word per label it returns
        ``word_scores`` unchanged. Raises ``ValueError`` for mismatched shapes.
        """
        n_words = _check_shapes(word_scores, word_label, n_labels)
        log_weights = self.log_weights(word_scores.device, word_scores.dtype)
        if log_weights.numel() != n_words:
            raise ValueError(f"word_scores has {n_words} words, the verbalizer has {log_weights.numel()}")
        return _grouped_logsumexp(word_scores + log_weights.to(word_scores.dtype), word_label, n_labels)

    def forward(self, word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
        """:meth:`aggregate`."""
        return self.aggregate(word_scores, word_label, n_labels)

    # ---------------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        """What rebuilds this verbalizer (JSON); trained parameters are saved as tensors apart."""
        data = {
            "type": self.type_name,
            "label_words": {label: list(words) for label, words in zip(self.labels, self.words)},
            "weights": {label: list(weights) for label, weights in zip(self.labels, self.weights)},
            "prefix": self.prefix,
        }
        if self.shared_words:
            data["shared_words"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verbalizer:
        _check_type(data, cls.type_name)
        if "label_words" not in data:
            raise ConfigError(f"a saved verbalizer needs 'label_words', got keys {sorted(data)}")
        return cls(data["label_words"], weights=data.get("weights"), prefix=data.get("prefix", " "),
                   shared_words=data.get("shared_words", False))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or other.to_dict() != self.to_dict():
            return False
        mine, theirs = dict(self.named_parameters()), dict(other.named_parameters())
        return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    __hash__ = nn.Module.__hash__  # a module is hashed by identity (defining __eq__ would unset it)

    def extra_repr(self) -> str:
        pairs = ", ".join(f"{label}={'|'.join(words)}" for label, words in zip(self.labels, self.words))
        return f"{pairs}; prefix={self.prefix!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class LearnedWeightsVerbalizer(Verbalizer):
    """A fixed label set whose word weights are trained: ``weight = softmax(word_logits)`` over
    each label's words (KPT's aggregation, Hu et al., 2022, section 3.3), started from the given
    ``weights`` (uniform by default). ``word_logits: [n_words]`` in :meth:`flat_words` order is the
    one parameter. Arguments as :class:`Verbalizer`."""

    type_name: ClassVar[str] = "learned_weights"

    def __init__(self, label_words, weights=None, prefix: str = " ", shared_words: bool = False) -> None:
        super().__init__(label_words, weights=weights, prefix=prefix, shared_words=shared_words)
        given = [w for label_weights in self.given_weights for w in label_weights]
        self.word_logits = nn.Parameter(torch.tensor(given, dtype=torch.float32).log())
        self.register_buffer("word_label", torch.tensor(
            [i for i, words in enumerate(self.words) for _ in words]), persistent=False)

    def log_weights(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``[n_words]``: ``log_softmax`` of :attr:`word_logits` within each label; differentiable."""
        logits = self.word_logits
        norm = _grouped_logsumexp(logits[None], self.word_label, len(self.labels))[0]
        return (logits - norm[self.word_label]).to(device=device or logits.device, dtype=dtype)

    @property
    def weights(self) -> list[list[float]]:
        """Each label's current word weights (the softmax of its words' logits), as floats."""
        flat = self.log_weights().detach().exp().tolist()
        out, i = [], 0
        for words in self.words:
            out.append(flat[i: i + len(words)])
            i += len(words)
        return out


class AnswerVectorVerbalizer(Verbalizer):
    """One trained vector per label, scored at the answer slot in place of a vocabulary row
    (WARP, Hambardzumyan et al., 2021).

    ``labels``: the label names; each label's candidate word is its name (used to budget the
    context and to read generations). :meth:`build` makes ``answer_vectors: [n_labels, dim]``
    (float32), each the mean input embedding of ``prefix + name``'s tokens; :meth:`conditioning`
    hands it to the backbone as ``Conditioning.answer_vectors``. Raises :class:`ConfigError` for
    an empty or repeated label, or for :meth:`conditioning` before :meth:`build`.
    """

    type_name: ClassVar[str] = "answer_vectors"

    def __init__(self, labels: Sequence[str], prefix: str = " ") -> None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise ConfigError(f"answer vectors need a list of label names, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"label names must be distinct, got {list(labels)}")
        super().__init__({label: label for label in labels}, prefix=prefix)
        self.register_parameter("answer_vectors", None)  # [n_labels, dim], made by build()

    def build(self, backbone) -> None:
        """Start each label's vector from the mean input embedding of its name's tokens
        (``backbone.embed`` of ``backbone.tokenize(prefix + name)``); kept if already built."""
        if self.answer_vectors is not None:
            return
        rows = []
        with torch.no_grad():
            for label in self.labels:
                ids = backbone.tokenize(self.prefix + label)
                rows.append(backbone.embed(torch.tensor(ids)).float().mean(0).cpu())
        self.answer_vectors = nn.Parameter(torch.stack(rows))

    def conditioning(self):
        """``Conditioning(answer_vectors=[n_labels, dim])``: the backbone scores these vectors."""
        if self.answer_vectors is None:
            raise ConfigError("the answer vectors are not made yet: call build(backbone) first "
                              "(a method holding the verbalizer does)")
        from softprompt.conditioning import Conditioning

        return Conditioning(answer_vectors=self.answer_vectors)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "labels": list(self.labels), "prefix": self.prefix}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnswerVectorVerbalizer:
        _check_type(data, cls.type_name)
        if "labels" not in data:
            raise ConfigError(f"a saved answer-vector verbalizer needs 'labels', got keys {sorted(data)}")
        return cls(data["labels"], prefix=data.get("prefix", " "))


class ChoiceVerbalizer(Verbalizer):
    """Each example has its own candidates: the strings in ``example[choices_field]``.

    The gold label is the text of the correct choice. There is no fixed label set, so
    ``labels``, ``words`` and ``weights`` are empty; ask :meth:`label_names` and
    :meth:`candidates` with the example.
    """

    type_name: ClassVar[str] = "choice"
    is_fixed: ClassVar[bool] = False

    def __init__(self, choices_field: str = "choices", prefix: str = " ") -> None:
        nn.Module.__init__(self)
        if not isinstance(choices_field, str) or not choices_field:
            raise ConfigError(f"choices_field must name a field, got {choices_field!r}")
        if not isinstance(prefix, str):
            raise ConfigError(f"the verbalizer prefix must be a string, got {prefix!r}")
        self.choices_field = choices_field
        self.prefix = prefix
        self.shared_words = False
        self.labels, self.words, self.given_weights = [], [], []

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

    def extra_repr(self) -> str:
        return f"choices_field={self.choices_field!r}, prefix={self.prefix!r}"


VERBALIZER_TYPES: dict[str, type[Verbalizer]] = {
    cls.type_name: cls for cls in (Verbalizer, LearnedWeightsVerbalizer, AnswerVectorVerbalizer, ChoiceVerbalizer)
}


def verbalizer_from_dict(data: Mapping[str, Any]) -> Verbalizer:
    """Rebuild a verbalizer saved with ``to_dict()``, of the class its ``"type"`` names."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    if kind not in VERBALIZER_TYPES:
        raise ConfigError(
            f"unknown verbalizer type {kind!r} in {data!r}; known: {', '.join(VERBALIZER_TYPES)}"
        )
    return VERBALIZER_TYPES[kind].from_dict(data)


def verbalizer_tensors(verbalizer: Verbalizer) -> dict[str, torch.Tensor]:
    """``verbalizer``'s parameters as saved beside a method's: ``{"verbalizer.<name>": tensor}``
    (float32, CPU, contiguous); empty for fixed words and weights."""
    return part_tensors(verbalizer, "verbalizer")


def load_verbalizer_tensors(verbalizer: Verbalizer, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy ``tensors["verbalizer.<name>"]`` into each parameter of ``verbalizer`` (built: see
    :meth:`Verbalizer.build`); other names are ignored. Raises :class:`ConfigError` for a missing
    or wrongly shaped tensor."""
    load_part_tensors(verbalizer, tensors, "verbalizer", ConfigError, "use it with the task it was trained with")


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
