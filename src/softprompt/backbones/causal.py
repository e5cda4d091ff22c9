"""Decoder-only models (Llama, SmolLM, GPT-2, Gemma, ...): ``[BOS] prompt text word``.

The prompt sits before the text and, under causal attention, attends only to itself (and the
BOS before it). Its keys and values in every layer are therefore the same for every row of a
batch. :class:`CausalBackbone` runs the prefix once with batch size 1, expands its per-layer
keys/values to the batch as views (no copy, no recomputation), and runs the texts against that
cache with position ids that continue after the prefix. Gradients flow back through the cache
into the prompt, summed over rows by the expand. At inference (no grad) the prefix keys/values
are cached per prompt tensor until it changes (its version counter moves on every in-place
update, e.g. an optimizer step).

Only scored logits are computed: the final hidden states are gathered at the positions that
predict a label token, and the output embedding is applied there alone; when every label is a
single token shared by all rows, only those vocabulary rows are multiplied (exact for ranking and
for a softmax over labels).

``shared_prefix=False`` selects plain concatenation of ``[prefix; text]`` (the reference path,
used by tests to check the fast path).

Layer keys/values (:class:`~softprompt.conditioning.LayerKV`, prefix tuning) go into the same
cache, after the lead special token's own keys/values (computed by the model, at position 0 as
always), and the text's positions continue after them: ``[BOS] prefix text``, exactly where a
prompt of the same length would sit. A prompt's keys/values (:meth:`CausalBackbone.prompt_kv`)
used as layer keys/values therefore score exactly as the prompt itself.

The inference cache is keyed on everything that changes its contents: the input vectors' or
layer keys/values' object and version counters, the layer hooks (function and the versions of the
tensors they read), the versions of the model's trainable parameters (full tuning), and the
model's dtype, device and autocast precision.
Layer hooks act on the decoder layers' ``self_attn``/``attn`` and ``mlp`` modules.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections import OrderedDict

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from ..conditioning import Conditioning, LayerKV, PerRow
from ..conditioning import PrefixKV  # noqa: F401  (importable from here, as before)
from ..encoding import EncodedBatch
from ..errors import ConfigError
from .base import Backbone, Block, _single_token_rows, _without_padding, find_child


class CausalBackbone(Backbone):
    family = "causal"
    description = "a decoder-only"
    mixes_rows = True

    def __init__(self, model, tokenizer, model_id=None, max_length=None, shared_prefix: bool = True,
                 kv_cache_size: int = 32):
        super().__init__(model, tokenizer, model_id, max_length)
        self.trail_ids = []  # an EOS before the label would be wrong for a decoder
        self.shared_prefix = shared_prefix
        self.kv_cache_size = kv_cache_size
        self._kv_cache: OrderedDict[int, tuple] = OrderedDict()
        self._hits = self._misses = 0
        self._kv_shapes = self._kv_devices = None
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        # Sliding-window attention (Gemma, Mistral): the window in tokens, or None when every layer
        # attends to all earlier positions.
        types = getattr(cfg, "layer_types", None) or ()
        window = getattr(cfg, "sliding_window", None)
        self._window = window if window and (not types or any("sliding" in t for t in types)) else None
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept either.
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def auto_class(cls):
        return AutoModelForCausalLM

    @property
    def peft_exportable(self) -> bool:
        return True

    # ------------------------------------------------------------------ internals
    @property
    def _decoder(self):
        return self.model.base_model

    def _run(self, cache=None, **kwargs):
        """Call the decoder stack with ``cache`` under this version's keyword; returns (output, cache)."""
        if cache is not None:
            kwargs[self._cache_kw] = cache
        out = self._decoder(**kwargs)
        if self._cache_kw == "cache":
            return out, getattr(out, "cache", None)
        return out, getattr(out, "past_key_values", None)

    def _head(self, hidden: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``hidden [n, dim]`` over the vocabulary, or over ``rows [k]`` only, or over
        each row's own ``rows [n, k]`` -> ``[n, k]``."""
        head = self.model.get_output_embeddings()
        hidden = hidden.to(head.weight.device)  # the last layer may sit on another device (device_map)
        if rows is None:
            logits = head(hidden)
        elif rows.dim() == 2:
            logits = torch.einsum("nd,nkd->nk", hidden, head.weight[rows])
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[rows]
        else:
            logits = hidden @ head.weight[rows].T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[rows]
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits.float()

    def _cached(self, source, stamp):
        """The inference cache's keys/values for ``source`` (input vectors or a :class:`LayerKV`)
        under ``stamp`` (hooks' and weights' versions), or None.

        An entry is keyed by the object's id and holds a weak reference to the object itself, its
        version and the stamp: a tensor and a :class:`LayerKV` never share an entry, nor does a new
        object that reuses a dead one's id, nor an object updated in place since, nor one seen
        under other hooks or weights."""
        hit = self._kv_cache.get(id(source))
        if hit is not None and hit[0]() is source and hit[1] == (source._version, stamp):
            self._kv_cache.move_to_end(id(source))
            self._hits += 1
            return hit[2]
        self._misses += 1
        return None

    def _remember(self, source, stamp, kv) -> None:
        key, cache = id(source), self._kv_cache
        # the entry goes when its source does (a dead prompt's keys/values are not kept until evicted)
        self._kv_cache[key] = (weakref.ref(source, lambda _: cache.pop(key, None)), (source._version, stamp), kv)
        while len(self._kv_cache) > self.kv_cache_size:
            self._kv_cache.popitem(last=False)

    def cache_info(self) -> dict[str, int]:
        """The inference cache of prefix keys/values: ``entries`` held, ``hits`` and ``misses`` so far."""
        return {"entries": len(self._kv_cache), "hits": self._hits, "misses": self._misses}

    def _prefix_kv(self, prefix: torch.Tensor, source=None, stamp=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(key, value)``, each ``[1, kv_heads, prefix_len, head_dim]``, of ``prefix [P, dim]``
        (cached under ``source`` at inference when given)."""
        use_cache = source is not None and not torch.is_grad_enabled()
        if use_cache:
            hit = self._cached(source, stamp)
            if hit is not None:
                return hit
        pos = torch.arange(prefix.shape[0], device=self.device)[None]
        _, cache = self._run(inputs_embeds=prefix[None], position_ids=pos, use_cache=True,
                             cache=_full_cache())
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if use_cache:
            self._remember(source, stamp, kv)
        return kv

    def _given_kv(self, prefix: LayerKV, stamp=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(key, value)`` of the lead specials followed by ``prefix``'s own keys/values,
        each ``[1, kv_heads, len(lead) + length, head_dim]`` in the model's dtype."""
        use_cache = not torch.is_grad_enabled()
        if use_cache:
            hit = self._cached(prefix, stamp)
            if hit is not None:
                return hit
        self.check_prefix(prefix)
        lead = self._lead_and_prompt(None)
        lead_kv = None if lead is None else self._prefix_kv(lead)
        kv = []
        for i, (k, v) in enumerate(prefix.layers):
            if lead_kv is None:  # each layer's keys/values where that layer runs (device_map may spread them)
                kv.append((k.to(self._kv_devices[i], self.dtype), v.to(self._kv_devices[i], self.dtype)))
            else:
                lk, lv = lead_kv[i]
                kv.append((torch.cat([lk, k.to(lk)], 2), torch.cat([lv, v.to(lv)], 2)))
        if use_cache:
            self._remember(prefix, stamp, kv)
        return kv

    def prompt_kv(self, prompt: torch.Tensor) -> LayerKV:
        """The keys/values the model computes for ``prompt [length, dim]`` placed after the lead
        specials, as a :class:`LayerKV` of ``length`` positions (the lead's own are left out):
        scoring with it equals scoring with ``prompt``."""
        lead = len(self.lead_ids)
        kv = self._prefix_kv(self._lead_and_prompt(prompt))
        return LayerKV(tuple((k[:, :, lead:], v[:, :, lead:]) for k, v in kv))

    @property
    def kv_shapes(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per layer, ``((kv_heads, head_dim) of the key, (kv_heads, head_dim) of the value)``."""
        if self._kv_shapes is None:  # found by running one token; the devices are kept too
            with torch.no_grad():
                kv = self._prefix_kv(self.embed(torch.tensor([self.pad_id])))
            self._kv_shapes = LayerKV(tuple(kv)).layer_shapes
            self._kv_devices = [k.device for k, _ in kv]
        return self._kv_shapes

    def check_prefix(self, prefix: LayerKV) -> None:
        """Raise :class:`ConfigError` unless ``prefix``'s per-layer shapes are this model's."""
        got = prefix.layer_shapes
        lengths = {t.shape[2] for kv in prefix.layers for t in kv}
        if got != self.kv_shapes or len(lengths) != 1:
            raise ConfigError(
                f"these prefix keys/values have {len(got)} layers of ((kv_heads, head_dim) of key, of value) "
                f"{sorted(set(got))} and lengths {sorted(lengths)}, but model {self.model_id!r} has "
                f"{len(self.kv_shapes)} layers of {sorted(set(self.kv_shapes))}: use the prefix with the model it "
                f"was made for"
            )

    def blocks(self) -> list[Block]:
        """The decoder layers: ``self_attn`` (or ``attn``) and ``mlp`` of each."""
        layers = find_child(self._decoder, ("layers", "h", "decoder.layers", "block"), "decoder layers")
        return [Block(find_child(layer, ("self_attn", "attn", "attention"), "attention"),
                      find_child(layer, ("mlp", "feed_forward", "ffn"), "feed-forward"), "decoder")
                for layer in layers]

    @staticmethod
    def _source(cond: Conditioning):
        """What goes before the text: input vectors, a :class:`LayerKV`, or None."""
        if cond.input_vectors is not None and cond.layer_kv is not None:
            raise ConfigError("a conditioning with both input vectors and layer keys/values is not supported: "
                              "give one of them")
        return cond.layer_kv if cond.layer_kv is not None else cond.input_vectors

    def _one_call(self, cond) -> bool:
        """No when a prefix (the lead specials, input vectors, layer keys/values) goes through the
        model apart from the text, shared by rows (:meth:`_prefix_cache`); yes without one, or
        when one conditioning's prefix runs with the text (``shared_prefix=False``, as inside
        :meth:`prefix_with_text`). Layer keys/values always go apart."""
        sources = [self._source(c) for c in (cond.items if isinstance(cond, PerRow) else (cond,))]
        if all(s is None for s in sources) and not self.lead_ids:
            return True
        return isinstance(cond, Conditioning) and not self.shared_prefix and not isinstance(sources[0], LayerKV)

    @contextlib.contextmanager
    def prefix_with_text(self):
        """The lead specials and input vectors go through the model with each row's text
        (``shared_prefix`` off) for the ``with`` block: one pass over all rows, which per-row
        hooks (adapters of several tasks on a model whose tokenizer puts a BOS first) need."""
        shared, self.shared_prefix = self.shared_prefix, False
        try:
            yield
        finally:
            self.shared_prefix = shared

    def _prefix_cache(self, sources: list, n: int, stamp=None):
        """A cache holding each row's prefix keys/values, left-padded to the widest prefix.

        ``sources``: one entry per row (a ``[length, dim]`` tensor, a :class:`LayerKV` or None);
        rows sharing a source object share its keys/values (computed once, expanded as views when
        all rows share one).
        Returns ``(cache, prefix_mask [n, width], offsets [n])`` where ``offsets`` is each row's
        prefix length (its text starts at that position), or None when no row has a prefix.
        """
        groups: dict[int, list[int]] = {}
        for i, src in enumerate(sources):
            groups.setdefault(id(src), []).append(i)
        kvs, lengths = {}, {}
        for key, rows in groups.items():
            src = sources[rows[0]]
            if isinstance(src, LayerKV):
                kvs[key] = self._given_kv(src, stamp)
                lengths[key] = kvs[key][0][0].shape[2]
                continue
            prefix = self._lead_and_prompt(src)
            lengths[key] = 0 if prefix is None else prefix.shape[0]
            kvs[key] = None if prefix is None else self._prefix_kv(prefix, src, stamp)
        width = max(lengths.values())
        if width == 0:
            return None, None, None
        offsets = torch.tensor([lengths[id(src)] for src in sources], device=self.device)
        prefix_mask = (torch.arange(width, device=self.device)[None] >= (width - offsets)[:, None]).long()
        cache = _full_cache()
        if len(groups) == 1:
            for i, (k, v) in enumerate(kvs[next(iter(groups))]):
                cache.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), i)
            return cache, prefix_mask, offsets
        n_layers = len(next(kv for kv in kvs.values() if kv is not None))
        for layer in range(n_layers):
            ks, vs = [], []
            for i, src in enumerate(sources):
                kv = kvs[id(src)]
                if kv is None:
                    ref = next(x for x in kvs.values() if x is not None)[layer][0]
                    k = v = ref.new_zeros(1, ref.shape[1], 0, ref.shape[3])
                else:
                    k, v = kv[layer]
                pad = width - k.shape[2]
                ks.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))  # left: the prompt touches the text
                vs.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
            cache.update(torch.cat(ks), torch.cat(vs), layer)
        return cache, prefix_mask, offsets

    def _forward(self, cond, seqs: list[list[int]], virtual=None, keep_cache: bool = False):
        """Final hidden states of the text positions of ``seqs``.

        ``cond``: a :class:`Conditioning`, or a :class:`PerRow` (rows may mix input vectors, layer
        keys/values, virtual tokens and nothing: a mixed-task batch). ``virtual[i]``: row ``i``'s
        virtual tokens ``(position, name, index)``. Returns ``(hidden [n, T, dim], mask [n, T],
        cache, attention mask over the cache [n, width + T] or None, offsets [n] or None)``.
        """
        n = len(seqs)
        items = list(cond.items) if isinstance(cond, PerRow) else [cond] * n
        if len(items) != n:
            raise ConfigError(f"{len(items)} per-row conditionings for {n} rows: give one per row")
        tables = [c.virtual_tokens for c in items]
        sources = [self._source(c) for c in items]
        if isinstance(cond, Conditioning) and not self.shared_prefix and not isinstance(sources[0], LayerKV) \
                and (sources[0] is not None or self.lead_ids):
            x, full_mask, p = self.inputs(seqs, sources[0], virtual, tables)
            out, cache = self._run(_full_cache() if keep_cache else None, inputs_embeds=x, attention_mask=full_mask,
                                   use_cache=keep_cache)
            return out.last_hidden_state[:, p:], full_mask[:, p:], cache, full_mask, torch.full((n,), p, device=self.device)
        emb, mask, _ = self.inputs(seqs, None, virtual, tables, specials=False)
        t = emb.shape[1]
        hooks = cond.layer_hooks if isinstance(cond, Conditioning) else ()
        stamp = (tuple(h.version for h in hooks), self.weights_version(), self.dtype, self.device, _autocast(self.device))
        cache, prefix_mask, offsets = self._prefix_cache(sources, n, stamp)
        if cache is None:
            out, cache = self._run(_full_cache() if keep_cache else None, inputs_embeds=emb, attention_mask=mask,
                                   use_cache=keep_cache)
            return out.last_hidden_state, mask, cache, mask, None
        full_mask = torch.cat([prefix_mask, mask], 1)
        pos = offsets[:, None] + torch.arange(t, device=self.device)[None]
        out, cache = self._run(inputs_embeds=emb, attention_mask=full_mask, position_ids=pos, cache=cache, use_cache=True)
        return out.last_hidden_state, mask, cache, full_mask, offsets

    def _summed_logprobs(self, hidden: torch.Tensor, rows: list[int], cols: list[int], targets: list[int],
                         owner: list[int], n: int) -> torch.Tensor:
        """Per owner, the sum of log p(``targets[i]``) over the whole vocabulary, read at
        ``hidden [*, T, dim]`` position ``(rows[i], cols[i])``: ``[n]`` (0 for an owner with none)."""
        h = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]
        lp = torch.log_softmax(self._head(h), -1)
        tok_lp = lp.gather(-1, torch.tensor(targets, device=lp.device)[:, None]).squeeze(-1)
        return torch.zeros(n, device=lp.device, dtype=tok_lp.dtype).index_add(0, torch.tensor(owner, device=lp.device),
                                                                              tok_lp)

    def _scored_logprobs(self, cond, contexts: list[list[int]], words: list[list[int]],
                         length_normalize: bool, virtual=None) -> torch.Tensor:
        """Sum of log p(word tokens | context) for aligned ``contexts``/``words`` lists -> ``[n]``."""
        seqs = [c + w for c, w in zip(contexts, words)]
        hidden = self._forward(cond, seqs, virtual)[0]
        rows, cols, targets, owner = [], [], [], []
        for i, (c, w) in enumerate(zip(contexts, words)):
            skip = {p for p, _, _ in virtual[i]} if virtual else ()  # a virtual token is read, never predicted
            for j, tok in enumerate(w):
                if len(c) + j in skip:
                    continue
                rows.append(i)
                cols.append(len(c) - 1 + j)
                targets.append(tok)
                owner.append(i)
        total = self._summed_logprobs(hidden, rows, cols, targets, owner, len(seqs))
        dev = total.device
        if length_normalize:
            total = total / torch.bincount(torch.tensor(owner, device=dev), minlength=len(seqs)).clamp(min=1).to(total.dtype)
        return total

    # Expanded continuations (sliding-window models): a chunk holds whole (row, word length) groups;
    # a new chunk starts where the cached positions (candidates x text) would pass
    # ``continuation_positions``, or where the word length changes once it has ``continuation_pairs``
    # candidates (less padding). A chunk of one row expands that row's keys/values as views; small
    # rows (a choice task's) go together.
    continuation_positions: int = 16384
    continuation_pairs: int = 64

    def _continuation_scores(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        """Log-score of every candidate word of every row, ``[batch, max_words]`` (-inf pads).

        The text is run once and its keys/values kept; each word's first token is read where the
        row's text ends, and the rest of the words go as one batched continuation against those
        keys/values at the positions that follow the row's text: nothing of the text is recomputed.
        A row's candidates sit side by side in one sequence under a block-diagonal mask
        (:meth:`_continue_packed`); with sliding-window layers the row's keys/values are expanded to
        its candidates as views instead (:meth:`_continue`). Equal to scoring each (row, word) pair
        as one sequence; differentiable in the prompt.

        A row whose text begins another row's (same conditioning, same virtual tokens), e.g. one
        row cut at each answer slot of a template, is not run: it reads the longer row's
        keys/values up to its own length (:meth:`_text_owners`), and its candidates are packed into
        that row's sequence.
        """
        n = len(batch)
        owner = self._text_owners(cond, batch)
        run = list(dict.fromkeys(owner))
        kv_row = [run.index(o) for o in owner]  # the run row holding each row's keys/values
        ctx = batch.context if len(run) == n else [batch.context[i] for i in run]
        virtual = batch.virtual or None
        if virtual and len(run) < n:
            virtual = [batch.virtual[i] for i in run]
        hidden, mask, cache, attn, offsets = self._forward(cond, ctx, virtual, keep_cache=True)
        device = mask.device
        kv_index = torch.tensor(kv_row, device=device)
        lengths = torch.tensor([len(c) for c in batch.context], device=device)
        width = attn.shape[1] - mask.shape[1]  # cached positions before the text (the prefix)
        attn = attn[kv_index] * (torch.arange(attn.shape[1], device=device)[None] < (width + lengths)[:, None])
        offsets = None if offsets is None else offsets[kv_index]
        starts = lengths if offsets is None else lengths + offsets  # position of each row's first word token
        last = hidden[kv_index.to(hidden.device), (lengths - 1).to(hidden.device)]
        first_lp = torch.log_softmax(self._head(last), -1)  # [n, vocab]
        dev = first_lp.device
        width = max(len(ws) for ws in batch.words)
        out = first_lp.new_full((n, width), float("-inf"))
        pairs = [(b, w) for b, ws in enumerate(batch.words) for w in range(len(ws))]
        rows = torch.tensor([b for b, _ in pairs], device=dev)
        cols = torch.tensor([w for _, w in pairs], device=dev)
        firsts = torch.tensor([batch.words[b][w][0] for b, w in pairs], device=dev)
        totals = first_lp[rows, firsts]
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        longer = [i for i, (b, w) in enumerate(pairs) if len(batch.words[b][w]) > 1]
        keys = [(pairs[i][0], len(batch.words[pairs[i][0]][pairs[i][1]])) for i in longer]
        packed = self._window is None
        if packed:  # rows sharing keys/values pack together
            chunks = self._packed_chunks([(kv_row[b], k) for b, k in keys], attn.shape[1])
        else:  # rows mix in a chunk only while the window holds every cached position (padding included)
            longest = max((k for _, k in keys), default=0)
            chunks = self._continuation_chunks(keys, attn.shape[1], attn.shape[1] + longest <= self._window)
        for chunk in chunks:
            idx = [longer[i] for i in chunk]
            words = [batch.words[pairs[i][0]][pairs[i][1]] for i in idx]
            go = self._continue_packed if packed else self._continue
            lp = go(layers, attn, starts, [pairs[i][0] for i in idx], words, kv_row)
            totals = totals.index_add(0, torch.tensor(idx, device=dev), lp.to(dev))
        if length_normalize:
            totals = totals / torch.tensor([len(batch.words[b][w]) for b, w in pairs], device=dev, dtype=totals.dtype)
        return out.index_put((rows, cols), totals)

    @staticmethod
    def _text_owners(cond, batch: EncodedBatch) -> list[int]:
        """For each row, the row whose keys/values it reads: the longest row of the batch whose text
        begins with this row's text and has the same virtual tokens there (itself when none does).
        Only under one conditioning for all rows (a :class:`PerRow` batch keeps every row its own)."""
        n = len(batch)
        if isinstance(cond, PerRow) or n < 2:
            return list(range(n))
        ctx = [tuple(c) for c in batch.context]
        virtual = batch.virtual or [[] for _ in range(n)]
        owners = []
        for b in range(n):
            holders = [c for c in range(n) if ctx[c][: len(ctx[b])] == ctx[b]
                       and [v for v in virtual[c] if v[0] < len(ctx[b])] == list(virtual[b])]
            owners.append(max(holders, key=lambda c: (len(ctx[c]), -c)))  # the longest, the first of equals
        return owners

    def _continuation_chunks(self, keys: list[tuple[int, int]], cached: int, mix_rows: bool = True) -> list[list[int]]:
        """Indices into ``keys`` (each candidate's ``(row, tokens)``) grouped into chunks: sorted by
        row, then length; cut between groups as the class attributes above say, and between rows
        unless ``mix_rows``."""
        chunks, current = [], []
        for i in sorted(range(len(keys)), key=keys.__getitem__):
            if current and keys[i] != keys[current[-1]]:
                full = (len(current) + 1) * cached > self.continuation_positions
                full = full or (not mix_rows and keys[i][0] != keys[current[-1]][0])
                if full or (keys[i][1] != keys[current[-1]][1] and len(current) >= self.continuation_pairs):
                    chunks.append(current)
                    current = []
            current.append(i)
        return chunks + [current] if current else chunks

    # Packed continuations: a chunk of rows holds at most this many mask entries (rows x queries x keys).
    continuation_mask_entries: int = 1 << 25

    def _packed_chunks(self, keys: list[tuple[int, int]], cached: int) -> list[list[int]]:
        """Indices into ``keys`` (each candidate's ``(row, tokens)``, row-major) grouped into chunks of
        whole rows whose packed continuations fit :attr:`continuation_mask_entries`."""
        per_row: dict[int, list[int]] = {}
        for i, (b, tokens) in enumerate(keys):
            per_row.setdefault(b, []).append(i)
        chunks, current, widest = [], [], 0
        for members in per_row.values():
            width = sum(keys[i][1] - 1 for i in members)
            wider = max(widest, width)
            if current and (len(current) + 1) * wider * (cached + wider) > self.continuation_mask_entries:
                chunks.append([i for row in current for i in row])
                current, wider = [], width
            current.append(members)
            widest = wider
        return chunks + [[i for row in current for i in row]] if current else chunks

    def _continue_packed(self, layers, attn: torch.Tensor, starts: torch.Tensor, rows: list[int],
                         words: list[list[int]], kv_row: list[int] | None = None) -> torch.Tensor:
        """As :meth:`_continue`, with the candidates of the rows sharing keys/values (``kv_row[b]``,
        the index into ``layers`` holding row ``b``'s; each its own by default) side by side in one
        sequence after the text: a token attends to its own row's cached positions (``attn[b]``) and
        to its own word's earlier tokens (a block-diagonal mask; positions restart after the row's
        text for every word), so the text's keys/values are not copied per candidate. Not for
        sliding-window layers (their cache keeps a window only)."""
        kv_row = list(range(attn.shape[0])) if kv_row is None else kv_row
        order = list(dict.fromkeys(kv_row[b] for b in rows))
        slot = {r: s for s, r in enumerate(order)}
        seqs, rel, owner, row_of = [[] for _ in order], [[] for _ in order], [[] for _ in order], [[] for _ in order]
        where = []
        for i, (b, w) in enumerate(zip(rows, words)):
            s = slot[kv_row[b]]
            where.append((s, len(seqs[s])))
            seqs[s].extend(w[:-1])
            rel[s].extend(range(len(w) - 1))
            owner[s].extend([i] * (len(w) - 1))
            row_of[s].extend([b] * (len(w) - 1))
        ids, _ = self._pad(seqs)
        r, lq = ids.shape
        own = torch.full((r, lq), -1, dtype=torch.long)
        pos = torch.zeros((r, lq), dtype=torch.long)
        tok_row = torch.zeros((r, lq), dtype=torch.long)
        for s in range(r):
            own[s, : len(owner[s])] = torch.tensor(owner[s])
            pos[s, : len(rel[s])] = torch.tensor(rel[s])
            tok_row[s] = row_of[s][0]  # padding reads the sequence's first row (its output is never used)
            tok_row[s, : len(row_of[s])] = torch.tensor(row_of[s])
        own, pos, tok_row = own.to(self.device), pos.to(self.device), tok_row.to(attn.device)
        index = torch.tensor(order, device=attn.device)
        same = (own[:, :, None] == own[:, None, :]) & (own[:, None, :] >= 0) & (pos[:, None, :] <= pos[:, :, None])
        allowed = torch.cat([attn.bool()[tok_row].to(same.device), same], 2)[:, None]  # [r, 1, lq, S + lq]
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":  # eager adds the mask to the scores
            allowed = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill(
                ~allowed, torch.finfo(self.dtype).min)
        cache = _full_cache()
        for i, (key, value) in enumerate(layers):
            cache.update(key[index.to(key.device)], value[index.to(value.device)], i)
        out, _ = self._run(inputs_embeds=self.embed(ids), attention_mask=allowed,
                           position_ids=starts[tok_row.to(starts.device)] + pos, cache=cache, use_cache=True)
        hidden = out.last_hidden_state
        sel_s = [where[i][0] for i, w in enumerate(words) for _ in w[1:]]
        sel_c = [where[i][1] + j for i, w in enumerate(words) for j in range(len(w) - 1)]
        word_of = [i for i, w in enumerate(words) for _ in w[1:]]
        return self._summed_logprobs(hidden, sel_s, sel_c, [t for w in words for t in w[1:]], word_of, len(words))

    def _continue(self, layers, attn: torch.Tensor, starts: torch.Tensor, rows: list[int],
                  words: list[list[int]], kv_row: list[int] | None = None) -> torch.Tensor:
        """Sum of log p(word[1:] | text, word[0]) of each ``words[i]`` after the text of row
        ``rows[i]``: ``layers`` the text's per-layer ``(key, value) [n, kv_heads, cached, head_dim]``,
        ``attn [n, cached]`` its attention mask, ``starts [n]`` the position after each row's text,
        ``kv_row[b]`` the index into ``layers`` of row ``b``'s keys/values (its own by default).
        Returns ``[len(words)]``."""
        k = len(words)
        same = all(b == rows[0] for b in rows)
        index = torch.tensor(rows, device=attn.device)
        kv_row = list(range(attn.shape[0])) if kv_row is None else kv_row
        kv_index = torch.tensor([kv_row[b] for b in rows], device=attn.device)
        first = kv_row[rows[0]]
        if same:  # the row's keys end where its text does: its padding is dropped, so a sliding
            # window counts from the row's own last token
            stop = int(attn[rows[0]].nonzero().max()) + 1
            attn, layers = attn[:, :stop], [(key[:, :, :stop], value[:, :, :stop]) for key, value in layers]
        cache = _full_cache()
        for i, (key, value) in enumerate(layers):
            if same:  # one row's keys/values for all its candidates: views, no copy
                key, value = key[first:first + 1].expand(k, -1, -1, -1), value[first:first + 1].expand(k, -1, -1, -1)
            else:
                key, value = key[kv_index.to(key.device)], value[kv_index.to(value.device)]
            cache.update(key, value, i)
        ids, cont_mask = self._pad([w[:-1] for w in words])
        full_mask = torch.cat([attn[index], cont_mask], 1)
        pos = starts[index][:, None] + torch.arange(ids.shape[1], device=self.device)[None]
        out, _ = self._run(inputs_embeds=self.embed(ids), attention_mask=full_mask, position_ids=pos, cache=cache,
                           use_cache=True)
        hidden = out.last_hidden_state
        sel_rows = [i for i, w in enumerate(words) for _ in w[1:]]
        sel_cols = [j for w in words for j in range(len(w) - 1)]
        return self._summed_logprobs(hidden, sel_rows, sel_cols, [t for w in words for t in w[1:]], sel_rows, k)

    # ---------------------------------------------------------------------- API
    def _last_hidden(self, cond, batch: EncodedBatch) -> torch.Tensor:
        """The final hidden state of each row's last context token: ``[batch, dim]``."""
        hidden, mask = self._forward(cond, batch.context, batch.virtual or None)[:2]
        last = (mask.sum(1) - 1).to(hidden.device)
        return hidden[torch.arange(len(batch), device=hidden.device), last]

    def _answer_hidden(self, cond, batch: EncodedBatch) -> torch.Tensor:
        return self._last_hidden(cond, batch if batch.answer_at_end else batch.before_answer())

    def _text_states(self, cond, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The text's final hidden states; the answer is read where :meth:`_answer_hidden` reads it,
        the state just before the slot (under causal attention the text after it changes nothing there)."""
        hidden = self._forward(cond, batch.context, batch.virtual or None)[0]
        pos = torch.tensor(batch.slot_positions(batch.word_slot), device=hidden.device)
        if bool((pos < 1).any()):
            raise ConfigError("the answer slot opens the text, so no text position predicts it: put text before "
                              "it in --template")
        return hidden, pos - 1, hidden[torch.arange(len(batch), device=hidden.device), pos - 1]

    def _word_scores(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        if not batch.answer_at_end:  # the word sits inside the text: score it there, over what follows
            return self.slot_word_scores(cond, batch, batch.word_slot, length_normalize=length_normalize)
        if batch.single_token:
            h = self._last_hidden(cond, batch)
            return _without_padding(self._head(h, _single_token_rows(batch, self.model.get_output_embeddings().weight.device)),
                                    batch)
        return self._continuation_scores(cond, batch, length_normalize)

    def _gold_nll(self, cond, batch: EncodedBatch) -> torch.Tensor:
        if not batch.answer_at_end:
            return -self.slot_word_scores(cond, batch, batch.word_slot, [[w] for w in batch.gold_words()], None, True)[:, 0]
        words = batch.gold_words()
        return -self._scored_logprobs(cond, batch.context, words, True, batch.virtual or None)

    def _generate(self, cond, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        batch = batch if batch.answer_at_end else batch.before_answer()  # continue the text before the slot
        hidden, mask, cache, attn, offsets = self._forward(cond, batch.context, batch.virtual or None, keep_cache=True)
        n = len(batch)
        if self._window is not None and n > 1 and attn.shape[1] + max_new_tokens > self._window:
            # new tokens follow each row's padding, which a sliding window would count: one row at a time
            items = cond.items if isinstance(cond, PerRow) else [cond] * n
            return [self._generate(items[i], batch.select([i]), max_new_tokens)[0] for i in range(n)]
        lengths = mask.sum(1)
        starts = lengths if offsets is None else lengths + offsets
        logits = self._head(hidden[torch.arange(n, device=hidden.device), (lengths - 1).to(hidden.device)])
        eos = self.tokenizer.eos_token_id
        out = torch.zeros((n, 0), dtype=torch.long, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        for step in range(max_new_tokens):
            tok = logits.argmax(-1)
            out = torch.cat([out, tok[:, None]], 1)
            done |= tok == eos
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            attn = torch.cat([attn, attn.new_ones(n, 1)], 1)
            pos = (starts + step)[:, None]
            step_out, cache = self._run(inputs_embeds=self.embed(tok[:, None]), attention_mask=attn, position_ids=pos,
                                        cache=cache, use_cache=True)
            logits = self._head(step_out.last_hidden_state[:, -1])
        texts = []
        for row in out.tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts

    # ------------------------------------------------------------ template slots
    def _slot_word_scores(self, cond, batch: EncodedBatch, slot: str, words, fills,
                          length_normalize: bool) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]``.

        The text is read in order: the score is ``log p(word + the text after the slot up to the
        next answer slot | everything before)``, teacher-forced (a slot ending the text scores the
        word alone, as :meth:`word_scores`). Answer slots before ``slot`` must be filled:
        ``fills[name][b]``, token ids per row. ``length_normalize`` divides by the tokens scored.
        Raises :class:`ConfigError` when an earlier slot has no fill (and as the base method says).
        """
        earlier = batch.slot_names[: batch.slot_names.index(slot)] if slot in batch.slot_names else ()
        missing = [name for name in earlier if name not in (fills or {})]
        if missing:
            raise ConfigError(
                f"answer slot {slot!r} follows slot(s) {', '.join(map(repr, missing))}, which a decoder-only model "
                "reads first: give their words as fills (slot_word_scores(..., fills={name: token ids per row}))"
            )
        rows, seqs, starts, _, stops, virtual = self._slot_pairs(batch, slot, words, fills, list)
        contexts = [s[:a] for s, a in zip(seqs, starts)]
        scored = [s[a:z] for s, a, z in zip(seqs, starts, stops)]
        virtual = [[v for v in vs if v[0] < z] for vs, z in zip(virtual, stops)]  # those in the text read
        flat = self._scored_logprobs(cond, contexts, scored, length_normalize, virtual if any(virtual) else None)
        return self._pairs_to_rows(rows, len(batch), flat)


def _full_cache() -> DynamicCache:
    """A cache that keeps every position in every layer. The model masks its sliding-window layers
    itself (by cache index), so keys/values kept beyond the window are never attended to, but a
    prefix longer than the window keeps all its keys/values and a continuation can start from any
    row's own end (a cache built from the model's config would keep only each window's tail)."""
    return DynamicCache()


def _autocast(device: torch.device):
    """The autocast precision in force on ``device``'s type, or None (part of the cache key)."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)
