"""The one interface through which a method's conditioning enters a model.

A backbone wraps a frozen Hugging Face model and its tokenizer and answers three questions for a
:class:`~softprompt.conditioning.Conditioning` (or anything
:func:`~softprompt.conditioning.as_conditioning` takes: a prompt ``[length, dim]``, a
:class:`~softprompt.conditioning.LayerKV`, None, a :class:`~softprompt.conditioning.PerRow`) and an
:class:`~softprompt.encoding.EncodedBatch`:

* :meth:`Backbone.word_scores` — a log-score per (row, candidate word), ``[batch, max_words]``
  (``-inf`` pads rows with fewer candidates), used for rank classification and its loss; with
  answer vectors, ``[batch, n_answers]``;
* :meth:`Backbone.gold_nll` — the language-model loss of each row's gold word, ``[batch]``;
* :meth:`Backbone.generate` — greedy continuations, for generation-based evaluation.

Input vectors go after the leading special token if the tokenizer adds one (``[BOS] prompt
text`` / ``[CLS] prompt text [SEP]``), else first: :meth:`Backbone.inputs` places them for every
family. Padding is always on the right, after the text, never between prompt and text. A family
declares the conditioning kinds it supports (:attr:`Backbone.supports`); others are refused with
:class:`~softprompt.errors.ConfigError` before any work. Layer hooks are installed on the modules
:meth:`Backbone.blocks` names for the duration of one call (:meth:`Backbone.hooked`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterable, NamedTuple

import torch
from torch import nn

from ..answer_tokens import answer_ids, context_then_words
from ..conditioning import KINDS, Conditioning, PerRow, as_conditioning, row_hooks
from ..encoding import EncodedBatch
from ..errors import ConfigError
from ..prompt import InitContext, common_token_ids


@dataclass(frozen=True)
class Block:
    """One transformer layer's sub-modules a :class:`~softprompt.conditioning.LayerHook` can change:
    ``attention`` and ``feed_forward`` (their outputs are ``[batch, T, dim]``, or a tuple whose
    first element is); ``stack`` names the stack it belongs to (``"decoder"``, ``"encoder"``)."""

    attention: nn.Module
    feed_forward: nn.Module
    stack: str


class TextStates(NamedTuple):
    """What :meth:`Backbone.text_states` returns for a batch.

    ``hidden [batch, T, dim]``: the last layer's state of ``context[b][j]`` at ``hidden[b, j]``
    (prompt and special tokens left out); ``mask [batch, T]``: 1 on the row's tokens, 0 on
    padding; ``answer_at [batch]``: the position in ``hidden`` whose state reads the answer (a
    decoder: the token before the answer slot; a masked model: the mask); ``answer [batch, dim]``:
    what the answer vectors (the vocabulary rows) multiply there, as :meth:`Backbone.word_scores`
    reads it (after a masked model's prediction-head transform), scored by
    :meth:`Backbone.answer_log_scores`."""

    hidden: torch.Tensor
    mask: torch.Tensor
    answer_at: torch.Tensor
    answer: torch.Tensor


def find_child(module: nn.Module, names: Iterable[str], what: str) -> nn.Module:
    """The first of ``names`` (dotted paths) that ``module`` has; :class:`ConfigError` if none."""
    for name in names:
        cur = module
        for part in name.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None:
            return cur
    raise ConfigError(f"cannot find the {what} of a {type(module).__name__} (looked for {list(names)}): "
                      "layer hooks do not support this model's layout")


class Backbone(ABC):
    """A frozen model plus the rules for putting a prompt into it."""

    family: ClassVar[str]
    weights: str | None = None
    """What the weights are when not the model's own float ones (``load_model`` sets it for a
    named model: e.g. "GGUF Q4_K_M (4-bit) de-quantised to float32 on load"); results record it."""

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

    # ------------------------------------------------------------ conditioning
    supports: ClassVar[frozenset[str]] = frozenset(KINDS)
    """The conditioning kinds (:data:`~softprompt.conditioning.KINDS`) this family can take."""
    description: ClassVar[str] = "a"
    """The family in words, for messages (``"an encoder-decoder"``)."""
    mixes_rows: ClassVar[bool] = False
    """Whether rows with different input vectors / keys / virtual tokens share one forward pass."""
    has_text_states: ClassVar[bool] = True
    """Whether :meth:`text_states` gives one last-layer state per text position that also holds the
    answer slot (decoder-only and masked models; not an encoder-decoder, whose answer is read by
    the decoder from states of another stack)."""

    @property
    def answer_in_slot(self) -> bool:
        """True when the answer fills a mask slot inside the text (masked LMs) rather than following it."""
        return False

    @property
    def peft_exportable(self) -> bool:
        """Whether a prompt for this model can be written as a PEFT prompt-tuning adapter."""
        return False

    def check_supports(self, kinds, who: str) -> None:
        """Raise :class:`ConfigError` naming ``who`` unless every kind in ``kinds`` is supported."""
        missing = sorted(set(kinds) - self.supports)
        if missing:
            raise ConfigError(
                f"{who} needs {', '.join(missing)}, which {self.model_id!r} does not take: it is {self.description} "
                f"model ({self.family}), which takes {', '.join(k for k in KINDS if k in self.supports)}; choose a model "
                "of a family that takes it (--model), or another method (e.g. --method prompt-tuning)"
            )

    def conditioned(self, cond, batch: EncodedBatch) -> Conditioning | PerRow:
        """``cond`` coerced (:func:`~softprompt.conditioning.as_conditioning`) and checked against
        :attr:`supports` and ``batch`` (a :class:`PerRow` needs one item per row)."""
        cond = as_conditioning(cond)
        self.check_supports(cond.kinds, "this conditioning")
        if isinstance(cond, PerRow) and len(cond) != len(batch):
            raise ConfigError(f"{len(cond)} per-row conditionings for a batch of {len(batch)} rows: give one per row")
        return cond

    def blocks(self) -> list[Block]:
        """Per layer, its attention and feed-forward modules (see each family for the stacks)."""
        raise ConfigError(f"{self.description} model ({self.family}) gives no access to its layers")

    def layer_norms(self) -> list[nn.Module]:
        """The model's normalisation layers (``LayerNorm``, T5's ``T5LayerNorm``, ``RMSNorm`` s), in
        module order: what a method may train beside the frozen rest (Hyperformer's option)."""
        return [m for m in self.model.modules()
                if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))]

    @contextlib.contextmanager
    def hooked(self, hooks):
        """Install ``hooks`` (:class:`~softprompt.conditioning.LayerHook` s) as forward hooks for the
        ``with`` block; they are removed on leaving it, on error too. Raises :class:`ConfigError`
        for a layer this model lacks."""
        handles = []
        try:
            if hooks:
                blocks = self.blocks()
                for h in hooks:
                    if h.layer >= len(blocks):
                        raise ConfigError(f"a layer hook names layer {h.layer}, but {self.model_id!r} has "
                                          f"{len(blocks)} blocks (0..{len(blocks) - 1})")
                    handles.append(getattr(blocks[h.layer], h.site).register_forward_hook(_replacing(h.fn)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def cache_info(self) -> dict[str, int]:
        """Counts of the inference cache: ``entries``, ``hits``, ``misses`` (empty without a cache)."""
        return {}

    def weights_version(self) -> tuple[int, ...]:
        """Version counters of the model's trainable parameters (empty when frozen): a cache key
        part that moves when full tuning updates the weights."""
        return tuple(p._version for p in self.model.parameters() if p.requires_grad)

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

    def inputs(self, seqs: list[list[int]], vectors: torch.Tensor | None = None, virtual=None, tables=None,
               specials: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Input embeddings of texts ``seqs`` with ``vectors [length, dim]`` after the lead specials.

        The one place input vectors are put, for every family: ``lead + vectors + seq + trail``
        (``specials=False``: ``vectors + seq``, for a text that follows cached keys/values).
        ``virtual[i]``: ``(position in seqs[i], name, index)`` of row ``i``'s virtual tokens, whose
        input embedding becomes ``tables[i][name][index]`` (differentiable). Returns ``(emb [n, T,
        dim], mask [n, T], offset)``, ``offset`` the index of each text's first token.
        """
        lead, trail = (self.lead_ids, self.trail_ids) if specials else ([], [])
        ids, mask = self._pad([lead + s + trail for s in seqs])
        emb = self.embed(ids)
        offset = len(lead)
        if virtual is not None and any(virtual):
            emb = self._put_virtual(emb, offset, virtual, tables)
        if vectors is not None:
            n = ids.shape[0]
            vec = vectors.to(device=self.device, dtype=self.dtype)[None].expand(n, -1, -1)
            emb = torch.cat([emb[:, :offset], vec, emb[:, offset:]], 1)
            mask = torch.cat([mask[:, :offset], mask.new_ones(n, vectors.shape[0]), mask[:, offset:]], 1)
            offset += vectors.shape[0]
        return emb, mask, offset

    def _put_virtual(self, emb: torch.Tensor, offset: int, virtual, tables) -> torch.Tensor:
        """``emb [n, T, dim]`` with each row's virtual tokens put at ``offset + position``."""
        rows, cols, values = [], [], []
        for i, slots in enumerate(virtual):
            for pos, name, idx in slots:
                table = tables[i].get(name)
                if table is None:
                    raise ConfigError(
                        f"the template has learnable virtual tokens {{soft:{name}}} but no vectors were given for "
                        f"them (given: {sorted(tables[i]) or 'none'}): they are learnt in training and come with the "
                        "trained output (eval/predict --prompt DIR); without one, remove {soft...} from --template")
                if idx >= table.shape[0]:
                    raise ConfigError(f"virtual token {name!r} #{idx} asked for, but the conditioning has "
                                      f"{table.shape[0]} of them")
                rows.append(i)
                cols.append(offset + pos)
                values.append(table[idx])
        if not rows:
            return emb
        idx = (torch.tensor(rows, device=emb.device), torch.tensor(cols, device=emb.device))
        return emb.index_put(idx, torch.stack(values).to(device=emb.device, dtype=emb.dtype))

    def _lead_and_prompt(self, prompt: torch.Tensor | None) -> torch.Tensor | None:
        """The shared prefix ``[lead specials + prompt, dim]``, or None when empty (no trail)."""
        if not self.lead_ids and prompt is None:
            return None
        emb, _, _ = self.inputs([[]], prompt, specials=False)
        if self.lead_ids:
            emb = torch.cat([self.embed(torch.tensor(self.lead_ids))[None], emb], 1)
        return emb[0]

    @staticmethod
    def _group_key(c: Conditioning) -> tuple:
        """Rows whose conditionings have this key in common can share one forward pass."""
        return (id(c.input_vectors), id(c.layer_kv), tuple(sorted((n, id(t)) for n, t in c.virtual_tokens.items())),
                id(c.answer_vectors), tuple(id(h) for h in c.layer_hooks))

    def _groups(self, cond: PerRow) -> list[list[int]]:
        """Row indices sharing each distinct conditioning of a mixed batch, in first-seen order."""
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(cond.items):
            groups.setdefault(self._group_key(c), []).append(i)
        return list(groups.values())

    def _grouped(self, fn, cond, batch: EncodedBatch, *args, row_hooked: bool = True):
        """Run ``fn(cond, batch, *args) -> [rows] or [rows, k] or list`` with ``cond``'s hooks
        installed. A :class:`PerRow` goes whole to ``fn`` when this family mixes rows and no row
        has answer vectors or hooks, or, with ``row_hooked``, when the rows differ only in hooks
        that merge into per-row ones (:func:`~softprompt.conditioning.row_hooks`) and ``fn`` then
        calls the model over all rows (:meth:`_one_call`); else once per distinct conditioning,
        rows put back in order (``-inf`` pads)."""
        if isinstance(cond, PerRow) and len(self._groups(cond)) == 1:
            cond = cond.items[0]
        if isinstance(cond, Conditioning):
            with self.hooked(cond.layer_hooks):
                return fn(cond, batch, *args)
        if self.mixes_rows and not any(c.answer_vectors is not None or c.layer_hooks for c in cond.items):
            return fn(cond, batch, *args)
        merged = row_hooks(cond.items) if row_hooked and any(c.layer_hooks for c in cond.items) else None
        if merged is not None:  # rows differ in their hooks' weights alone (adapters of several tasks): one pass
            rest = PerRow(tuple(dataclasses.replace(c, layer_hooks=()) for c in cond.items))
            if len(self._groups(rest)) == 1:
                rest = rest.items[0]
            if isinstance(rest, Conditioning) or (self.mixes_rows and not any(
                    c.answer_vectors is not None for c in rest.items)):
                with self.prefix_with_text():  # a prefix computed apart would miss the rows' hooks
                    if self._one_call(rest):
                        with self.hooked(merged):
                            return fn(rest, batch, *args)
        results = [(rows, self._grouped(fn, cond.items[rows[0]], batch.select(rows), *args))
                   for rows in self._groups(cond)]
        first = results[0][1]
        if isinstance(first, list):
            out: list = [None] * len(batch)
            for rows, got in results:
                for r, x in zip(rows, got):
                    out[r] = x
            return out
        if first.dim() == 1:
            merged = first.new_empty(len(batch))
        else:
            merged = first.new_full((len(batch), max(t.shape[1] for _, t in results)), float("-inf"))
        for rows, t in results:
            idx = torch.tensor(rows, device=t.device)
            if first.dim() == 1:
                merged[idx] = t
            else:
                merged[idx, : t.shape[1]] = t
        return merged

    def _one_call(self, cond) -> bool:
        """Whether scoring a batch under ``cond`` (a hook-free :class:`Conditioning` or
        :class:`PerRow`) runs every model call over all of the batch's rows, none over a part of
        them or a prefix the rows share: what per-row hooks (:func:`~softprompt.conditioning.row_hooks`)
        need. Here yes; a family that computes shared prefixes apart says when it does."""
        return True

    @contextlib.contextmanager
    def prefix_with_text(self):
        """For the ``with`` block, a prefix the rows share (lead specials, input vectors) goes
        through the model with each row's text, in the pass over all rows, not apart and once:
        what per-row hooks need, since a prefix computed apart would not meet each row's hooks.
        Here nothing changes (no family but the decoder's computes a prefix apart)."""
        yield

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
    def word_scores(self, cond, batch: EncodedBatch, length_normalize: bool = False) -> torch.Tensor:
        """Log-score of each candidate word of each row: ``[batch, max_words]``.

        ``cond``: anything :func:`~softprompt.conditioning.as_conditioning` takes. Scores of one
        row are comparable with each other (rank classification); the single-token fast path may
        omit the row's log-normaliser, which changes neither the ranking nor a softmax over the
        row's candidates. With answer vectors ``[n, dim]``: ``[batch, n]``, the log-softmax over
        the answers of the hidden state that predicts the answer (what vocabulary rows would
        multiply) times each answer vector (WARP, Hambardzumyan et al. 2021). Raises
        :class:`ConfigError` for a kind this family does not take.
        """
        return self._grouped(self._scores_one, self.conditioned(cond, batch), batch, length_normalize)

    def gold_nll(self, cond, batch: EncodedBatch) -> torch.Tensor:
        """Mean token negative log-likelihood of each row's gold word, full vocabulary: ``[batch]``
        (with answer vectors: minus the gold answer's log-score)."""
        return self._grouped(self._gold_one, self.conditioned(cond, batch), batch)

    def generate(self, cond, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        """Greedy continuation of each row's context (the conditioning before it): ``batch`` strings."""
        with torch.no_grad():
            # no per-row hooks: a sliding-window model generates row by row, a call over part of the batch
            return self._grouped(self._generate, self.conditioned(cond, batch), batch, max_new_tokens, row_hooked=False)

    def text_states(self, cond, batch: EncodedBatch) -> TextStates:
        """One forward pass over ``batch``'s contexts under ``cond`` (one
        :class:`~softprompt.conditioning.Conditioning`, or a :class:`PerRow` whose rows share one):
        a :class:`TextStates` (the last layer's states of the text, where the answer is read, and
        what the answer vectors multiply there). Differentiable. Raises :class:`ConfigError` for a
        family without such states (:attr:`has_text_states`) or rows of different conditionings."""
        cond = self.conditioned(cond, batch)
        if not self.has_text_states:
            raise ConfigError(f"{self.model_id!r} is {self.description} model ({self.family}): its answer is read by "
                              "a decoder, not at a text position, so it has no hidden states of the text and the answer "
                              "side by side; use a decoder-only or a masked language model (--model)")
        if isinstance(cond, PerRow):
            if len(self._groups(cond)) > 1:
                raise ConfigError("text states are read for one conditioning at a time: give the rows one Conditioning")
            cond = cond.items[0]
        with self.hooked(cond.layer_hooks):
            hidden, at, answer = self._text_states(cond, batch)
        lengths = torch.tensor([len(c) for c in batch.context], device=hidden.device)
        mask = (torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]).long()
        return TextStates(hidden, mask, at, answer)

    def _text_states(self, cond: Conditioning, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`text_states`' ``(hidden [batch, T, dim], answer_at [batch], answer [batch, dim])``,
        hooks installed (``T`` at least the longest context; positions past a row's end are ignored)."""
        raise ConfigError(f"{self.description} model gives no hidden states per text position")

    @staticmethod
    def answer_log_scores(answer: torch.Tensor, answer_vectors: torch.Tensor) -> torch.Tensor:
        """``[batch, n]``: the log-softmax over the answers of ``answer [batch, dim] @ answer_vectors
        [n, dim].T`` (float32): how answer vectors are scored (WARP, Hambardzumyan et al. 2021)."""
        av = answer_vectors.to(device=answer.device, dtype=torch.float32)
        return torch.log_softmax(answer.float() @ av.T, -1)

    def _scores_one(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        if isinstance(cond, Conditioning) and cond.answer_vectors is not None:
            return self.answer_log_scores(self._answer_hidden(cond, batch), cond.answer_vectors)
        return self._word_scores(cond, batch, length_normalize)

    def _gold_one(self, cond, batch: EncodedBatch) -> torch.Tensor:
        if isinstance(cond, Conditioning) and cond.answer_vectors is not None:
            if batch.gold is None:
                raise ConfigError("these rows carry no labels")
            scores = self._scores_one(cond, batch, False)
            return -scores.gather(1, torch.tensor(batch.gold, device=scores.device)[:, None]).squeeze(1)
        return self._gold_nll(cond, batch)

    def _head_input(self, run) -> torch.Tensor:
        """What the output embedding (the vocabulary rows) multiplies while ``run()`` runs the head."""
        seen = []
        handle = self.model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        try:
            run()
        finally:
            handle.remove()
        return seen[-1]

    @abstractmethod
    def _answer_hidden(self, cond: Conditioning, batch: EncodedBatch) -> torch.Tensor:
        """Per row, the vector the vocabulary rows would multiply at the answer slot: ``[batch, dim]``."""

    @abstractmethod
    def _word_scores(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        """:meth:`word_scores` without answer vectors, hooks installed."""

    @abstractmethod
    def _gold_nll(self, cond, batch: EncodedBatch) -> torch.Tensor:
        """:meth:`gold_nll` without answer vectors, hooks installed."""

    @abstractmethod
    def _generate(self, cond, batch: EncodedBatch, max_new_tokens: int) -> list[str]:
        """:meth:`generate`, hooks installed, no grad."""


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

    def slot_word_scores(self, cond, batch: EncodedBatch, slot: str, words=None, fills=None,
                         length_normalize: bool = False) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]`` (-inf pads).

        ``cond`` as for :meth:`word_scores` (answer vectors score through :meth:`word_scores`).
        ``words[b][w]``: token ids of row ``b``'s candidate ``w`` (default ``batch.words``, which
        fill ``batch.word_slot``). ``fills[name][b]``: token ids written into another answer slot
        ``name`` of row ``b``; a slot without a fill is left as encoded (a mask on a masked LM,
        nothing elsewhere). Each family says what it scores. Raises :class:`ConfigError` for an
        unknown slot or missing words.
        """
        cond = self.conditioned(cond, batch)
        if isinstance(cond, PerRow) and len(self._groups(cond)) > 1:
            words = self._slot_words(batch, slot, words)
            parts = []
            for rows in self._groups(cond):
                sub_fills = {k: [v[r] for r in rows] for k, v in (fills or {}).items()}
                parts.append((rows, self.slot_word_scores(cond.items[rows[0]], batch.select(rows), slot,
                                                          [words[r] for r in rows], sub_fills, length_normalize)))
            out = parts[0][1].new_full((len(batch), max(t.shape[1] for _, t in parts)), float("-inf"))
            for rows, t in parts:
                out[torch.tensor(rows, device=t.device), : t.shape[1]] = t
            return out
        if isinstance(cond, PerRow):
            cond = cond.items[0]
        if cond.answer_vectors is not None:
            raise ConfigError("answer vectors are scored at the answer slot by word_scores, not slot_word_scores")
        with self.hooked(cond.layer_hooks):
            return self._slot_word_scores(cond, batch, slot, words, fills, length_normalize)

    @abstractmethod
    def _slot_word_scores(self, cond: Conditioning, batch: EncodedBatch, slot: str, words, fills,
                          length_normalize: bool) -> torch.Tensor:
        """:meth:`slot_word_scores` for one conditioning, hooks installed."""

    def _slot_pairs(self, batch: EncodedBatch, slot: str, words, fills, filler):
        """Every (row, candidate) pair of ``slot`` laid out: ``(rows, seqs, starts, ends, stops, virtual)``.

        ``seqs[i]``: the row's context with the other slots filled from ``fills`` and ``slot``
        holding ``filler(word)``; the candidate's tokens are ``seqs[i][starts[i]:ends[i]]``,
        ``stops[i]`` is where the next answer slot starts (``len(seqs[i])`` after the last) and
        ``virtual[i]`` the row's virtual tokens ``(position, name, index)`` moved to ``seqs[i]``."""
        words = self._slot_words(batch, slot, words)
        fills = dict(fills or {})
        unknown = [name for name in fills if name not in batch.slot_names or name == slot]
        if unknown:
            raise ConfigError(
                f"fills for {', '.join(map(repr, unknown))}: fill the template's other answer slots "
                f"({', '.join(n for n in batch.slot_names if n != slot) or 'none'}) only"
            )
        width = 0 if self.mask_token_id is None else 1  # what an unfilled slot holds in the context
        cols = {name: batch.slot_positions(name) for name in batch.slot_names}
        rows, seqs, starts, ends, stops, moved = [], [], [], [], [], []
        for b, ws in enumerate(words):
            ctx = batch.context[b]
            row_virtual = batch.virtual[b] if batch.virtual else []
            for w in ws:
                out: list[int] = []
                virt: list[tuple[int, str, int]] = []
                cursor = 0
                start = end = stop = None

                def copy(lo: int, hi: int) -> None:  # ctx[lo:hi] onto the end of out, its virtual tokens moved along
                    virt.extend((len(out) + p - lo, name, i) for p, name, i in row_virtual if lo <= p < hi)
                    out.extend(ctx[lo:hi])

                for name in batch.slot_names:  # reading order
                    pos = cols[name][b]
                    copy(cursor, pos)
                    if end is not None and stop is None:
                        stop = len(out)
                    if name == slot:
                        start = len(out)
                        out += filler(w)
                        end = len(out)
                    else:
                        out += fills[name][b] if name in fills else ctx[pos: pos + width]
                    cursor = pos + width
                copy(cursor, len(ctx))
                rows.append(b)
                seqs.append(out)
                starts.append(start)
                ends.append(end)
                stops.append(len(out) if stop is None else stop)
                moved.append(virt)
        return rows, seqs, starts, ends, stops, moved

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


def _replacing(fn):
    """A forward hook replacing a module's output ``h`` (or a tuple's first element) by ``fn(h)``."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]),) + tuple(output[1:])
        return fn(output)

    return hook


def _single_token_rows(batch: EncodedBatch, device) -> torch.Tensor:
    """The one token of each word of a :attr:`~EncodedBatch.single_token` batch: ``[k]`` when
    every row has the same ids, else ``[batch, k]`` (rows whose contexts end differently, or the
    tasks of a mixed batch), a row with fewer words padded with its first word's id (its scores
    there set to ``-inf`` by :func:`_without_padding`)."""
    firsts = [[w[0] for w in ws] for ws in batch.words]
    if all(f == firsts[0] for f in firsts):
        return torch.tensor(firsts[0], device=device)
    width = max(map(len, firsts))
    return torch.tensor([f + f[:1] * (width - len(f)) for f in firsts], device=device)


def _without_padding(scores: torch.Tensor, batch: EncodedBatch) -> torch.Tensor:
    """``scores [batch, k]`` with the positions past each row's own words set to ``-inf``, as
    :meth:`Backbone._unflatten` pads (rows of tasks with fewer labels in a mixed batch)."""
    counts = torch.tensor([len(ws) for ws in batch.words], device=scores.device)
    if bool((counts == scores.shape[1]).all()):
        return scores
    return scores.masked_fill(torch.arange(scores.shape[1], device=scores.device)[None] >= counts[:, None], float("-inf"))


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i: i + len(needle)] == needle:
            return i
    return -1
