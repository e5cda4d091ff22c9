"""Encoder-decoder models (T5, BART, ...): the prompt is prepended on the encoder side.

``encoder: [prompt] text [EOS]``; the decoder reads the label word with teacher forcing. The
prompt's encoder states depend on the text (the encoder attends both ways), so unlike decoder-only
models there is nothing to share across rows: each row pays for its prompt positions. What is
still saved: the encoder runs once per row, not once per candidate word (its states are indexed
out to the candidates), the decoder only sees label tokens, and padding is dynamic.

Conditioning: input vectors, virtual tokens (in the encoder's text), answer vectors (the decoder's
first step) and layer hooks; not layer keys/values. :meth:`Seq2SeqBackbone.blocks` lists the
encoder's layers, then the decoder's (self-attention and feed-forward of each).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from ..answer_tokens import answer_ids, tokens_before
from ..conditioning import KINDS
from ..encoding import EncodedBatch
from .base import Backbone, Block, find_child


class Seq2SeqBackbone(Backbone):
    family = "seq2seq"
    description = "an encoder-decoder"
    has_text_states = False  # the answer is the decoder's; the text's states are the encoder's
    supports = frozenset(KINDS) - {"layer_kv"}  # the encoder recomputes every prompt position from the text

    @classmethod
    def auto_class(cls):
        return AutoModelForSeq2SeqLM

    def answer_ids(self, before, after, words, prefix):
        """The encoder reads the rendered text; the decoder reads the word from its start, so a
        word's ids are those of the word as a text of its own (``prefix`` whitespace dropped)."""
        key = ("decoder", prefix, tuple(words))
        if key not in self._answer_cache:
            self._answer_cache[key] = answer_ids(self.tokenizer, "", words, prefix).words
        return self.tokenize(before + after), [list(w) for w in self._answer_cache[key]], None

    def _encode(self, cond, contexts: list[list[int]], virtual=None):
        """Encoder states ``[n, S, dim]`` and mask ``[n, S]`` of ``lead + input vectors + context + trail``."""
        emb, mask, _ = self.inputs(contexts, cond.input_vectors, virtual, [cond.virtual_tokens] * len(contexts))
        enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask)
        return enc.last_hidden_state, mask

    def blocks(self) -> list[Block]:
        """The encoder's layers, then the decoder's: each layer's self-attention and feed-forward."""
        out = []
        for stack_name in ("encoder", "decoder"):
            stack = getattr(self.model, "get_encoder" if stack_name == "encoder" else "get_decoder")()
            for layer in find_child(stack, ("block", "layers"), f"{stack_name} layers"):
                if hasattr(layer, "layer"):  # T5: layer[0] self-attention, layer[-1] feed-forward
                    attn, ff = layer.layer[0].SelfAttention, find_child(layer.layer[-1], ("DenseReluDense", "mlp"), "feed-forward")
                else:  # BART-like: self_attn, fc2 (the feed-forward's output projection)
                    attn, ff = find_child(layer, ("self_attn",), "attention"), find_child(layer, ("mlp", "fc2"), "feed-forward")
                out.append(Block(attn, ff, stack_name))
        return out

    def _decoder_start(self) -> int:
        start = self.model.config.decoder_start_token_id
        return self.pad_id if start is None else start

    def _word_logprobs(self, enc, enc_mask, rows: list[int], words: list[list[int]], length_normalize: bool):
        """log p(word | encoder states of ``rows``) for each (row, word) pair -> ``[n_pairs]``."""
        idx = torch.tensor(rows, device=self.device)
        start = self._decoder_start()
        dec_in, _ = self._pad([[start] + w[:-1] for w in words])
        targets, tmask = self._pad(words, pad=0)
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc[idx]), attention_mask=enc_mask[idx],
                         decoder_input_ids=dec_in, decoder_attention_mask=tmask)
        lp = torch.log_softmax(out.logits.float(), -1)
        return self._token_logprob_sums(lp, targets, tmask, length_normalize)

    def _answer_hidden(self, cond, batch: EncodedBatch) -> torch.Tensor:
        """What the vocabulary rows multiply at the decoder's first step: ``[batch, dim]``."""
        enc, enc_mask = self._encode(cond, batch.context, batch.virtual or None)
        start = torch.full((len(batch), 1), self._decoder_start(), dtype=torch.long, device=self.device)
        h = self._head_input(lambda: self.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                                                attention_mask=enc_mask, decoder_input_ids=start))
        return h[:, 0]

    def _word_scores(self, cond, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        enc, enc_mask = self._encode(cond, batch.context, batch.virtual or None)
        rows, words = self._flatten(batch)
        return self._unflatten(batch, self._word_logprobs(enc, enc_mask, rows, words, length_normalize))

    def _gold_nll(self, cond, batch: EncodedBatch) -> torch.Tensor:
        enc, enc_mask = self._encode(cond, batch.context, batch.virtual or None)
        return -self._word_logprobs(enc, enc_mask, list(range(len(batch))), batch.gold_words(), True)

    def _generate(self, cond, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        enc, enc_mask = self._encode(cond, batch.context, batch.virtual or None)
        out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=enc_mask,
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in out.tolist()]

    # ------------------------------------------------------------ template slots
    def slot_ids(self, before, after, words, prefix):
        """As :meth:`answer_ids` (the encoder reads the text with the slot left empty); the slot's
        position is the number of the encoder's tokens that lie wholly in ``before``."""
        ids, word_ids, _ = self.answer_ids(before, after, words, prefix)
        return ids, word_ids, len(ids) if not after else tokens_before(self.tokenizer, before + after, len(before))

    def _slot_word_scores(self, cond, batch: EncodedBatch, slot: str, words, fills,
                          length_normalize: bool) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]``.

        The decoder reads the word from its start (as :meth:`word_scores`); the encoder reads the
        text with ``slot`` left empty and every other answer slot holding its ``fills`` words, or
        empty without (no sentinel: BART has none, and the single-slot scores stay today's).
        """
        words = self._slot_words(batch, slot, words)
        first = [ws[0] for ws in words]  # the encoder's text does not depend on the candidate
        one = [[w] for w in first]
        _, seqs, _, _, _, virtual = self._slot_pairs(batch, slot, one, fills, lambda w: [])
        enc, enc_mask = self._encode(cond, seqs, virtual if any(virtual) else None)
        rows = [b for b, ws in enumerate(words) for _ in ws]
        flat = self._word_logprobs(enc, enc_mask, rows, [w for ws in words for w in ws], length_normalize)
        return self._pairs_to_rows(rows, len(batch), flat)
