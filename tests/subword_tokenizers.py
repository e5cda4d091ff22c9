"""Tiny subword tokenizers of the three families real models use, trained in-process.

``byte_bpe`` (GPT-2/SmolLM style byte-level BPE, ``'Ġ'`` marks a space), ``sentencepiece``
(a Unigram model with Metaspace ``'▁'`` pieces, as T5) and ``wordpiece`` (uncased BERT style).
Trained on a few sentences over :data:`tests.conftest.WORDS`, so whole words and sub-words exist.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from conftest import WORDS

_CORPUS = [
    " ".join(WORDS[i: i + 7]) for i in range(0, len(WORDS), 3)
] + ["Review: a great movie\nSentiment: positive", "Review: a dull plot\nSentiment: negative",
     "Sentence 1: the film was fun.\nSentence 2: the movie was good.\nAnswer: yes"] * 3 + [" ".join(WORDS)] * 20


@lru_cache(maxsize=None)
def _trained(kind: str) -> str:
    if kind == "byte_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    elif kind == "sentencepiece":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                          show_progress=False)
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                            show_progress=False)
    else:
        raise ValueError(kind)
    tok.train_from_iterator(_CORPUS, trainer)
    if kind == "sentencepiece":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    if kind == "wordpiece":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok.to_str()


def make_subword_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A fresh fast tokenizer of ``kind``: ``byte_bpe``, ``sentencepiece`` or ``wordpiece``."""
    special = {
        "byte_bpe": dict(pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"),
        "sentencepiece": dict(pad_token="<pad>", unk_token="<unk>", eos_token="</s>"),
        "wordpiece": dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"),
    }[kind]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_trained(kind)), model_max_length=256, **special)


FAMILY_OF = {"byte_bpe": "causal", "sentencepiece": "seq2seq", "wordpiece": "masked"}


def make_subword_backbone(kind: str, seed: int = 0, **kwargs):
    """A tiny random model of the family that uses ``kind`` tokenizers, wrapped as a backbone."""
    from softprompt.backbones import wrap

    from conftest import make_model

    tok = make_subword_tokenizer(kind)
    return wrap(make_model(FAMILY_OF[kind], tok, seed), tok, model_id=f"tiny-{kind}", **kwargs)
