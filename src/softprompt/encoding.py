"""From examples to token ids: render the template, tokenise, truncate by a stated policy.

Truncation policy: when ``leading specials + prompt + rendered template + trailing specials +
longest label word`` exceeds the model's context, the longest *field* of the template is
shortened from its end (whole tokens), never the template's fixed words nor the label, and the
row is counted in :attr:`EncodedBatch.truncated`. If shortening fields is not enough, the rendered
text loses tokens from its start, so the question and answer cue at the end survive.

Tokenisation is lazy (per batch), not an eager pass over the whole data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .tasks.template import field_text


@dataclass
class EncodedBatch:
    """A batch of rows ready for a backbone.

    ``context[b]``: the row's token ids (no special tokens; for masked LMs one mask id marks the
    answer slot at ``mask_pos[b]``). ``words[b][w]``: token ids of candidate word ``w`` of row
    ``b``; ``word_label[b][w]`` its label index and ``word_weight[b][w]`` its weight.
    ``shared_words``: every row has the same candidates (a fixed verbalizer), which allows the
    single-position fast path. ``gold[b]``: gold label index, or None for unlabelled rows.
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
        )

    @property
    def single_token(self) -> bool:
        """True when all rows share their words and every word is one token."""
        return self.shared_words and all(len(w) == 1 for w in self.words[0])

    def gold_words(self) -> list[list[int]]:
        """Token ids of each row's gold label (its first word): ``[batch][tokens]``."""
        if self.gold is None:
            raise ConfigError("these rows carry no labels")
        out = []
        for b, g in enumerate(self.gold):
            out.append(self.words[b][self.word_label[b].index(g)])
        return out


def encode(backbone, task, examples: Sequence[Mapping[str, Any]], prompt_length: int = 0,
           with_labels: bool = True) -> EncodedBatch:
    """Encode ``examples`` of ``task`` for ``backbone`` with room for ``prompt_length`` vectors."""
    template = task.template
    mask_token = backbone.mask_token
    if backbone.family == "masked" and not template.has_mask:
        template = template.with_mask()
    verbalizer = task.verbalizer
    word_cache: dict[str, list[int]] = {}

    def word_ids(word: str) -> list[int]:
        if word not in word_cache:
            ids = backbone.tokenize(verbalizer.prefix + word)
            if not ids:
                raise ConfigError(f"label word {word!r} tokenises to nothing; choose another word")
            word_cache[word] = ids
        return word_cache[word]

    contexts, words, labels, weights, names, golds, mask_pos = [], [], [], [], [], [], []
    truncated = 0
    for ex in examples:
        cands = verbalizer.candidates(ex)
        row_words, row_labels, row_weights = [], [], []
        label_weights = getattr(verbalizer, "weights", None) if verbalizer.is_fixed else None
        for li, ws in enumerate(cands):
            for wi, w in enumerate(ws):
                row_words.append(word_ids(w))
                row_labels.append(li)
                row_weights.append(label_weights[li][wi] if label_weights else 1.0 / len(ws))
        longest_word = max(len(w) for w in row_words)
        budget = backbone.max_length - prompt_length - backbone.n_special - longest_word
        if budget < 8:
            raise ConfigError(
                f"the model's context ({backbone.max_length} tokens) leaves {budget} tokens for text after a "
                f"{prompt_length}-vector prompt: raise --max-length, or use a shorter prompt (softprompt train --prompt-length N)"
            )
        ids, cut = _render_within(backbone, template, ex, mask_token, budget)
        truncated += cut
        if mask_token is not None:
            if ids.count(backbone.mask_token_id) != 1:
                raise ConfigError(f"the template must hold exactly one {{mask}} slot for a masked LM: {template.text!r}")
            mask_pos.append(ids.index(backbone.mask_token_id))
        contexts.append(ids)
        words.append(row_words)
        labels.append(row_labels)
        weights.append(row_weights)
        names.append(list(verbalizer.label_names(ex)))
        if with_labels:
            golds.append(verbalizer.gold_index(ex))
    return EncodedBatch(
        context=contexts, words=words, word_label=labels, word_weight=weights, label_names=names,
        gold=golds if with_labels else None, shared_words=verbalizer.is_fixed, mask_pos=mask_pos,
        truncated=truncated,
    )


def _render_within(backbone, template, example, mask_token, budget: int) -> tuple[list[int], int]:
    """Render and tokenise one example within ``budget`` tokens; returns (ids, 1 if truncated)."""
    overrides: dict[str, str] = {}
    ids = backbone.tokenize(template.render(example, mask_token=mask_token))
    if len(ids) <= budget:
        return ids, 0
    for _ in range(4):
        excess = len(ids) - budget
        if excess <= 0:
            return ids, 1
        values = {f: overrides.get(f, field_text(example, f)) for f in template.fields}
        longest = max(values, key=lambda f: len(values[f]))
        field_ids = backbone.tokenize(values[longest])
        keep = max(1, len(field_ids) - excess)
        overrides[longest] = backbone.tokenizer.decode(field_ids[:keep])
        ids = backbone.tokenize(template.render(example, mask_token=mask_token, overrides=overrides))
    if len(ids) > budget:
        if mask_token is not None and backbone.mask_token_id in ids[: len(ids) - budget]:
            raise ConfigError("the template's fixed text alone is longer than the model's context; shorten the template")
        ids = ids[len(ids) - budget:]
    return ids, 1
