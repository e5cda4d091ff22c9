"""The one interface through which a soft prompt enters a model.

A backbone wraps a frozen Hugging Face model and its tokenizer and answers three questions for a
prompt ``[length, dim]`` (or ``None`` for no prompt) and an :class:`~softprompt.encoding.EncodedBatch`:

* :meth:`Backbone.word_scores` — a log-score per (row, candidate word), ``[batch, max_words]``
  (``-inf`` pads rows with fewer candidates), used for rank classification and its loss;
* :meth:`Backbone.gold_nll` — the language-model loss of each row's gold word, ``[batch]``;
* :meth:`Backbone.generate` — greedy continuations, for generation-based evaluation.

Where the prompt goes is each family's business: after the leading special token if the
tokenizer adds one (``[BOS] prompt text`` / ``[CLS] prompt text [SEP]``), else first. Padding is
always on the right, after the text, never between prompt and text.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..answer_tokens import answer_ids, context_then_words
from ..encoding import EncodedBatch
from ..errors import ConfigError
from ..prompt import InitContext, common_token_ids


class Backbone(ABC):
    """A frozen model plus the rules for putting a prompt into it."""

    family: ClassVar[str]

    def __init__(self, model, tokenizer, model_id: str | None = None, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or getattr(model.config, "name_or_path", "") or type(model).__name__
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        probe_with = tokenizer("a", add_special_tokens=True)["input_ids"]
        probe_without = tokenizer("a", add_special_tokens=False)["input_ids"]
        start = _find(probe_with, probe_without)
        self.lead_ids: list[int] = probe_with[:start] if start >= 0 else []
        self.trail_ids: list[int] = probe_with[start + len(probe_without):] if start >= 0 else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        model_max = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None) or 512
        tok_max = getattr(tokenizer, "model_max_length", None)
        if tok_max and tok_max < 10**6:
            model_max = min(model_max, tok_max)
        self.max_length = min(max_length or 1024, model_max)
        self._fingerprint: str | None = None
        self._answer_cache: dict = {}

    # ----------------------------------------------------------------- model facts
    @classmethod
    @abstractmethod
    def auto_class(cls):
        """The ``transformers`` auto class that loads this family's models."""

    @property
    def dim(self) -> int:
        """Width of the input embeddings: a prompt is ``[length, dim]``."""
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def mask_token(self) -> str | None:
        """The mask token the template's ``{mask}`` slot renders to (masked LMs only)."""
        return None

    @property
    def mask_token_id(self) -> int | None:
        return None

    @property
    def n_special(self) -> int:
        """Special tokens this family adds around a row."""
        return len(self.lead_ids) + len(self.trail_ids)

    @property
    def fingerprint(self) -> str:
        """A short hash of the input-embedding matrix: tells one model's weights from another's.

        256 evenly spaced rows, rounded to bfloat16 so a float32 and a bfloat16 copy of the same
        weights agree, plus the shape.
        """
        if self._fingerprint is None:
            w = self.model.get_input_embeddings().weight.detach()
            rows = w[:: max(1, w.shape[0] // 256)].to(torch.bfloat16).contiguous().cpu()
            h = hashlib.sha256(str(tuple(w.shape)).encode())
            h.update(rows.view(torch.int16).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of ``ids [...]`` -> ``[..., dim]``, through the embedding *module*."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def answer_ids(self, before: str, after: str, words: list[str], prefix: str) -> tuple[list[int], list[list[int]], int | None]:
        """Context ids, each word's ids and the answer slot (None here) for a row whose rendered
        text is ``before`` (``after`` is empty: the word ends the text a decoder reads).

        ``context + words[i]`` is exactly the tokenisation of the natural text (see
        :mod:`softprompt.answer_tokens`).
        """
        split = context_then_words(self.tokenizer, before + after, words, prefix, self._answer_cache)
        return split.context, split.words, None

    def init_context(self, label_words=(), seed: int = 0, task=None) -> InitContext:
        """What the prompt initialisers need from this model.

        With ``task`` (a fixed label set), ``label_word_ids`` holds each label's words as scored
        after its template, so ``class-labels`` starts from the very tokens the model is asked for.
        """
        gen = torch.Generator().manual_seed(seed)
        word_ids = ()
        if task is not None and task.verbalizer.is_fixed:
            from ..encoding import label_word_ids

            word_ids = label_word_ids(self, task)

        def embed(ids: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.embed(ids).float().cpu()

        return InitContext(
            embed=embed, tokenize=self.tokenize, common_ids=common_token_ids(self.tokenizer),
            label_words=label_words, generator=gen, model_fingerprint=self.fingerprint,
            label_word_ids=word_ids,
        )

    # ------------------------------------------------------------------- helpers
    def _pad(self, seqs: list[list[int]], pad: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad ``seqs`` -> ``ids [n, T]`` and ``mask [n, T]`` on the model's device."""
        pad = self.pad_id if pad is None else pad
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _lead_and_prompt(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """The shared prefix ``[lead specials + prompt, dim]``, or None when empty."""
        parts = []
        if self.lead_ids:
            parts.append(self.embed(torch.tensor(self.lead_ids)))
        if prompt is not None:
            parts.append(prompt.to(device=self.device, dtype=self.dtype))
        return torch.cat(parts, 0) if parts else None

    @staticmethod
    def _rows_prompts(prompt, rows: list[int]):
        """Per-row prompts re-indexed for flattened (row, word) pairs; a shared prompt stays as is."""
        if isinstance(prompt, (list, tuple)):
            return [prompt[r] for r in rows]
        return prompt

    @staticmethod
    def _prompt_groups(prompt, n: int) -> list[list[int]]:
        """Row indices sharing each distinct prompt of a per-row prompt list, in first-seen order."""
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompt):
            groups.setdefault(id(p), []).append(i)
        return list(groups.values())

    def _by_prompt(self, fn, prompt, batch: EncodedBatch, *args) -> torch.Tensor:
        """Run ``fn(prompt, sub_batch, *args) -> [rows] or [rows, k]`` once per distinct prompt of
        a mixed batch (``prompt`` a per-row list) and put the rows back in order (-inf pads)."""
        if not isinstance(prompt, (list, tuple)):
            return fn(prompt, batch, *args)
        results = [(rows, fn(prompt[rows[0]], batch.select(rows), *args))
                   for rows in self._prompt_groups(prompt, len(batch))]
        first = results[0][1]
        if first.dim() == 1:
            out = first.new_empty(len(batch))
        else:
            out = first.new_full((len(batch), max(t.shape[1] for _, t in results)), float("-inf"))
        for rows, t in results:
            idx = torch.tensor(rows, device=t.device)
            if first.dim() == 1:
                out[idx] = t
            else:
                out[idx, : t.shape[1]] = t
        return out

    @staticmethod
    def _flatten(batch: EncodedBatch) -> tuple[list[int], list[list[int]]]:
        """(row index, word ids) of every (row, candidate) pair, row-major."""
        rows, words = [], []
        for b, ws in enumerate(batch.words):
            for w in ws:
                rows.append(b)
                words.append(w)
        return rows, words

    @staticmethod
    def _unflatten(batch: EncodedBatch, flat: torch.Tensor) -> torch.Tensor:
        """Scores of the flattened pairs ``[n_pairs]`` -> ``[batch, max_words]`` padded with -inf."""
        width = max(len(ws) for ws in batch.words)
        out = flat.new_full((len(batch), width), float("-inf"))
        i = 0
        for b, ws in enumerate(batch.words):
            out[b, : len(ws)] = flat[i: i + len(ws)]
            i += len(ws)
        return out

    @staticmethod
    def _token_logprob_sums(logprobs: torch.Tensor, targets: torch.Tensor, tmask: torch.Tensor,
                            length_normalize: bool) -> torch.Tensor:
        """Sum (or mean) over tokens of ``logprobs [n, T, V]`` at ``targets [n, T]`` where ``tmask``."""
        lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * tmask
        total = lp.sum(-1)
        if length_normalize:
            total = total / tmask.sum(-1).clamp(min=1)
        return total

    # -------------------------------------------------------------------- the API
    @abstractmethod
    def word_scores(self, prompt: torch.Tensor | None, batch: EncodedBatch, length_normalize: bool = False) -> torch.Tensor:
        """Log-score of each candidate word of each row: ``[batch, max_words]``.

        ``prompt``: ``[length, dim]`` or None. Scores of one row are comparable with each other
        (rank classification); the single-token fast path may omit the row's log-normaliser,
        which changes neither the ranking nor a softmax over the row's candidates.
        """

    @abstractmethod
    def gold_nll(self, prompt: torch.Tensor | None, batch: EncodedBatch) -> torch.Tensor:
        """Mean token negative log-likelihood of each row's gold word, full vocabulary: ``[batch]``."""

    @abstractmethod
    def generate(self, prompt: torch.Tensor | None, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        """Greedy continuation of each row's context (the prompt before it): ``batch`` strings."""

    # ------------------------------------------------------------ template slots
    def slot_ids(self, before: str, after: str, words: list[str], prefix: str) -> tuple[list[int], list[list[int]], int]:
        """Ids of the text around one answer slot, each word's ids and the slot's position in those
        ids, for a decoder reading ``before`` + word + ``after``: the context is the text with the
        slot left empty, ``context[:pos]`` the text before it (``pos == len(context)`` when
        ``after`` is empty). ``context[:pos] + words[i] + context[pos:]`` is exactly the
        tokenisation of the natural text (:mod:`softprompt.answer_tokens`)."""
        if not after:
            split = context_then_words(self.tokenizer, before, words, prefix, self._answer_cache)
        else:
            split = answer_ids(self.tokenizer, before, words, prefix, after)
        return split.context + split.after, split.words, len(split.context)

    @abstractmethod
    def slot_word_scores(self, prompt, batch: EncodedBatch, slot: str, words=None, fills=None,
                         length_normalize: bool = False) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]`` (-inf pads).

        ``prompt`` as for :meth:`word_scores`. ``words[b][w]``: token ids of row ``b``'s candidate
        ``w`` (default ``batch.words``, which fill ``batch.word_slot``). ``fills[name][b]``: token
        ids written into another answer slot ``name`` of row ``b``; a slot without a fill is left
        as encoded (a mask on a masked LM, nothing elsewhere). Each family says what it scores.
        Raises :class:`ConfigError` for an unknown slot, missing words, or a batch with virtual
        tokens (their vectors come with the method's conditioning, not with ``prompt``).
        """

    def _slot_pairs(self, batch: EncodedBatch, slot: str, words, fills, filler):
        """Every (row, candidate) pair of ``slot`` laid out: ``(rows, seqs, starts, ends, stops)``.

        ``seqs[i]``: the row's context with the other slots filled from ``fills`` and ``slot``
        holding ``filler(word)``; the candidate's tokens are ``seqs[i][starts[i]:ends[i]]`` and
        ``stops[i]`` is where the next answer slot starts (``len(seqs[i])`` after the last)."""
        words = self._slot_words(batch, slot, words)
        if any(batch.virtual):
            raise ConfigError(
                "this batch's template has virtual tokens {soft...}; their vectors come with the method's "
                "conditioning, which a plain prompt does not carry: score it through the method"
            )
        fills = dict(fills or {})
        unknown = [name for name in fills if name not in batch.slot_names or name == slot]
        if unknown:
            raise ConfigError(
                f"fills for {', '.join(map(repr, unknown))}: fill the template's other answer slots "
                f"({', '.join(n for n in batch.slot_names if n != slot) or 'none'}) only"
            )
        width = 0 if self.mask_token_id is None else 1  # what an unfilled slot holds in the context
        cols = {name: batch.slot_positions(name) for name in batch.slot_names}
        rows, seqs, starts, ends, stops = [], [], [], [], []
        for b, ws in enumerate(words):
            ctx = batch.context[b]
            for w in ws:
                out: list[int] = []
                cursor = 0
                start = end = stop = None
                for name in batch.slot_names:  # reading order
                    pos = cols[name][b]
                    out += ctx[cursor:pos]
                    if end is not None and stop is None:
                        stop = len(out)
                    if name == slot:
                        start = len(out)
                        out += filler(w)
                        end = len(out)
                    else:
                        out += fills[name][b] if name in fills else ctx[pos: pos + width]
                    cursor = pos + width
                out += ctx[cursor:]
                rows.append(b)
                seqs.append(out)
                starts.append(start)
                ends.append(end)
                stops.append(len(out) if stop is None else stop)
        return rows, seqs, starts, ends, stops

    @staticmethod
    def _slot_words(batch: EncodedBatch, slot: str, words):
        """``words``, or the batch's own when they fill ``slot``; raises :class:`ConfigError` otherwise."""
        batch.slot_positions(slot)  # refuses an unknown slot
        if words is not None:
            return words
        if slot != batch.word_slot:
            raise ConfigError(
                f"the batch's words fill answer slot {batch.word_slot!r}, not {slot!r}: give the words for "
                f"{slot!r} (slot_word_scores(..., words=...)), or encode with slot={slot!r}"
            )
        return batch.words

    def _slot_by_prompt(self, fn, prompt, batch: EncodedBatch, slot: str, words, fills, length_normalize):
        """``fn(prompt, batch, slot, words, fills, length_normalize)`` once per distinct prompt of a
        per-row prompt list, rows put back in order (-inf pads)."""
        if not isinstance(prompt, (list, tuple)):
            return fn(prompt, batch, slot, words, fills, length_normalize)
        words = self._slot_words(batch, slot, words)
        parts = []
        for rows in self._prompt_groups(prompt, len(batch)):
            sub_fills = {k: [v[r] for r in rows] for k, v in (fills or {}).items()}
            parts.append((rows, fn(prompt[rows[0]], batch.select(rows), slot, [words[r] for r in rows], sub_fills,
                                   length_normalize)))
        out = parts[0][1].new_full((len(batch), max(t.shape[1] for _, t in parts)), float("-inf"))
        for rows, t in parts:
            out[torch.tensor(rows, device=t.device), : t.shape[1]] = t
        return out

    @staticmethod
    def _pairs_to_rows(rows: list[int], n: int, flat: torch.Tensor) -> torch.Tensor:
        """Scores of (row, candidate) pairs in row-major order ``[n_pairs]`` -> ``[n, max_words]`` (-inf pads)."""
        counts = [rows.count(b) for b in range(n)]
        out = flat.new_full((n, max(counts)), float("-inf"))
        i = 0
        for b, k in enumerate(counts):
            out[b, :k] = flat[i: i + k]
            i += k
        return out


def _single_token_rows(batch: EncodedBatch, device) -> torch.Tensor:
    """The one token of each word of a :attr:`~EncodedBatch.single_token` batch: ``[k]`` when
    every row has the same ids, else ``[batch, k]`` (rows whose contexts end differently)."""
    firsts = [[w[0] for w in ws] for ws in batch.words]
    if all(f == firsts[0] for f in firsts):
        return torch.tensor(firsts[0], device=device)
    return torch.tensor(firsts, device=device)


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i: i + len(needle)] == needle:
            return i
    return -1
