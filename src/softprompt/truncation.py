"""Truncation: fitting one rendered example into the room the model's context leaves.

Policy, applied only when the rendered template is longer than its ``budget`` of tokens:

1. **Fields, longest first, one token at a time.** The template's fixed words are never cut.
   Each field is measured in tokens (tokenised alone); a token is taken from the end of
   whichever field is longest now (on a tie, the later field in the template), again and again,
   until the excess is gone or every field is down to one token. Two long fields therefore end
   within a token of each other, however unequal they started.
2. **Exact prefixes.** A field is cut at a token boundary given by the tokenizer's character
   offsets, so the text kept is a byte-exact prefix of the field's original text: it is never
   decoded and re-encoded (which can change case, spaces or unknown characters).
3. Tokenisation is not additive (tokens can merge across a field's edge), so the rendered text
   is measured again and steps 1-2 repeat on what is still too long.
4. Only if every field is down to one token and the text is still too long does the rendered
   text lose whole tokens from its start, so the question and answer cue at its end survive.

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


def fit(backbone, template, example, mask_token: str | None, budget: int) -> Fit:
    """Fit ``template`` rendered from ``example`` into ``budget`` tokens by the module's policy.

    Raises :class:`ConfigError` when the template's fixed text alone does not fit around a mask slot.
    """
    n_full = len(backbone.tokenize(template.render(example, mask_token=mask_token)))
    if n_full <= budget:
        return Fit()
    fields = template.fields
    values = {f: field_text(example, f) for f in fields}
    ends = {f: token_ends(backbone.tokenizer, values[f]) for f in fields}
    keep = {f: len(ends[f]) for f in fields}
    overrides: dict[str, str] = {}
    n = n_full
    for _ in range(_ROUNDS):
        excess = n - budget
        if excess <= 0:
            break
        cut_any = False
        for _ in range(excess):
            longest = max(reversed(fields), key=lambda f: keep[f])  # ties: the later field
            if keep[longest] <= 1:
                break
            keep[longest] -= 1
            cut_any = True
        if not cut_any:
            break
        overrides = {f: values[f][: ends[f][keep[f] - 1]] for f in fields if keep[f] < len(ends[f])}
        n = len(backbone.tokenize(template.render(example, mask_token=mask_token, overrides=overrides)))
    head = 0
    if n > budget:
        text = template.render(example, mask_token=mask_token, overrides=overrides)
        starts = token_starts(backbone.tokenizer, text)
        head = starts[min(n - budget, len(starts) - 1)]
        if mask_token is not None and mask_token in text[:head]:
            raise ConfigError("the template's fixed text alone is longer than the model's context; shorten the template")
        n = len(backbone.tokenize(text[head:]))
    return Fit(overrides=overrides, head_chars=head, cut_tokens=n_full - n)


def token_ends(tokenizer, text: str) -> list[int]:
    """Character offset where each token of ``text`` ends (whitespace-separated words for a
    tokenizer without offsets): cutting ``text[:end]`` keeps an exact prefix."""
    if getattr(tokenizer, "is_fast", False):
        offs = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ends = sorted({e for _, e in offs if e > 0})
        return ends or [len(text)]
    return [m.end() for m in re.finditer(r"\S+", text)] or [len(text)]


def token_starts(tokenizer, text: str) -> list[int]:
    """Character offset where each token of ``text`` starts (see :func:`token_ends`)."""
    if getattr(tokenizer, "is_fast", False):
        offs = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return [s for s, _ in offs]
    return [m.start() for m in re.finditer(r"\S+", text)]
