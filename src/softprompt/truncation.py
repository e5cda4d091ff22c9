"""Truncation: fitting one rendered example into the room the model's context leaves.

Policy, applied only when the rendered template is longer than its ``budget`` of tokens:

1. **Fields, longest first, one unit at a time.** The template's fixed words are never cut.
   Each field is measured in tokens (tokenised alone); its last unit (one token, or the several
   tokens byte-level BPE gives one CJK character or emoji, see :func:`token_units`) is taken from
   whichever field is longest now (on a tie, the later field in the template), and the excess falls
   by that unit's number of tokens, again and again, until the excess is gone or every field is down
   to one unit. Two long fields therefore end within a unit (a token or a character's few tokens) of
   each other, however unequal they started, and the text ends within a unit of the budget.
2. **Exact prefixes.** A field is cut only where the tokenizer's character offsets show no token
   straddling the cut, so the text kept is a byte-exact prefix of the field's original text,
   tokenised as it was: it is never decoded and re-encoded (which can change case, spaces or
   unknown characters).
3. Tokenisation is not additive (tokens can merge across a field's edge), so the rendered text
   is measured again and steps 1-2 repeat on what is still too long.
4. Only if every field is down to one unit and the text is still too long does the rendered
   text lose whole tokens from its start (at such a boundary), so the question and answer cue at
   its end survive.

5. **Slots.** Virtual tokens (one token each) and answer slots are counted but never cut; text is
   measured piece by piece between them, as encoding tokenises it. The start of the text is cut
   only up to the first slot: a row that would need more is refused (:class:`ConfigError`).

Counted: :attr:`Fit.cut_tokens` (tokens of the rendered text removed); a row with any cut counts
as truncated (:attr:`softprompt.encoding.EncodedBatch.truncated`, ``truncated_tokens``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .tasks.template import field_text

_ROUNDS = 8


@dataclass
class Fit:
    """How an example fits: field texts to use instead (exact prefixes), characters dropped from
    the start of the rendered text, and how many tokens were cut in all."""

    overrides: dict[str, str] = field(default_factory=dict)
    head_chars: int = 0
    cut_tokens: int = 0


def fit(backbone, template, example, mask_token: str | None, budget: int, slot: str | None = None) -> Fit:
    """Fit ``template`` rendered from ``example`` into ``budget`` tokens by the module's policy.

    The rendered text is measured as encoding lays it out: text between virtual tokens and answer
    slots other than ``slot`` (default: the first) is tokenised piece by piece; each virtual token
    counts one token, each other answer slot one (a mask) when ``mask_token`` is given; ``slot``
    is written as ``mask_token`` (or nothing) inside its text. A field that appears twice is cut
    in both places alike. Slots and virtual tokens are never cut.

    Raises :class:`ConfigError` when the template's fixed text alone does not fit before a slot.
    """
    slot = slot if slot is not None else (template.answer_slots or ("mask",))[0]
    n_full, _, _, _ = _measure(backbone, template, example, mask_token, slot, None)
    if n_full <= budget:
        return Fit()
    fields = template.fields
    times = {f: sum(p.kind == "field" and p.value == f for p in template.parts) for f in fields}
    values = {f: field_text(example, f) for f in fields}
    units = {f: token_units(backbone.tokenizer, values[f]) for f in fields}
    keep = {f: len(units[f]) for f in fields}  # units kept

    def tokens(f: str) -> int:
        return units[f][keep[f] - 1][1]

    overrides: dict[str, str] = {}
    n = n_full
    for _ in range(_ROUNDS):
        excess = n - budget
        if excess <= 0:
            break
        cut_any = False
        while excess > 0:
            longest = max(reversed(fields), key=lambda f: (keep[f] > 1, tokens(f)))  # ties: the later field
            if keep[longest] <= 1:
                break
            excess -= (tokens(longest) - units[longest][keep[longest] - 2][1]) * times[longest]
            keep[longest] -= 1
            cut_any = True
        if not cut_any:
            break
        overrides = {f: values[f][: units[f][keep[f] - 1][0]] for f in fields if keep[f] < len(units[f])}
        n, _, _, _ = _measure(backbone, template, example, mask_token, slot, overrides)
    head = 0
    if n > budget:
        n_rest, text, stop, more = _measure(backbone, template, example, mask_token, slot, overrides)
        n_rest -= len(backbone.tokenize(text))  # tokens after the first piece of text
        for _ in range(_ROUNDS):
            if n <= budget:
                break
            starts = token_starts(backbone.tokenizer, text[head:])
            if not starts:
                break
            head += next((s for s, before in starts if before >= n - budget), starts[-1][0])
            n = n_rest + len(backbone.tokenize(text[head:]))
        if head > stop or (n > budget and more):  # the cut would reach into a slot or virtual token
            raise ConfigError("the template's fixed text alone is longer than the model's context; shorten the template")
    return Fit(overrides=overrides, head_chars=head, cut_tokens=n_full - n)


def _measure(backbone, template, example, mask_token, slot, overrides) -> tuple[int, str, int, bool]:
    """``(tokens, first piece of text, where a cut of that piece must stop, whether more follows)``
    of the example as encoding lays it out (see :func:`fit`). The first piece is the text up to the
    first virtual token or other answer slot, with ``slot`` written in it; a cut may not reach
    into a slot."""
    pieces, current, n_between, stop = [], [], 0, None
    for seg in template.segments(example, overrides):
        if seg.kind == "text":
            current.append(seg.value)
        elif seg.kind == "answer" and seg.value == slot:
            if not pieces and stop is None:
                stop = sum(map(len, current))
            current.append(mask_token or "")
        else:
            if not pieces and stop is None:
                stop = sum(map(len, current))
            pieces.append("".join(current))
            current = []
            n_between += seg.count if seg.kind == "virtual" else int(mask_token is not None)
    pieces.append("".join(current))
    n = n_between + sum(len(backbone.tokenize(p)) for p in pieces if p)
    return n, pieces[0], len(pieces[0]) if stop is None else stop, len(pieces) > 1


def token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    """Each token's ``(start, end)`` character offsets in ``text``; for a tokenizer without offsets,
    one span per whitespace-separated word, repeated once per token of that word."""
    if getattr(tokenizer, "is_fast", False):
        return [tuple(o) for o in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    spans, prev = [], 0
    for m in re.finditer(r"\S+", text):
        count = len(tokenizer(text[prev: m.end()], add_special_tokens=False)["input_ids"])
        spans += [(m.start(), m.end())] * max(count, 1)
        prev = m.end()
    return spans


def token_units(tokenizer, text: str) -> list[tuple[int, int]]:
    """Where ``text`` may be cut, in order: ``(end, tokens)``, the character offset of a cut and how
    many tokens ``text[:end]`` keeps.

    A cut falls only where no later token starts before it, so ``text[:end]`` is an exact prefix whose
    tokens are those of the whole text up to there: the tokens of one character (byte-level BPE gives
    a CJK character or an emoji several tokens with the same offsets) form one unit, counted as their
    number of tokens. The last unit ends at ``len(text)`` and keeps every token.
    """
    offs = token_offsets(tokenizer, text)
    units: list[tuple[int, int]] = []
    later_start = len(text)  # the least start of the tokens after token i
    for i in range(len(offs) - 1, -1, -1):
        end = offs[i][1]
        if end > 0 and end <= later_start and (not units or end < units[-1][0]):
            units.append((end, i + 1))
        later_start = min(later_start, offs[i][0])
    units.reverse()
    if not units:
        return [(len(text), len(offs))]
    if units[-1][0] < len(text):  # trailing text no token covers (spaces a tokenizer drops)
        units[-1] = (len(text), units[-1][1])
    return units


def token_starts(tokenizer, text: str) -> list[tuple[int, int]]:
    """Where ``text`` may lose its start, in order: ``(start, tokens)``, the character offset and how
    many tokens come before it; only where no earlier token ends after it (see :func:`token_units`)."""
    offs = token_offsets(tokenizer, text)
    starts: list[tuple[int, int]] = []
    earlier_end = 0
    for i, (s, e) in enumerate(offs):
        if i > 0 and s >= earlier_end and s > (starts[-1][0] if starts else 0):
            starts.append((s, i))
        earlier_end = max(earlier_end, e)
    return starts
