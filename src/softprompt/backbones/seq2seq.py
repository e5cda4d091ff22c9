"""Encoder-decoder models (T5, BART, ...): the prompt is prepended on the encoder side.

``encoder: [prompt] text [EOS]``; the decoder reads the label word with teacher forcing. The
prompt's encoder states depend on the text (the encoder attends both ways), so unlike decoder-only
models there is nothing to share across rows: each row pays for its prompt positions. What is
still saved: the encoder runs once per row, not once per candidate word (its states are indexed
out to the candidates), the decoder only sees label tokens, and padding is dynamic.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from ..answer_tokens import answer_ids, tokens_before
from ..encoding import EncodedBatch
from .base import Backbone


class Seq2SeqBackbone(Backbone):
    family = "seq2seq"

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

    def _encode(self, prompt, contexts: list[list[int]]):
        """Encoder states ``[n, S, dim]`` and mask ``[n, S]`` of ``lead + prompt + context + trail``."""
        ids, mask = self._pad([c + self.trail_ids for c in contexts])
        emb = self.embed(ids)
        prefix = self._lead_and_prompt(prompt)
        if prefix is not None:
            n = ids.shape[0]
            emb = torch.cat([prefix[None].expand(n, -1, -1), emb], 1)
            mask = torch.cat([mask.new_ones(n, prefix.shape[0]), mask], 1)
        enc = self.model.get_encoder()(inputs_embeds=emb, attention_mask=mask)
        return enc.last_hidden_state, mask

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

    def word_scores(self, prompt, batch: EncodedBatch, length_normalize: bool = False) -> torch.Tensor:
        return self._by_prompt(self._word_scores_one, prompt, batch, length_normalize)

    def _word_scores_one(self, prompt, batch: EncodedBatch, length_normalize: bool) -> torch.Tensor:
        enc, enc_mask = self._encode(prompt, batch.context)
        rows, words = self._flatten(batch)
        return self._unflatten(batch, self._word_logprobs(enc, enc_mask, rows, words, length_normalize))

    def gold_nll(self, prompt, batch: EncodedBatch) -> torch.Tensor:
        return self._by_prompt(self._gold_nll_one, prompt, batch)

    def _gold_nll_one(self, prompt, batch: EncodedBatch) -> torch.Tensor:
        enc, enc_mask = self._encode(prompt, batch.context)
        return -self._word_logprobs(enc, enc_mask, list(range(len(batch))), batch.gold_words(), True)

    @torch.no_grad()
    def generate(self, prompt, batch: EncodedBatch, max_new_tokens: int = 8) -> list[str]:
        if isinstance(prompt, (list, tuple)):
            out: list[str] = [""] * len(batch)
            for rows in self._prompt_groups(prompt, len(batch)):
                for r, text in zip(rows, self.generate(prompt[rows[0]], batch.select(rows), max_new_tokens)):
                    out[r] = text
            return out
        enc, enc_mask = self._encode(prompt, batch.context)
        out = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=enc_mask,
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in out.tolist()]

    # ------------------------------------------------------------ template slots
    def slot_ids(self, before, after, words, prefix):
        """As :meth:`answer_ids` (the encoder reads the text with the slot left empty); the slot's
        position is the number of the encoder's tokens that lie wholly in ``before``."""
        ids, word_ids, _ = self.answer_ids(before, after, words, prefix)
        return ids, word_ids, len(ids) if not after else tokens_before(self.tokenizer, before + after, len(before))

    def slot_word_scores(self, prompt, batch: EncodedBatch, slot: str, words=None, fills=None,
                         length_normalize: bool = False) -> torch.Tensor:
        """Log-score of each candidate word at answer slot ``slot``: ``[batch, max_words]``.

        The decoder reads the word from its start (as :meth:`word_scores`); the encoder reads the
        text with ``slot`` left empty and every other answer slot holding its ``fills`` words, or
        empty without (no sentinel: BART has none, and the single-slot scores stay today's).
        """
        return self._slot_by_prompt(self._slot_word_scores_one, prompt, batch, slot, words, fills, length_normalize)

    def _slot_word_scores_one(self, prompt, batch, slot, words, fills, length_normalize):
        words = self._slot_words(batch, slot, words)
        first = [ws[0] for ws in words]  # the encoder's text does not depend on the candidate
        one = [[w] for w in first]
        _, seqs, _, _, _ = self._slot_pairs(batch, slot, one, fills, lambda w: [])
        enc, enc_mask = self._encode(prompt, seqs)
        rows = [b for b, ws in enumerate(words) for _ in ws]
        flat = self._word_logprobs(enc, enc_mask, rows, [w for ws in words for w in ws], length_normalize)
        return self._pairs_to_rows(rows, len(batch), flat)
