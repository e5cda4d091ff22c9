"""Label words are scored with the ids the natural text "context + word" has (issue 13, item 1),
and labels the model cannot tell apart are refused (item 2)."""

from pathlib import Path

import pytest
import torch

from softprompt.answer_tokens import answer_ids, join_text, natural_text
from softprompt.encoding import EncodedBatch, encode, label_word_ids
from softprompt.errors import ConfigError
from softprompt.tasks.task import Task
from softprompt.tasks.verbalizer import Verbalizer

from conftest import make_backbone, make_model
from subword_tokenizers import make_subword_backbone, make_subword_tokenizer

SMOLLM2 = Path.home() / ".cache" / "softprompt" / "models" / "smollm2-135m"
ROW = {"text": "a great movie", "label": "positive"}


def sentiment(template="Review: {text}\nSentiment:", words=None, prefix=" "):
    words = words or {"negative": "negative", "positive": "positive"}
    return Task("sentiment", template, Verbalizer(words, prefix=prefix))


def test_join_never_doubles_whitespace():
    assert join_text("Sentiment:", " ") == ("Sentiment:", " ")
    assert join_text("Sentiment: ", " ") == ("Sentiment:", " ")
    assert join_text("Sentiment:  ", " ") == ("Sentiment:", " ")
    assert join_text("Sentiment: ", "") == ("Sentiment:", " ")
    assert join_text("Sentiment:\n", " ") == ("Sentiment:\n", "")
    assert join_text("", " ") == ("", "")
    assert natural_text("Sentiment:  ", " ", "good") == "Sentiment: good"
    assert natural_text("It was", " ", "good", ".") == "It was good."


@pytest.mark.parametrize("ending", ["", " ", "  ", "\n"])
def test_byte_level_bpe_words_are_the_natural_texts_tokens(ending):
    bb = make_subword_backbone("byte_bpe")
    batch = encode(bb, sentiment("Review: {text}\nSentiment:" + ending), [ROW])
    gap = "\n" if ending == "\n" else " "
    for word, ids in zip(["negative", "positive"], batch.words[0]):
        natural = f"Review: a great movie\nSentiment:{gap}{word}"
        assert batch.context[0] + ids == bb.tokenize(natural)
    if ending != "\n":  # trailing spaces read exactly as none: 'Ġpositive' after ':'
        assert batch.words[0][1] == bb.tokenize(" positive")
        assert batch.context[0] == bb.tokenize("Review: a great movie\nSentiment:")


def test_trailing_space_gives_the_same_scores_as_none():
    bb = make_subword_backbone("byte_bpe")
    rows = [ROW, {"text": "a dull plot", "label": "negative"}]
    plain = encode(bb, sentiment(), rows)
    for ending in (" ", "  "):
        spaced = encode(bb, sentiment("Review: {text}\nSentiment:" + ending), rows)
        assert spaced.context == plain.context and spaced.words == plain.words
        torch.testing.assert_close(bb.word_scores(None, spaced), bb.word_scores(None, plain))


def test_sentencepiece_boundary_is_resplit():
    tok = make_subword_tokenizer("sentencepiece")
    # "Sentiment: " alone ends in a lone '▁' piece; "Sentiment: good" reads '▁good'
    assert tok.convert_ids_to_tokens(tok("Sentiment: ", add_special_tokens=False)["input_ids"])[-1] == "▁"
    split = answer_ids(tok, "Sentiment: ", ["good", "bad"], " ")
    for word, ids in zip(["good", "bad"], split.words):
        assert split.context + ids == tok(f"Sentiment: {word}", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(split.words[0]) == ["▁good"]
    assert tok.convert_ids_to_tokens(split.context)[-1] == ":"


def test_seq2seq_decoder_reads_the_word_as_its_own_text():
    bb = make_subword_backbone("sentencepiece")
    for ending in ("", " ", "  "):
        batch = encode(bb, sentiment("Review: {text}\nSentiment:" + ending), [ROW])
        assert batch.words[0] == [bb.tokenize("negative"), bb.tokenize("positive")]
        assert batch.context[0] == bb.tokenize("Review: a great movie\nSentiment:" + ending)


def test_wordpiece_masked_word_fills_the_slot_of_the_natural_text():
    bb = make_subword_backbone("wordpiece")
    task = sentiment("Review: {text} It was {mask}.", {"negative": "bad", "positive": "great"})
    batch = encode(bb, task, [ROW])
    ctx, m = batch.context[0], batch.mask_pos[0]
    assert ctx[m] == bb.mask_token_id
    for word, ids in zip(["bad", "great"], batch.words[0]):
        assert ctx[:m] + ids + ctx[m + 1:] == bb.tokenize(f"Review: a great movie It was {word}.")


def test_single_token_fast_path_reads_each_rows_own_ids():
    # the template ends with the field, so rows end differently; scores still match the general path
    bb = make_subword_backbone("byte_bpe")
    task = sentiment("Review: {text}", {"negative": "on", "positive": "be"})
    rows = [{"text": "it was", "label": "positive"}, {"text": "it was\n", "label": "negative"}]
    batch = encode(bb, task, rows)
    assert batch.single_token
    assert batch.words == [[bb.tokenize(" on"), bb.tokenize(" be")], [bb.tokenize("on"), bb.tokenize("be")]]
    general = EncodedBatch(**{**batch.__dict__, "shared_words": False})
    torch.testing.assert_close(torch.log_softmax(bb.word_scores(None, batch), -1),
                               torch.log_softmax(bb.word_scores(None, general), -1))


def test_lm_loss_and_length_normalisation_score_the_natural_tokens():
    bb = make_subword_backbone("byte_bpe")
    task = sentiment("Review: {text}\nSentiment: ", {"negative": "awful", "positive": "wonderful"})
    batch = encode(bb, task, [ROW])
    natural = bb.tokenize("Review: a great movie\nSentiment: wonderful")
    n_ctx = len(batch.context[0])
    with torch.no_grad():
        logp = torch.log_softmax(bb.model(torch.tensor([natural])).logits[0].float(), -1)
    token_lp = [logp[i - 1, natural[i]] for i in range(n_ctx, len(natural))]
    expected = -torch.stack(token_lp).mean()
    torch.testing.assert_close(bb.gold_nll(None, batch)[0], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bb.word_scores(None, batch, length_normalize=True)[0, 1], -expected,
                               rtol=1e-4, atol=1e-4)


def test_class_label_init_starts_from_the_in_context_ids():
    from softprompt.prompt import SoftPrompt

    bb = make_subword_backbone("byte_bpe")
    task = sentiment("Review: {text}\nSentiment:\n")  # after a newline the word has no 'Ġ'
    ids = label_word_ids(bb, task)
    assert ids[1] == [bb.tokenize("\npositive")[1:]] and ids[1] != [bb.tokenize(" positive")]
    ctx = bb.init_context(label_words=[[" negative"], [" positive"]], task=task)
    weight = SoftPrompt.initialize(3, bb.dim, "class-labels", ctx).weight
    torch.testing.assert_close(weight[1], bb.embed(torch.tensor(ids[1][0])).float().mean(0).cpu())


@pytest.mark.skipif(not SMOLLM2.exists(), reason="SmolLM2-135M not converted here")
@pytest.mark.parametrize("ending", [" ", "  "])
def test_smollm2_trailing_space_label_ids_are_the_natural_texts(ending):
    from transformers import AutoTokenizer

    from softprompt.backbones import wrap

    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    bb = wrap(make_model("causal", tok), tok, model_id="smollm2-tokenizer")  # tiny model, real tokenizer
    batch = encode(bb, sentiment("Review: {text}\nSentiment:" + ending), [ROW])
    natural = "Review: a great movie\nSentiment: positive"
    assert batch.context[0] + batch.words[0][1] == tok(natural, add_special_tokens=False)["input_ids"]
    assert batch.words[0][1] == [2731] and tok.convert_ids_to_tokens([2731]) == ["Ġpositive"]  # not 'Ġ' 'Ġpositive'
    assert batch.context[0] == encode(bb, sentiment(), [ROW]).context[0]


# ------------------------------------------------------------------ item 2: indistinguishable labels
def test_labels_an_uncased_tokenizer_merges_are_refused():
    bb = make_backbone("causal")  # lowercasing word-level tokenizer
    task = sentiment(words={"positive": "Good", "negative": "good"})
    good = bb.tokenize("good")
    with pytest.raises(ConfigError, match=rf"'positive' and 'negative'.*'Good' and 'good'.*{good}.*--label-words"):
        encode(bb, task, [ROW])


def test_labels_whose_words_are_both_unknown_are_refused():
    bb = make_subword_backbone("wordpiece")
    task = sentiment("Review: {text} It was {mask}.", {"positive": "€", "negative": "¥"})
    unk = bb.tokenizer.unk_token_id
    with pytest.raises(ConfigError, match=rf"both become token ids \[{unk}\]"):
        encode(bb, task, [ROW])
    with pytest.raises(ConfigError, match="cannot be told apart"):
        label_word_ids(bb, task)


def test_a_labels_own_words_may_share_ids():
    bb = make_backbone("causal")
    batch = encode(bb, sentiment(words={"positive": ["Good", "good"], "negative": "bad"}), [ROW])
    assert batch.words[0][0] == batch.words[0][1]


def test_tail_cache_gives_the_full_tokenisations_ids():
    from softprompt.answer_tokens import context_then_words

    tok = make_subword_tokenizer("byte_bpe")
    cache: dict = {}
    contexts = [f"Review: {t}\nSentiment:{e}" for t in ("a great movie", "i hate this film , so dull")
                for e in ("", " ", "  ", "\n")] + ["it was", "it was  ", "the movie was fun and good"]
    for c in contexts:
        assert context_then_words(tok, c, ["positive", "negative"], " ", cache) == answer_ids(
            tok, c, ["positive", "negative"], " ")
    # the two reviews end alike: one cached entry per ending, not per row
    assert sum(k[0] == "words" and k[1].endswith("Sentiment: ") for k in cache) == 1


def test_in_context_demonstrations_do_not_double_the_space():
    from softprompt.methods.in_context import render_demonstration

    task = sentiment("Review: {text}\nSentiment: ")
    assert render_demonstration(task, make_backbone("causal"), ROW) == "Review: a great movie\nSentiment: positive"


def test_training_with_look_alike_labels_exits_with_an_error(tiny_model_dirs, toy_data, tmp_path, capsys):
    from softprompt.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "3",
               "--label-words", "positive=Good;negative=good", "--max-steps", "2", "--eval-every", "2",
               "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'positive' and 'negative' cannot be told apart" in err and "--label-words" in err
    assert not (out / "best").exists()
