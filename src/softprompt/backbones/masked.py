"""Masked language models (BERT, RoBERTa, ...): ``[CLS] prompt text ... [MASK] ... [SEP]``.

The label is read at the mask slot. A label word of ``k`` sub-tokens is scored with ``k``
consecutive masks (the sum of their log-probabilities, predicted in parallel), so multi-token
words are scored exactly for what the model can say. As for encoder-decoders, the prompt's
states depend on the text (bidirectional attention): nothing is shared across rows; only the mask
positions go through the prediction head, and padding is dynamic.

Conditioning: input vectors, virtual tokens, answer vectors (at the mask) and layer hooks (on the
encoder layers' ``attention`` and ``output`` modules); not layer keys/values.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForMaskedLM

from ..answer_tokens import answer_ids
from ..conditioning import KINDS
from ..encoding import EncodedBatch
from ..errors import ConfigError
from .base import Backbone, Block, _single_token_rows, _without_padding, find_child


class MaskedBackbone(Backbone):
    family = "masked"
    description = "a masked language"
    supports = frozenset(KINDS) - {"layer_kv"}  # every layer recomputes the prompt's states from the text

    @classmethod
    def auto_class(cls):
        return AutoModelForMaskedLM

    @property
    def mask_token(self) -> str | None:
        return self.tokenizer.mask_token

    @property
    def answer_in_slot(self) -> bool:
        return True

    def blocks(self) -> list[Block]:
        """The encoder layers: the attention's and the feed-forward's output projections, whose
        outputs are what is added to the residual stream (BERT: ``attention.output.dense`` and
        ``output.dense``, before dropout, the residual add and the layer norm, where Houlsby et al.
        put adapters; DistilBERT: ``attention`` and ``ffn``, which end before the residual add)."""
        layers = find_child(self.model.base_model, ("encoder.layer", "transformer.layer", "layers"), "encoder layers")
        return [Block(find_child(layer, ("attention.output.dense", "attention", "self_attn"), "attention"),
                      find_child(layer, ("output.dense", "ffn", "mlp"), "feed-forward"), "encoder") for layer in layers]

    @property
    def mask_token_id(self) -> int | None:
        return self.tokenizer.mask_token_id

    def answer_ids(self, before, after, words, prefix):
        """The word fills the slot between ``before`` and ``after``: the context is the natural
        text's tokens around it with one mask at the slot (see :mod:`softprompt.answer_tokens`)."""
        split = answer_ids(self.tokenizer, before, words, prefix, after)
        return split.context + [self.mask_token_id] + split.after, split.words, len(split.context)

    def _head_module(self):
        for name in ("cls", "lm_head"):
            head = getattr(self.model, name, None)
            if head is not None:
                return head
        return None

    def _mask_logprobs(self, cond, seqs: list[list[int]], positions: list[list[int]], virtual=None,
                       answer_input: bool = False):
        """log-softmax over the vocabulary at ``positions`` of each row -> list of ``[k_i, V]``
        (``answer_input``: instead, what the vocabulary rows multiply there, ``[sum k_i, dim]``)."""
        emb, mask, shift = self.inputs(seqs, cond.input_vectors, virtual, [cond.virtual_tokens] * len(seqs))
        rows = torch.tensor([i for i, ps in enumerate(positions) for _ in ps], device=self.device)
        cols = torch.tensor([shift + p for ps in positions for p in ps], device=self.device)
        head = self._head_module()
        if head is not None:
            hidden = self.model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
            run = lambda: head(hidden[rows, cols])  # noqa: E731
        else:  # unknown head layout: full logits, then gather
            run = lambda: self.model(inputs_embeds=emb, attention_mask=mask).logits[rows, cols]  # noqa: E731
        if answer_input:
            h = self._head_input(run)
            return h if head is not None else h[rows, cols]
        lp = torch.log_softmax(run().float(), -1)
        return list(lp.split([len(ps) for ps in positions]))

    def _pair_scores(self, cond, batch: EncodedBatch, rows: list[int], words: list[list[int]],
                     length_normalize: bool) -> torch.Tensor:
        mask_id = self.mask_token_id
        seqs, positions, virtual = [], [], []
        for r, w in zip(rows, words):
            ctx, m = batch.context[r], batch.mask_pos[r]
            seqs.append(ctx[:m] + [mask_id] * len(w) + ctx[m + 1:])
            positions.append(list(range(m, m + len(w))))
            if batch.virtual:  # tokens after the slot move by the word's extra masks
                virtual.append([(p if p < m else p + len(w) - 1, name, i) for p, name, i in batch.virtual[r]])
        lps = self._mask_logprobs(cond, seqs, positions, virtual or None)
        scores = []
        for lp, w in zip(lps, words):
            s = lp.gather(-1, torch.tensor(w, device=self.device)[:, None]).sum()
            scores.append(s / len(w) if length_normalize else s)
        return torch.stack(scores)

    def _answer_hidden(self, cond, batch: EncodedBatch) -> torch.Tensor:
        return self._mask_logprobs(cond, batch.context, [[m] for m in batch.mask_pos], batch.virtual or None,
                                   answer_input=True)

    def _text_states(self, cond, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's last states of the text; the answer is the prediction head's input at the
        mask, as :meth:`_answer_hidden` reads it."""
        head = self._head_module()
        if head is None:
            raise ConfigError(f"cannot find the prediction head of a {type(self.model).__name__} (looked for cls, "
                              "lm_head): its states at the mask cannot be read")
        n = len(batch)
        emb, mask, shift = self.inputs(batch.context, cond.input_vectors, batch.virtual or None,
                                       [cond.virtual_tokens] * n)
        hidden = self.model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        rows = torch.arange(n, device=hidden.device)
        cols = shift + torch.tensor(batch.mask_pos, device=hidden.device)
        answer = self._head_input(lambda: head(hidden[rows, cols]))
        return hidden[:, shift: shift + max(len(c) for c in batch.context)], cols - shift, answer

    def _word_scores(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        if batch.single_token:
            lps = self._mask_logprobs(cond, batch.context, [[m] for m in batch.mask_pos], batch.virtual or None)
            vocab_rows = _single_token_rows(batch, self.device)
            lp = torch.cat(lps, 0)
            return lp[:, vocab_rows] if vocab_rows.dim() == 1 else _without_padding(lp.gather(1, vocab_rows), batch)
        rows, words = self._flatten(batch)
        return self._unflatten(batch, self._pair_scores(cond, batch, rows, words, length_normalize))

    def _gold_nll(self, cond, batch: EncodedBatch) -> torch.Tensor:
        return -self._pair_scores(cond, batch, list(range(len(batch))), batch.gold_words(), True)

    def _generate(self, cond, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        raise ConfigError("a masked language model cannot generate free text; evaluate with --scoring rank")

    # ------------------------------------------------------------ template slots
    def slot_ids(self, before, after, words, prefix):
        """As :meth:`answer_ids`: one mask id at the slot, at position ``len(before's ids)``."""
        return self.answer_ids(before, after, words, prefix)

    def _slot_word_scores(self, cond, batch: EncodedBatch, slot: str, words, fills,
                          length_normalize: bool) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]``.

        All answer slots are masks at once (PTR's sub-prompts): the candidate's ``k`` tokens get
        ``k`` masks at ``slot``, every other slot keeps its one mask unless ``fills`` writes its
        words there; the score is the sum of the ``k`` log-probabilities, predicted in parallel.
        """
        mask_id = self.mask_token_id
        words = self._slot_words(batch, slot, words)
        rows, seqs, starts, ends, _, virtual = self._slot_pairs(batch, slot, words, fills, lambda w: [mask_id] * len(w))
        lps = self._mask_logprobs(cond, seqs, [list(range(a, z)) for a, z in zip(starts, ends)],
                                  virtual if any(virtual) else None)
        flat = []
        for lp, w in zip(lps, (w for ws in words for w in ws)):
            total = lp.gather(-1, torch.tensor(w, device=lp.device)[:, None]).sum()
            flat.append(total / len(w) if length_normalize else total)
        return self._pairs_to_rows(rows, len(batch), torch.stack(flat))
