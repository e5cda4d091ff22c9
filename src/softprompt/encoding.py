"""From examples to token ids: render the template, fit it into the context, tokenise the words.

Truncation follows the policy of :mod:`softprompt.truncation` (fields cut longest-first, a token at
a time, to exact prefixes of their text; rows and tokens cut are counted). Label words are
tokenised in context, as :mod:`softprompt.answer_tokens` states: the ids scored for a word are
exactly those of the natural text "context + word", and words of two labels that come out as the
same ids are refused (the model could not tell those labels apart).

Template slots (:mod:`softprompt.tasks.template`) keep their positions: the text between virtual
tokens and answer slots is tokenised piece by piece, so a slot is never merged into a word nor
cut; the text around the answer slot being scored is tokenised with each candidate word in it
(the natural text). A virtual token takes one position, holding a placeholder id
(the backbone's pad id) that the backbone replaces by the vector; an
answer slot not being scored holds one mask id on a masked LM and nothing elsewhere (the word
that fills it goes there at scoring time, see ``slot_word_scores``).

Tokenisation is lazy (per batch), not an eager pass over the whole data set.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ConfigError
from .tasks.template import Segment
from .truncation import fit, token_offsets

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
    cut in all. ``context_text[b]``: the text of the row before the answer slot being scored
    (after the cut; virtual tokens and other slots left out).

    Slots (contract of issue 15, item 2): ``slot_names``: the template's answer slots in reading
    order (``("mask",)`` for ``{mask}``, and for a template without one: the end of the text).
    ``answer_pos[b][k]``: index in ``context[b]`` of slot ``slot_names[k]``, ``[batch, n_slots]``
    (a masked LM: its mask id there; other models: where the word starts, ``context[b][:pos]``
    is the text before it, ``len(context[b])`` at the end). ``word_slot``: the slot ``words`` fill;
    ``mask_pos[b]`` is its position on a model with a mask token (empty otherwise).
    ``virtual[b]``: ``(position in context, name, index)`` of each virtual token of row ``b``.
    ``field_pos[b]``: ``{field: (start, end)}``, the ``[start, end)`` positions in ``context[b]`` of
    the tokens holding each template field's value (its first place in the template; tokens that
    straddle the value's edge count as its own; a field cut to nothing or not found in the ids is
    absent). KnowPrompt reads the entities' and the text's tokens from it.
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
    slot_names: tuple[str, ...] = ("mask",)
    answer_pos: list[list[int]] = field(default_factory=list)
    virtual: list[list[tuple[int, str, int]]] = field(default_factory=list)
    word_slot: str = "mask"
    field_pos: list[dict[str, tuple[int, int]]] = field(default_factory=list)

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
            slot_names=self.slot_names, answer_pos=[self.answer_pos[r] for r in rows] if self.answer_pos else [],
            virtual=[self.virtual[r] for r in rows] if self.virtual else [], word_slot=self.word_slot,
            field_pos=[self.field_pos[r] for r in rows] if self.field_pos else [],
        )

    def slot_positions(self, slot: str) -> list[int]:
        """Each row's position of answer slot ``slot`` in its context: ``[batch]``.

        A batch built without slot positions (by hand) has its one slot at ``mask_pos`` on a masked
        LM, else at the end of the text. Raises :class:`ConfigError` for an unknown slot."""
        if slot not in self.slot_names:
            raise ConfigError(
                f"answer slot {slot!r} is not in this batch's template, whose answer slots are "
                f"{', '.join(self.slot_names)}; name one of those"
            )
        if self.answer_pos:
            k = self.slot_names.index(slot)
            return [pos[k] for pos in self.answer_pos]
        if self.mask_pos:
            return list(self.mask_pos)
        return [len(c) for c in self.context]

    def before_answer(self) -> "EncodedBatch":
        """This batch with each row's context cut at the slot ``words`` fill (what a decoder reads
        before it answers; for generation). Raises :class:`ConfigError` when the template has
        several answer slots (the earlier ones would be read empty)."""
        if len(self.slot_names) > 1:
            raise ConfigError(
                f"this template has answer slots {', '.join(self.slot_names)}: a decoder cannot generate into one "
                "of several; evaluate with --scoring rank"
            )
        cut = self.select(list(range(len(self))))
        positions = self.slot_positions(self.word_slot)
        cut.context = [c[:p] for c, p in zip(self.context, positions)]
        cut.answer_pos = [[p] for p in positions] if self.answer_pos else []
        cut.virtual = [[v for v in vs if v[0] < p] for vs, p in zip(self.virtual, positions)] if self.virtual else []
        cut.field_pos = [{k: v for k, v in fp.items() if v[1] <= p} for fp, p in zip(self.field_pos, positions)]
        return cut

    @property
    def answer_at_end(self) -> bool:
        """True when the slot ``words`` fill is the template's only answer slot and ends every row's
        text: a decoder reads ``context + word``."""
        return len(self.slot_names) == 1 and all(p == len(c) for p, c in zip(self.slot_positions(self.word_slot), self.context))

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


_WORD_LENGTHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {prefix + word: tokens}


def encode(backbone, task, examples: Sequence[Mapping[str, Any]], prompt_length: int = 0,
           with_labels: bool = True, max_length: int | None = None, slot: str | None = None) -> EncodedBatch:
    """Encode ``examples`` of ``task`` for ``backbone`` with room for ``prompt_length`` vectors,
    in at most ``max_length`` tokens, prompt included (default, and never more than:
    ``backbone.max_length``). The verbalizer's words fill answer slot ``slot`` (default: the
    template's only one; a template without one is answered at its end, slot ``"mask"``).
    Virtual tokens count in the budget, one position each.

    Raises :class:`ConfigError` when the context leaves too little room, when words of two
    labels of a fixed label set tokenise to the same ids after the template, or when the template
    has several answer slots and ``slot`` names none of them.
    """
    template = task.template
    mask_token = backbone.mask_token
    if backbone.answer_in_slot and not template.has_mask:
        template = template.with_mask()
    slots = template.answer_slots or ("mask",)
    if slot is None:  # a verbalizer scoring several slots (PTR's rules) names the one its words lay out
        slot = getattr(task.verbalizer, "slot", None)
    if slot is None and len(slots) > 1:
        raise ConfigError(
            f"template {template.text!r} has answer slots {', '.join(slots)}: say which one the label words "
            "fill (encode(..., slot=name))"
        )
    slot = slots[0] if slot is None else slot
    if slot not in slots:
        raise ConfigError(
            f"answer slot {slot!r} is not in template {template.text!r}, whose answer slots are {', '.join(slots)}: "
            f"write {{mask:{slot}}} in --template where that answer goes (PTR: one slot per rule column, in order)"
        )
    verbalizer = task.verbalizer
    length_cache: dict[str, int] = {}
    context = backbone.max_length if max_length is None else min(backbone.max_length, max_length)

    def word_length(word: str) -> int:  # an estimate, for the budget; the exact ids come in context
        if word not in length_cache:
            length_cache[word] = len(backbone.tokenize(verbalizer.prefix + word))
        return length_cache[word]

    # A fixed verbalizer's words and weights are the same for every row: measured once per call, the
    # words in one batched tokenizer call (KPT's 1,380 words cost ~1 s a batch when done per word and row)
    label_weights = getattr(verbalizer, "weights", None) if verbalizer.is_fixed else None
    if verbalizer.is_fixed:
        known = _WORD_LENGTHS.setdefault(backbone.tokenizer, {})
        texts = [verbalizer.prefix + w for w in verbalizer.flat_words()[0]]
        new = [t for t in dict.fromkeys(texts) if t not in known]
        if new:
            if len(known) > 100_000:
                known.clear()
            known.update(zip(new, map(len, backbone.tokenizer(new, add_special_tokens=False)["input_ids"])))
        length_cache.update((t[len(verbalizer.prefix):], known[t]) for t in texts)

    contexts, words, labels, weights, names, golds, mask_pos, texts = [], [], [], [], [], [], [], []
    answer_pos, virtual, field_pos = [], [], []
    truncated = cut_tokens = 0
    for ex in examples:
        ex = task.prepare(ex)  # relation tasks: entities marked in the text, as the task says
        cands = verbalizer.candidates(ex)
        row_words, row_labels, row_weights = [], [], []
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
        cut = fit(backbone, template, ex, mask_token, budget, slot=slot)
        truncated += cut.cut_tokens > 0
        cut_tokens += cut.cut_tokens
        segments = list(template.segments(ex, overrides=cut.overrides))
        if not template.has_mask:
            segments.append(Segment("answer", slot))
        if cut.head_chars:
            h = cut.head_chars
            segments[0] = Segment("text", segments[0].value[h:], fields=tuple(
                (n, max(a - h, 0), max(b - h, 0)) for n, a, b in segments[0].fields))
        ids, word_ids, row_pos, row_virtual, before, row_fields = _layout(backbone, segments, slot, row_words,
                                                                          verbalizer.prefix)
        row_names = list(verbalizer.label_names(ex))
        _check_distinct(backbone, verbalizer, row_names, row_words, row_labels, word_ids)
        if backbone.mask_token_id is not None:
            mask_pos.append(row_pos[slots.index(slot)])
        contexts.append(ids)
        words.append(word_ids)
        labels.append(row_labels)
        weights.append(row_weights)
        names.append(row_names)
        texts.append(before)
        answer_pos.append(row_pos)
        virtual.append(row_virtual)
        field_pos.append(row_fields)
        if with_labels:
            golds.append(verbalizer.gold_index(ex))
    return EncodedBatch(
        context=contexts, words=words, word_label=labels, word_weight=weights, label_names=names,
        gold=golds if with_labels else None, shared_words=verbalizer.is_fixed, mask_pos=mask_pos,
        truncated=truncated, truncated_tokens=cut_tokens, context_text=texts, slot_names=slots,
        answer_pos=answer_pos, virtual=virtual, word_slot=slot, field_pos=field_pos,
    )


def _layout(backbone, segments: list[Segment], slot: str, words: list[str], prefix: str):
    """Token ids of one row's ``segments``: ``(context ids, each word's ids, answer positions in
    slot order, virtual tokens (position, name, index), text before the scored slot, field
    positions {name: (start, end)})``.

    The text right before and after the scored slot goes through ``backbone.slot_ids`` with the
    words (tokenised as their natural text); every other text piece is tokenised alone. A field's
    positions come from the tokenizer's character offsets of the piece holding it
    (:func:`_field_positions`).
    """
    k = next(i for i, s in enumerate(segments) if s.kind == "answer" and s.value == slot)
    before = segments[k - 1].value if k > 0 and segments[k - 1].kind == "text" else ""
    after = segments[k + 1].value if k + 1 < len(segments) and segments[k + 1].kind == "text" else ""
    first, last = k - bool(before), k + bool(after)
    placeholder = [] if backbone.mask_token_id is None else [backbone.mask_token_id]
    ids: list[int] = []
    positions: list[int] = []
    virtual: list[tuple[int, str, int]] = []
    word_ids: list[list[int]] = []
    fields: dict[str, tuple[int, int]] = {}
    text_before = "".join(s.value for s in segments[:k] if s.kind == "text")
    i = 0
    while i < len(segments):
        seg = segments[i]
        if i == first:
            slot_ids, word_ids, pos = backbone.slot_ids(before, after, words, prefix)
            if before:
                _field_positions(backbone.tokenizer, segments[k - 1], slot_ids[:pos], len(ids), fields)
            if after:
                rest = pos + (backbone.mask_token_id is not None)
                _field_positions(backbone.tokenizer, segments[k + 1], slot_ids[rest:], len(ids) + rest, fields)
            positions.append(len(ids) + pos)
            ids += slot_ids
            i = last + 1
            continue
        if seg.kind == "text":
            piece = backbone.tokenize(seg.value)
            _field_positions(backbone.tokenizer, seg, piece, len(ids), fields, plain=True)
            ids += piece
        elif seg.kind == "answer":
            positions.append(len(ids))
            ids += placeholder
        else:
            virtual += [(len(ids) + j, seg.value, j) for j in range(seg.count)]
            ids += [backbone.pad_id] * seg.count
        i += 1
    return ids, word_ids, positions, virtual, text_before, fields


def _field_positions(tokenizer, seg: Segment, piece: list[int], start: int, out: dict[str, tuple[int, int]],
                     plain: bool = False) -> None:
    """Add to ``out`` each field of text segment ``seg`` not placed yet: ``(first, end)`` positions,
    ``start`` plus the indices of the tokens of ``piece`` (``seg``'s ids as encoded) whose character
    offsets overlap the field's value. Nothing is added for a field cut to nothing, or when
    ``piece`` is not the plain tokenisation of ``seg`` (the offsets would not describe it;
    ``plain``: it is, by construction)."""
    todo = [(n, a, b) for n, a, b in seg.fields if n not in out and b > a]
    if not todo:
        return
    if not plain and tokenizer(seg.value, add_special_tokens=False)["input_ids"] != list(piece):
        return  # e.g. the text before an answer slot, whose trailing space merged into the word
    offsets = token_offsets(tokenizer, seg.value)
    for name, a, b in todo:
        hit = [j for j, (x, y) in enumerate(offsets) if x < b and y > a]
        if hit:
            out[name] = (start + hit[0], start + hit[-1] + 1)


def label_word_ids(backbone, task) -> list[list[list[int]]]:
    """Ids of each label's words as scored after ``task``'s template, ``[label][word][tokens]``,
    for a fixed verbalizer (each field filled with a placeholder word: the ids of a word depend
    only on how the context ends). Raises as :func:`encode` does for labels the model cannot tell
    apart."""
    verbalizer = task.verbalizer
    if not verbalizer.is_fixed:
        raise ConfigError("label word ids need a fixed label set; this task's candidates come with each row")
    batch = encode(backbone, task, [task.placeholder()], with_labels=False)
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
