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

Wherever a prompt tensor is accepted, a :class:`PrefixKV` may stand instead: keys and values given
directly for every layer (prefix tuning). They go into the same cache, after the lead special
token's own keys/values (computed by the model, at position 0 as always), and the text's
positions continue after them: ``[BOS] prefix text``, exactly where a prompt of the same length
would sit. A prompt's keys/values (:meth:`CausalBackbone.prompt_kv`) used as a :class:`PrefixKV`
therefore score exactly as the prompt itself.
"""

from __future__ import annotations

import inspect
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from ..encoding import EncodedBatch
from ..errors import ConfigError
from .base import Backbone, _single_token_rows


@dataclass(eq=False)
class PrefixKV:
    """A prefix given as keys and values: ``layers[i] = (key, value)``, each
    ``[1, kv_heads, length, head_dim]``, for every layer of a decoder-only model.

    It goes wherever a ``[length, dim]`` prompt goes (:class:`CausalBackbone` only) and occupies
    ``length`` positions. Keys are stored as the model caches them (after its rotary embedding,
    if it has one), so they belong to positions ``len(lead) .. len(lead) + length - 1``.
    """

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        """Positions the prefix occupies."""
        return self.layers[0][0].shape[2]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(length, n_layers, 2, kv_heads, head_dim)`` (layer 0's heads): length first, like a
        prompt's ``[length, dim]``, so code that budgets ``prompt.shape[0]`` positions works."""
        k = self.layers[0][0]
        return (k.shape[2], len(self.layers), 2, k.shape[1], k.shape[3])

    @property
    def layer_shapes(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per layer, ``((kv_heads, head_dim) of the key, (kv_heads, head_dim) of the value)``."""
        return [((k.shape[1], k.shape[3]), (v.shape[1], v.shape[3])) for k, v in self.layers]

    @property
    def _version(self) -> tuple[int, ...]:
        """Version counters of all tensors: changes on any in-place update (the inference cache's key)."""
        return tuple(t._version for kv in self.layers for t in kv)

    def detach(self) -> "PrefixKV":
        return PrefixKV(tuple((k.detach(), v.detach()) for k, v in self.layers))

    def to(self, *args, **kwargs) -> "PrefixKV":
        """Every tensor moved/cast as ``Tensor.to(*args, **kwargs)``."""
        return PrefixKV(tuple((k.to(*args, **kwargs), v.to(*args, **kwargs)) for k, v in self.layers))


class CausalBackbone(Backbone):
    family = "causal"

    def __init__(self, model, tokenizer, model_id=None, max_length=None, shared_prefix: bool = True,
                 kv_cache_size: int = 32):
        super().__init__(model, tokenizer, model_id, max_length)
        self.trail_ids = []  # an EOS before the label would be wrong for a decoder
        self.shared_prefix = shared_prefix
        self.kv_cache_size = kv_cache_size
        self._kv_cache: OrderedDict[int, tuple] = OrderedDict()
        self._kv_shapes = self._kv_devices = None
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._softcap = getattr(cfg, "final_logit_softcapping", None)
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept either.
        params = inspect.signature(self._decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def auto_class(cls):
        return AutoModelForCausalLM

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

    def _cached(self, prompt):
        """The inference cache's keys/values for ``prompt`` (a tensor or :class:`PrefixKV`), or None.

        An entry is keyed by the object's id and holds a weak reference to the object itself and
        its version: a tensor and a :class:`PrefixKV` never share an entry, nor does a new object
        that reuses a dead one's id, nor an object updated in place since."""
        hit = self._kv_cache.get(id(prompt))
        if hit is not None and hit[0]() is prompt and hit[1] == prompt._version:
            self._kv_cache.move_to_end(id(prompt))
            return hit[2]
        return None

    def _remember(self, prompt, kv) -> None:
        self._kv_cache[id(prompt)] = (weakref.ref(prompt), prompt._version, kv)
        while len(self._kv_cache) > self.kv_cache_size:
            self._kv_cache.popitem(last=False)

    def _prefix_kv(self, prefix: torch.Tensor, prompt: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(key, value)``, each ``[1, kv_heads, prefix_len, head_dim]``, of ``prefix [P, dim]``."""
        use_cache = prompt is not None and not torch.is_grad_enabled()
        if use_cache:
            hit = self._cached(prompt)
            if hit is not None:
                return hit
        pos = torch.arange(prefix.shape[0], device=self.device)[None]
        _, cache = self._run(inputs_embeds=prefix[None], position_ids=pos, use_cache=True,
                             cache=DynamicCache(config=self.model.config))
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if use_cache:
            self._remember(prompt, kv)
        return kv

    def _given_kv(self, prompt: PrefixKV) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(key, value)`` of the lead specials followed by ``prompt``'s own keys/values,
        each ``[1, kv_heads, len(lead) + length, head_dim]`` in the model's dtype."""
        use_cache = not torch.is_grad_enabled()
        if use_cache:
            hit = self._cached(prompt)
            if hit is not None:
                return hit
        self.check_prefix(prompt)
        lead = self._lead_and_prompt(None)
        lead_kv = None if lead is None else self._prefix_kv(lead, None)
        kv = []
        for i, (k, v) in enumerate(prompt.layers):
            if lead_kv is None:  # each layer's keys/values where that layer runs (device_map may spread them)
                kv.append((k.to(self._kv_devices[i], self.dtype), v.to(self._kv_devices[i], self.dtype)))
            else:
                lk, lv = lead_kv[i]
                kv.append((torch.cat([lk, k.to(lk)], 2), torch.cat([lv, v.to(lv)], 2)))
        if use_cache:
            self._remember(prompt, kv)
        return kv

    def prompt_kv(self, prompt: torch.Tensor) -> PrefixKV:
        """The keys/values the model computes for ``prompt [length, dim]`` placed after the lead
        specials, as a :class:`PrefixKV` of ``length`` positions (the lead's own are left out):
        scoring with it equals scoring with ``prompt``."""
        lead = len(self.lead_ids)
        kv = self._prefix_kv(self._lead_and_prompt(prompt), None)
        return PrefixKV(tuple((k[:, :, lead:], v[:, :, lead:]) for k, v in kv))

    @property
    def kv_shapes(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per layer, ``((kv_heads, head_dim) of the key, (kv_heads, head_dim) of the value)``."""
        if self._kv_shapes is None:  # found by running one token; the devices are kept too
            with torch.no_grad():
                kv = self._prefix_kv(self.embed(torch.tensor([self.pad_id])), None)
            self._kv_shapes = PrefixKV(tuple(kv)).layer_shapes
            self._kv_devices = [k.device for k, _ in kv]
        return self._kv_shapes

    def check_prefix(self, prompt: PrefixKV) -> None:
        """Raise :class:`ConfigError` unless ``prompt``'s per-layer shapes are this model's."""
        got = prompt.layer_shapes
        lengths = {t.shape[2] for kv in prompt.layers for t in kv}
        if got != self.kv_shapes or len(lengths) != 1:
            raise ConfigError(
                f"these prefix keys/values have {len(got)} layers of ((kv_heads, head_dim) of key, of value) "
                f"{sorted(set(got))} and lengths {sorted(lengths)}, but model {self.model_id!r} has "
                f"{len(self.kv_shapes)} layers of {sorted(set(self.kv_shapes))}: use the prefix with the model it "
                f"was made for"
            )

    def clear_cache(self) -> None:
        """Forget cached prompt keys/values."""
        self._kv_cache.clear()

    def _prefix_cache(self, prompts: list, n: int):
        """A cache holding each row's prefix keys/values, left-padded to the widest prefix.

        ``prompts``: one entry per row (a ``[length, dim]`` tensor, a :class:`PrefixKV` or None);
        rows sharing a prompt object share its keys/values (computed once, expanded as views when
        all rows share one).
        Returns ``(cache, prefix_mask [n, width], offsets [n])`` where ``offsets`` is each row's
        prefix length (its text starts at that position), or None when no row has a prefix.
        """
        groups: dict[int, list[int]] = {}
        for i, pr in enumerate(prompts):
            groups.setdefault(id(pr), []).append(i)
        kvs, lengths = {}, {}
        for key, rows in groups.items():
            prompt = prompts[rows[0]]
            if isinstance(prompt, PrefixKV):
                kvs[key] = self._given_kv(prompt)
                lengths[key] = kvs[key][0][0].shape[2]
                continue
            prefix = self._lead_and_prompt(prompt)
            lengths[key] = 0 if prefix is None else prefix.shape[0]
            kvs[key] = None if prefix is None else self._prefix_kv(prefix, prompt)
        width = max(lengths.values())
        if width == 0:
            return None, None, None
        offsets = torch.tensor([lengths[id(pr)] for pr in prompts], device=self.device)
        prefix_mask = (torch.arange(width, device=self.device)[None] >= (width - offsets)[:, None]).long()
        cache = DynamicCache(config=self.model.config)
        if len(groups) == 1:
            for i, (k, v) in enumerate(kvs[next(iter(groups))]):
                cache.update(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), i)
            return cache, prefix_mask, offsets
        n_layers = len(next(kv for kv in kvs.values() if kv is not None))
        for layer in range(n_layers):
            ks, vs = [], []
            for i, pr in enumerate(prompts):
                kv = kvs[id(pr)]
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

    def _forward(self, prompt, seqs: list[list[int]], keep_cache: bool = False):
        """Final hidden states of the text positions of ``seqs``.

        ``prompt``: ``[length, dim]``, a :class:`PrefixKV`, None, or a list with one of those per
        row (rows may mix prompts: a mixed-task batch). Returns ``(hidden [n, T, dim], mask [n, T],
        cache, attention mask over the cache [n, width + T] or None, offsets [n] or None)``.
        """
        ids, mask = self._pad(seqs)
        emb = self.embed(ids)
        n, t = ids.shape
        per_row = isinstance(prompt, (list, tuple))
        if not per_row and not self.shared_prefix and not isinstance(prompt, PrefixKV):
            prefix = self._lead_and_prompt(prompt)
            if prefix is not None:
                p = prefix.shape[0]
                x = torch.cat([prefix[None].expand(n, -1, -1), emb], 1)
                full_mask = torch.cat([mask.new_ones(n, p), mask], 1)
                out, cache = self._run(inputs_embeds=x, attention_mask=full_mask, use_cache=keep_cache)
                return out.last_hidden_state[:, p:], mask, cache, full_mask, torch.full((n,), p, device=self.device)
        prompts = list(prompt) if per_row else [prompt] * n
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} rows")
        cache, prefix_mask, offsets = self._prefix_cache(prompts, n)
        if cache is None:
            out, cache = self._run(inputs_embeds=emb, attention_mask=mask, use_cache=keep_cache)
            return out.last_hidden_state, mask, cache, mask, None
        full_mask = torch.cat([prefix_mask, mask], 1)
        pos = offsets[:, None] + torch.arange(t, device=self.device)[None]
        out, cache = self._run(inputs_embeds=emb, attention_mask=full_mask, position_ids=pos, cache=cache, use_cache=True)
        return out.last_hidden_state, mask, cache, full_mask, offsets

    def _scored_logprobs(self, prompt, contexts: list[list[int]], words: list[list[int]],
                         length_normalize: bool) -> torch.Tensor:
        """Sum of log p(word tokens | context) for aligned ``contexts``/``words`` lists -> ``[n]``."""
        seqs = [c + w for c, w in zip(contexts, words)]
        hidden = self._forward(prompt, seqs)[0]
        rows, cols, targets, owner = [], [], [], []
        for i, (c, w) in enumerate(zip(contexts, words)):
            for j, tok in enumerate(w):
                rows.append(i)
                cols.append(len(c) - 1 + j)
                targets.append(tok)
                owner.append(i)
        h = hidden[torch.tensor(rows, device=hidden.device), torch.tensor(cols, device=hidden.device)]
        lp = torch.log_softmax(self._head(h), -1)
        dev = lp.device
        tok_lp = lp.gather(-1, torch.tensor(targets, device=dev)[:, None]).squeeze(-1)
        total = torch.zeros(len(seqs), device=dev).index_add(0, torch.tensor(owner, device=dev), tok_lp)
        if length_normalize:
            total = total / torch.tensor([len(w) for w in words], device=dev, dtype=total.dtype)
        return total

    # Expanded continuations (sliding-window models): a chunk holds whole (row, word length) groups;
    # a new chunk starts where the cached positions (candidates x text) would pass
    # ``continuation_positions``, or where the word length changes once it has ``continuation_pairs``
    # candidates (less padding). A chunk of one row expands that row's keys/values as views; small
    # rows (a choice task's) go together.
    continuation_positions: int = 16384
    continuation_pairs: int = 64

    def _continuation_scores(self, prompt, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        """Log-score of every candidate word of every row, ``[batch, max_words]`` (-inf pads).

        The text is run once and its keys/values kept; each word's first token is read where the
        row's text ends, and the rest of the words go as one batched continuation against those
        keys/values at the positions that follow the row's text: nothing of the text is recomputed.
        A row's candidates sit side by side in one sequence under a block-diagonal mask
        (:meth:`_continue_packed`); with sliding-window layers the row's keys/values are expanded to
        its candidates as views instead (:meth:`_continue`). Equal to scoring each (row, word) pair
        as one sequence; differentiable in the prompt.
        """
        hidden, mask, cache, attn, offsets = self._forward(prompt, batch.context, keep_cache=True)
        n = len(batch)
        lengths = mask.sum(1)
        starts = lengths if offsets is None else lengths + offsets  # position of each row's first word token
        last = hidden[torch.arange(n, device=hidden.device), (lengths - 1).to(hidden.device)]
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
        packed = not any(getattr(layer, "is_sliding", False) for layer in cache.layers)
        chunks = self._packed_chunks(keys, attn.shape[1]) if packed else self._continuation_chunks(keys, attn.shape[1])
        for chunk in chunks:
            idx = [longer[i] for i in chunk]
            words = [batch.words[pairs[i][0]][pairs[i][1]] for i in idx]
            go = self._continue_packed if packed else self._continue
            lp = go(layers, attn, starts, [pairs[i][0] for i in idx], words)
            totals = totals.index_add(0, torch.tensor(idx, device=dev), lp.to(dev))
        if length_normalize:
            totals = totals / torch.tensor([len(batch.words[b][w]) for b, w in pairs], device=dev, dtype=totals.dtype)
        return out.index_put((rows, cols), totals)

    def _continuation_chunks(self, keys: list[tuple[int, int]], cached: int) -> list[list[int]]:
        """Indices into ``keys`` (each candidate's ``(row, tokens)``) grouped into chunks: sorted by
        row, then length; cut between groups as the class attributes above say."""
        chunks, current = [], []
        for i in sorted(range(len(keys)), key=keys.__getitem__):
            if current and keys[i] != keys[current[-1]]:
                full = (len(current) + 1) * cached > self.continuation_positions
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
                         words: list[list[int]]) -> torch.Tensor:
        """As :meth:`_continue`, with each row's candidates side by side in one sequence after its
        text: a token attends to the text and to its own word's earlier tokens (a block-diagonal
        mask; positions restart after the text for every word), so the text's keys/values are not
        copied per candidate. Not for sliding-window layers (their cache keeps a window only)."""
        order = list(dict.fromkeys(rows))
        slot = {b: s for s, b in enumerate(order)}
        seqs, rel, owner = [[] for _ in order], [[] for _ in order], [[] for _ in order]
        where = []
        for i, (b, w) in enumerate(zip(rows, words)):
            s = slot[b]
            where.append((s, len(seqs[s])))
            seqs[s].extend(w[:-1])
            rel[s].extend(range(len(w) - 1))
            owner[s].extend([i] * (len(w) - 1))
        ids, _ = self._pad(seqs)
        r, lq = ids.shape
        own = torch.full((r, lq), -1, dtype=torch.long)
        pos = torch.zeros((r, lq), dtype=torch.long)
        for s in range(r):
            own[s, : len(owner[s])] = torch.tensor(owner[s])
            pos[s, : len(rel[s])] = torch.tensor(rel[s])
        own, pos = own.to(self.device), pos.to(self.device)
        index = torch.tensor(order, device=attn.device)
        same = (own[:, :, None] == own[:, None, :]) & (own[:, None, :] >= 0) & (pos[:, None, :] <= pos[:, :, None])
        allowed = torch.cat([attn[index].bool()[:, None, :].expand(r, lq, -1), same], 2)[:, None]  # [r, 1, lq, S + lq]
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":  # eager adds the mask to the scores
            allowed = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill(
                ~allowed, torch.finfo(self.dtype).min)
        cache = DynamicCache(config=self.model.config)
        for i, (key, value) in enumerate(layers):
            cache.update(key[index.to(key.device)], value[index.to(value.device)], i)
        out, _ = self._run(inputs_embeds=self.embed(ids), attention_mask=allowed, position_ids=starts[index][:, None] + pos,
                           cache=cache, use_cache=True)
        hidden = out.last_hidden_state
        sel_s = [where[i][0] for i, w in enumerate(words) for _ in w[1:]]
        sel_c = [where[i][1] + j for i, w in enumerate(words) for j in range(len(w) - 1)]
        h = hidden[torch.tensor(sel_s, device=hidden.device), torch.tensor(sel_c, device=hidden.device)]
        lp = torch.log_softmax(self._head(h), -1)
        targets = torch.tensor([t for w in words for t in w[1:]], device=lp.device)
        tok_lp = lp.gather(-1, targets[:, None]).squeeze(-1)
        word_of = torch.tensor([i for i, w in enumerate(words) for _ in w[1:]], device=lp.device)
        return torch.zeros(len(words), device=lp.device, dtype=tok_lp.dtype).index_add(0, word_of, tok_lp)

    def _continue(self, layers, attn: torch.Tensor, starts: torch.Tensor, rows: list[int],
                  words: list[list[int]]) -> torch.Tensor:
        """Sum of log p(word[1:] | text, word[0]) of each ``words[i]`` after the text of row
        ``rows[i]``: ``layers`` the text's per-layer ``(key, value) [n, kv_heads, cached, head_dim]``,
        ``attn [n, cached]`` its attention mask, ``starts [n]`` the position after each row's text.
        Returns ``[len(words)]``."""
        k = len(words)
        same = all(b == rows[0] for b in rows)
        index = torch.tensor(rows, device=attn.device)
        cache = DynamicCache(config=self.model.config)
        for i, (key, value) in enumerate(layers):
            if same:  # one row's keys/values for all its candidates: views, no copy
                key, value = key[rows[0]:rows[0] + 1].expand(k, -1, -1, -1), value[rows[0]:rows[0] + 1].expand(k, -1, -1, -1)
            else:
                key, value = key[index.to(key.device)], value[index.to(value.device)]
            cache.update(key, value, i)
        ids, cont_mask = self._pad([w[:-1] for w in words])
        full_mask = torch.cat([attn[index], cont_mask], 1)
        pos = starts[index][:, None] + torch.arange(ids.shape[1], device=self.device)[None]
        out, _ = self._run(inputs_embeds=self.embed(ids), attention_mask=full_mask, position_ids=pos, cache=cache,
                           use_cache=True)
        hidden = out.last_hidden_state
        sel_rows = [i for i, w in enumerate(words) for _ in w[1:]]
        sel_cols = [j for w in words for j in range(len(w) - 1)]
        h = hidden[torch.tensor(sel_rows, device=hidden.device), torch.tensor(sel_cols, device=hidden.device)]
        lp = torch.log_softmax(self._head(h), -1)
        targets = torch.tensor([t for w in words for t in w[1:]], device=lp.device)
        tok_lp = lp.gather(-1, targets[:, None]).squeeze(-1)
        return torch.zeros(k, device=lp.device, dtype=tok_lp.dtype).index_add(
            0, torch.tensor(sel_rows, device=lp.device), tok_lp)

    # ---------------------------------------------------------------------- API
    def word_scores(self, prompt, batch: EncodedBatch, length_normalize: bool = False) -> torch.Tensor:
        if batch.single_token:
            hidden, mask = self._forward(prompt, batch.context)[:2]
            last = (mask.sum(1) - 1).to(hidden.device)
            h = hidden[torch.arange(len(batch), device=hidden.device), last]
            return self._head(h, _single_token_rows(batch, self.model.get_output_embeddings().weight.device))
        return self._continuation_scores(prompt, batch, length_normalize)

    def gold_nll(self, prompt, batch: EncodedBatch) -> torch.Tensor:
        words = batch.gold_words()
        return -self._scored_logprobs(prompt, batch.context, words, length_normalize=True)

    @torch.no_grad()
    def generate(self, prompt, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        hidden, mask, cache, attn, offsets = self._forward(prompt, batch.context, keep_cache=True)
        n = len(batch)
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
