"""Label words tokenised as the model reads them after the template.

A candidate word is scored as part of its *natural text*: the rendered context, a join, the word
and, for a masked LM, the template's text after the answer slot. Join rule (whitespace is never
doubled): the context's trailing whitespace and the ``prefix``'s leading whitespace are one gap.
A gap of spaces (or tabs) becomes its first character, so ``"Sentiment:"``, ``"Sentiment: "`` and
``"Sentiment:  "`` followed by ``"positive"`` all read ``"Sentiment: positive"``; a gap holding a
line break keeps the context's own whitespace whole (``"Sentiment:\n"`` reads
``"Sentiment:\npositive"``); an empty context (the start of a text) takes no gap.

Boundary rule: each candidate's natural text is tokenised whole. The context's ids are the
longest run of leading tokens that every candidate shares and that lie wholly inside the context
text (by the tokenizer's character offsets); the text after the slot keeps the longest shared run
of trailing tokens that lie wholly after the word; the word's ids are what lies between. So
``context + word (+ after)`` is exactly the tokenisation of the natural text, whatever the
tokenizer family: a byte-level BPE ``'Ġ'`` left by a trailing space becomes part of
``'Ġpositive'``, a SentencePiece ``'▁'`` likewise, and WordPiece splits at whitespace anyway. When
the context's last tokens change once the word follows (a merge across the boundary), the context
is re-split: it keeps only the tokens the natural text has there. Tokenizers without offsets (slow
ones) keep, as context, the leading tokens shared by the context alone and every candidate, and
leave every word at least one token.

Tokenising the whole natural text of every (row, word) pair would cost ``rows x words``
tokenisations per batch. :func:`context_then_words` therefore tokenises the context once, splits
it at a token boundary next to whitespace a few tokens before its end (checked: the tail alone
tokenises to the same tokens), and looks the words up per distinct *tail* in a cache; rows whose
contexts end alike (a template ending in fixed text) share one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import ConfigError

TAIL_TOKENS = 4  # tokens kept before the word when the context is split for the cache
_CACHE_LIMIT = 4096


@dataclass
class AnswerIds:
    """``context + words[i] + after`` is the tokenisation of candidate ``i``'s natural text."""

    context: list[int]
    words: list[list[int]]
    after: list[int]


def join_text(context: str, prefix: str) -> tuple[str, str]:
    """``(context kept, join)``: the natural text is ``kept + join + word`` (the module's join rule).

    ``kept`` is ``context`` itself, or ``context`` less its trailing spaces when those are merged
    into the join.
    """
    rest = prefix.lstrip()
    if not context.strip():
        return "", rest
    kept = context.rstrip()
    gap = context[len(kept):] + prefix[: len(prefix) - len(rest)]
    if any(c in "\n\r\f\v" for c in gap):
        return context, rest
    return kept, gap[:1] + rest


def natural_text(context: str, prefix: str, word: str, after: str = "") -> str:
    """The text a reader sees with ``word`` answered after ``context`` (see the module docstring)."""
    kept, join = join_text(context, prefix)
    return kept + join + word + after


def answer_ids(tokenizer, context: str, words: Sequence[str], prefix: str, after: str = "") -> AnswerIds:
    """Split the tokenisation of each candidate's natural text into context, word and after ids.

    Raises :class:`ConfigError` if a word keeps no token of its own.
    """
    context, join = join_text(context, prefix)
    texts = [context + join + w + after for w in words]
    encoded = _tokenize(tokenizer, texts)
    all_ids = [ids for ids, _ in encoded]
    n_min = min(len(ids) for ids in all_ids)
    if encoded[0][1] is not None:
        n_ctx = 0
        while n_ctx < n_min and all(ids[n_ctx] == all_ids[0][n_ctx] and offs[n_ctx][1] <= len(context)
                                    for ids, offs in encoded):
            n_ctx += 1
        n_after = 0
        while n_after < n_min - n_ctx - 1 and all(
                ids[-1 - n_after] == all_ids[0][-1 - n_after]
                and offs[-1 - n_after][0] >= len(context) + len(join) + len(w)
                for (ids, offs), w in zip(encoded, words)):
            n_after += 1
    else:
        own_ctx = _tokenize(tokenizer, [context])[0][0]
        n_ctx = _common_prefix([own_ctx] + all_ids)
        n_ctx = min(n_ctx, n_min - 1)
        n_after = 0
        if after:
            own_after = _tokenize(tokenizer, [after])[0][0]
            n_after = min(_common_prefix([s[::-1] for s in [own_after] + all_ids]), n_min - n_ctx - 1)
    out = [ids[n_ctx: len(ids) - n_after] for ids in all_ids]
    for w, ids in zip(words, out):
        if not ids:
            raise ConfigError(f"label word {w!r} tokenises to nothing after the template; choose another word")
    return AnswerIds(context=all_ids[0][:n_ctx], words=out, after=all_ids[0][len(all_ids[0]) - n_after:])


def context_then_words(tokenizer, context: str, words: Sequence[str], prefix: str,
                       cache: dict | None = None) -> AnswerIds:
    """:func:`answer_ids` for a word that ends the text (decoder-only models), cached per context tail.

    Gives the same ids as ``answer_ids(tokenizer, context, words, prefix)``.
    """
    if cache is None or not getattr(tokenizer, "is_fast", False):
        return answer_ids(tokenizer, context, words, prefix)
    ids, offs = _tokenize(tokenizer, [context])[0]
    split = _tail_start(tokenizer, context, ids, offs, cache)
    if split is None:
        return answer_ids(tokenizer, context, words, prefix)
    s, start = split
    key = ("words", context[start:], prefix, tuple(words))
    hit = cache.get(key)
    if hit is None:
        hit = _remember(cache, key, answer_ids(tokenizer, context[start:], words, prefix))
    return AnswerIds(context=ids[:s] + hit.context, words=[list(w) for w in hit.words], after=[])


def tokens_before(tokenizer, text: str, end: int) -> int:
    """How many leading tokens of ``text`` lie wholly in ``text[:end]`` (by character offsets; a
    tokenizer without offsets: the tokens of ``text[:end]`` alone, at most all of ``text``'s).

    Where an answer slot sits in a text tokenised whole (an encoder reading the text with the slot
    left empty): ``ids[:tokens_before(...)]`` is the text before the slot.
    """
    ids, offs = _tokenize(tokenizer, [text])[0]
    if offs is None:
        return min(len(_tokenize(tokenizer, [text[:end]])[0][0]), len(ids))
    n = 0
    while n < len(ids) and offs[n][1] <= end:
        n += 1
    return n


def _tail_start(tokenizer, context: str, ids: list[int], offs, cache: dict) -> tuple[int, int] | None:
    """(token index, character index) where ``context`` may be split: next to whitespace, at
    least :data:`TAIL_TOKENS` tokens before the end, and its tail alone tokenises to ``ids[s:]``."""
    for s in range(len(ids) - TAIL_TOKENS, max(0, len(ids) - 4 * TAIL_TOKENS), -1):
        start = offs[s][0]
        if start <= 0 or offs[s - 1][1] > start:
            continue
        if not (context[start].isspace() or context[start - 1].isspace()):
            continue
        tail = context[start:]
        key = ("tail", tail)
        tail_ids = cache.get(key)
        if tail_ids is None:
            tail_ids = _remember(cache, key, _tokenize(tokenizer, [tail])[0][0])
        return (s, start) if tail_ids == ids[s:] else None
    return None


def _remember(cache: dict, key, value):
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _tokenize(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]] | None]]:
    """``(ids, character offsets or None)`` of each text, no special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.truncation is None and backend.padding is None:
        # the Rust tokenizer directly: the same ids and offsets, ~7x faster than the Python wrapper's
        # conversion, which dominated encoding a row against KPT's 1,380 label words
        return [(list(e.ids), [tuple(o) for o in e.offsets]) for e in backend.encode_batch(texts, add_special_tokens=False)]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(i), [tuple(o) for o in off]) for i, off in zip(enc["input_ids"], enc["offset_mapping"])]
    return [(tokenizer(t, add_special_tokens=False)["input_ids"], None) for t in texts]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    i = 0
    while i < n and all(s[i] == seqs[0][i] for s in seqs):
        i += 1
    return i
