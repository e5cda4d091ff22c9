"""From examples to token ids: render the template, fit it into the context, tokenise the words.

Truncation follows the policy of :mod:`softprompt.truncation` (fields cut longest-first, a token at
a time, to exact prefixes of their text; rows and tokens cut are counted). Label words are
tokenised in context, as :mod:`softprompt.answer_tokens` states: the ids scored for a word are
exactly those of the natural text "context + word", and words of two labels that come out as the
same ids are refused (the model could not tell those labels apart).

Tokenisation is lazy (per batch), not an eager pass over the whole data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .truncation import fit

MIN_TEXT_TOKENS = 8
"""Tokens of text a row needs beside the prompt, special tokens and its longest label word."""


@dataclass
class EncodedBatch:
    """A batch of rows ready for a backbone.

    ``context[b]``: the row's token ids (no special tokens; for masked LMs one mask id marks the
    answer slot at ``mask_pos[b]``). ``words[b][w]``: token ids of candidate word ``w`` of row
    ``b``; ``word_label[b][w]`` its label index and ``word_weight[b][w]`` its weight.
    ``shared_words``: every row has the same candidate words and labels (a fixed verbalizer); their
    ids may still differ between rows whose contexts end differently. ``gold[b]``: gold label
    index, or None for unlabelled rows. ``truncated``: rows cut to fit, ``truncated_tokens``: tokens
    cut in all. ``context_text[b]``: the text the row's context was tokenised from (after the cut;
    for a masked LM, the text before the answer slot).
    """

    context: list[list[int]]
    words: list[list[list[int]]]
    word_label: list[list[int]]
    word_weight: list[list[float]]
    label_names: list[list[str]]
    gold: list[int] | None
    shared_words: bool
    mask_pos: list[int] = field(default_factory=list)
    truncated: int = 0
    truncated_tokens: int = 0
    context_text: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.context)

    def select(self, rows: list[int]) -> "EncodedBatch":
        """The sub-batch of ``rows`` (in that order)."""
        return EncodedBatch(
            context=[self.context[r] for r in rows], words=[self.words[r] for r in rows],
            word_label=[self.word_label[r] for r in rows], word_weight=[self.word_weight[r] for r in rows],
            label_names=[self.label_names[r] for r in rows],
            gold=None if self.gold is None else [self.gold[r] for r in rows], shared_words=self.shared_words,
            mask_pos=[self.mask_pos[r] for r in rows] if self.mask_pos else [], truncated=0,
            context_text=[self.context_text[r] for r in rows] if self.context_text else [],
        )

    @property
    def single_token(self) -> bool:
        """True when all rows have the same candidates and every word of every row is one token
        (each row's own ids: the single-position fast path reads them per row)."""
        return self.shared_words and all(len(w) == 1 for ws in self.words for w in ws)

    def gold_words(self) -> list[list[int]]:
        """Token ids of each row's gold label (its first word): ``[batch][tokens]``."""
        if self.gold is None:
            raise ConfigError("these rows carry no labels")
        out = []
        for b, g in enumerate(self.gold):
            out.append(self.words[b][self.word_label[b].index(g)])
        return out


def encode(backbone, task, examples: Sequence[Mapping[str, Any]], prompt_length: int = 0,
           with_labels: bool = True, max_length: int | None = None) -> EncodedBatch:
    """Encode ``examples`` of ``task`` for ``backbone`` with room for ``prompt_length`` vectors,
    in at most ``max_length`` tokens, prompt included (default, and never more than:
    ``backbone.max_length``).

    Raises :class:`ConfigError` when the context leaves too little room, or when words of two
    labels of a fixed label set tokenise to the same ids after the template.
    """
    template = task.template
    mask_token = backbone.mask_token
    if backbone.family == "masked" and not template.has_mask:
        template = template.with_mask()
    verbalizer = task.verbalizer
    length_cache: dict[str, int] = {}
    context = backbone.max_length if max_length is None else min(backbone.max_length, max_length)

    def word_length(word: str) -> int:  # an estimate, for the budget; the exact ids come in context
        if word not in length_cache:
            length_cache[word] = len(backbone.tokenize(verbalizer.prefix + word))
        return length_cache[word]

    contexts, words, labels, weights, names, golds, mask_pos, texts = [], [], [], [], [], [], [], []
    truncated = cut_tokens = 0
    for ex in examples:
        cands = verbalizer.candidates(ex)
        row_words, row_labels, row_weights = [], [], []
        label_weights = getattr(verbalizer, "weights", None) if verbalizer.is_fixed else None
        for li, ws in enumerate(cands):
            for wi, w in enumerate(ws):
                row_words.append(w)
                row_labels.append(li)
                row_weights.append(label_weights[li][wi] if label_weights else 1.0 / len(ws))
        longest_word = max(word_length(w) for w in row_words)
        budget = context - prompt_length - backbone.n_special - longest_word
        if budget < MIN_TEXT_TOKENS:
            raise ConfigError(
                f"the model's context ({context} tokens) leaves {budget} tokens for text after a "
                f"{prompt_length}-vector prompt: raise --max-length, or use a shorter prompt (softprompt train --prompt-length N)"
            )
        cut = fit(backbone, template, ex, mask_token, budget)
        truncated += cut.cut_tokens > 0
        cut_tokens += cut.cut_tokens
        before, after = template.render_around_mask(ex, overrides=cut.overrides)
        before = before[cut.head_chars:]
        ids, word_ids, m = backbone.answer_ids(before, after, row_words, verbalizer.prefix)
        row_names = list(verbalizer.label_names(ex))
        _check_distinct(backbone, verbalizer, row_names, row_words, row_labels, word_ids)
        if m is not None:
            mask_pos.append(m)
        contexts.append(ids)
        words.append(word_ids)
        labels.append(row_labels)
        weights.append(row_weights)
        names.append(row_names)
        texts.append(before)
        if with_labels:
            golds.append(verbalizer.gold_index(ex))
    return EncodedBatch(
        context=contexts, words=words, word_label=labels, word_weight=weights, label_names=names,
        gold=golds if with_labels else None, shared_words=verbalizer.is_fixed, mask_pos=mask_pos,
        truncated=truncated, truncated_tokens=cut_tokens, context_text=texts,
    )


def label_word_ids(backbone, task) -> list[list[list[int]]]:
    """Ids of each label's words as scored after ``task``'s template, ``[label][word][tokens]``,
    for a fixed verbalizer (each field filled with a placeholder word: the ids of a word depend
    only on how the context ends). Raises as :func:`encode` does for labels the model cannot tell
    apart."""
    verbalizer = task.verbalizer
    if not verbalizer.is_fixed:
        raise ConfigError("label word ids need a fixed label set; this task's candidates come with each row")
    placeholder = {f: "x" for f in task.template.fields}
    batch = encode(backbone, task, [placeholder], with_labels=False)
    out: list[list[list[int]]] = [[] for _ in verbalizer.labels]
    for ids, li in zip(batch.words[0], batch.word_label[0]):
        out[li].append(ids)
    return out


def _check_distinct(backbone, verbalizer, names, words, owners, word_ids) -> None:
    """Refuse two labels of a fixed label set whose words come out as the same token ids (the
    model sees one word). Per-row choices (COPA-style) are not refused: the task's data, not its
    setup, brings them."""
    if not verbalizer.is_fixed:
        return
    seen: dict[tuple[int, ...], int] = {}
    for i, ids in enumerate(word_ids):
        j = seen.setdefault(tuple(ids), i)
        if owners[j] == owners[i] or words[j] == words[i]:  # the same word in two labels: a shared word
            continue
        tokens = backbone.tokenizer.convert_ids_to_tokens(list(ids))
        raise ConfigError(
            f"labels {names[owners[j]]!r} and {names[owners[i]]!r} cannot be told apart by this model: words "
            f"{words[j]!r} and {words[i]!r} both become token ids {list(ids)} {tokens} after the template, so "
            "every row would score them alike (the tokenizer lowercases, or lacks the words); give one of them "
            "another word with --label-words"
        )
