"""Truncation keeps exact prefixes of the fields and shares the cut fairly (issue 13, item 3)."""

import json
import re
from pathlib import Path

import pytest

from softprompt.encoding import encode
from softprompt.tasks.registry import get_task
from softprompt.tasks.task import Task
from softprompt.tasks.verbalizer import Verbalizer
from softprompt.truncation import fit, token_units

from conftest import SHARED_DATA, make_backbone, make_model
from subword_tokenizers import make_subword_backbone

SMOLLM2 = Path.home() / ".cache" / "softprompt" / "models" / "smollm2-135m"
PAIR = re.compile(r"Sentence 1: (.*)\nSentence 2: (.*)\nQuestion", re.S)


def kept_fields(batch, row):
    s1, s2 = PAIR.match(batch.context_text[row]).groups()
    return s1, s2


def test_two_long_fields_end_within_a_token_of_each_other():
    bb = make_subword_backbone("byte_bpe", max_length=96)
    task = get_task("mrpc")
    s1 = " ".join(["the movie was great fun and i love it"] * 12)  # far longer than s2
    s2 = " ".join(["a dull plot"] * 12)
    row = {"sentence1": s1, "sentence2": s2, "label": "equivalent"}
    full = len(bb.tokenize(task.template.render(row)))
    batch = encode(bb, task, [row], prompt_length=10)
    k1, k2 = kept_fields(batch, 0)
    assert s1.startswith(k1) and s2.startswith(k2)
    n1, n2 = len(bb.tokenize(k1)), len(bb.tokenize(k2))
    assert abs(n1 - n2) <= 1 and n2 < len(bb.tokenize(s2))
    assert batch.truncated == 1 and batch.truncated_tokens == full - len(bb.tokenize(batch.context_text[0]))
    assert len(batch.context[0]) + 10 + len(batch.words[0][0]) <= 96


def test_a_short_field_is_left_whole_while_the_long_one_pays():
    bb = make_subword_backbone("byte_bpe", max_length=96)
    task = get_task("mrpc")
    row = {"sentence1": " ".join(["the movie was great fun"] * 20), "sentence2": "a dull plot", "label": "equivalent"}
    batch = encode(bb, task, [row], prompt_length=10)
    k1, k2 = kept_fields(batch, 0)
    assert k2 == "a dull plot" and row["sentence1"].startswith(k1) and len(k1) < len(row["sentence1"])


def test_kept_text_is_an_exact_prefix_never_decoded():
    # the word-level fixture lowercases: a decode/encode round trip would give "great fun ..."
    bb = make_backbone("causal")
    bb.max_length = 40
    text = "GREAT  Fun, " * 30
    batch = encode(bb, get_task("rotten_tomatoes"), [{"text": text, "label": "positive"}], prompt_length=10)
    kept = batch.context_text[0][len("Review: "): -len("\nSentiment:")]
    assert batch.context_text[0].startswith("Review: GREAT  Fun,") and text.startswith(kept)
    assert batch.context_text[0].endswith("\nSentiment:")
    assert batch.truncated == 1 and batch.truncated_tokens > 0


def test_untruncated_rows_count_nothing():
    bb = make_subword_backbone("byte_bpe")
    batch = encode(bb, get_task("rotten_tomatoes"), [{"text": "a great movie", "label": "positive"}])
    assert batch.truncated == 0 and batch.truncated_tokens == 0
    assert batch.context_text == ["Review: a great movie\nSentiment:"]


@pytest.mark.parametrize("kind,max_length", [("sentencepiece", 128), ("wordpiece", 64)])
def test_other_families_cut_fairly_to_prefixes(kind, max_length):
    bb = make_subword_backbone(kind, max_length=max_length)
    task = get_task("mrpc")
    row = {"sentence1": " ".join(["the movie was fun"] * 25), "sentence2": " ".join(["a dull plot"] * 12),
           "label": "equivalent"}
    batch = encode(bb, task, [row], prompt_length=5)
    text = batch.context_text[0]
    if kind == "wordpiece":  # masked: the text before the slot
        text = text + "\n"
    k1, k2 = PAIR.match(text).groups()
    assert row["sentence1"].startswith(k1) and row["sentence2"].startswith(k2)
    assert abs(len(bb.tokenize(k1)) - len(bb.tokenize(k2))) <= 1 and len(k2) < len(row["sentence2"])
    assert batch.truncated == 1


@pytest.mark.skipif(not SMOLLM2.exists() or not (SHARED_DATA / "mrpc").exists(), reason="SmolLM2 or MRPC data absent")
def test_mrpc_longest_pair_on_smollm2_is_cut_evenly():
    from transformers import AutoTokenizer

    from softprompt.backbones import wrap

    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    bb = wrap(make_model("causal", tok), tok, model_id="smollm2-tokenizer", max_length=128)
    rows = [json.loads(line) for line in open(SHARED_DATA / "mrpc" / "train.jsonl")]
    row = next(r for r in rows if r["idx"] == 1572)  # 64 + 60 tokens: the longest pair
    batch = encode(bb, get_task("mrpc"), [row], prompt_length=20)
    k1, k2 = kept_fields(batch, 0)
    n1, n2 = len(bb.tokenize(k1)), len(bb.tokenize(k2))
    assert row["sentence1"].startswith(k1) and row["sentence2"].startswith(k2)
    assert abs(n1 - n2) <= 1 and 40 <= n2 < 60


def test_evaluation_counts_truncated_rows_and_tokens():
    from softprompt.scoring import evaluate

    bb = make_backbone("causal")
    bb.max_length = 30
    task = get_task("rotten_tomatoes")
    rows = [{"text": "great fun " * 20, "label": "positive"}, {"text": "bad", "label": "negative"}]
    full = len(bb.tokenize(task.template.render(rows[0])))
    result = evaluate(bb, task, rows)
    assert result.truncated == 1
    assert result.truncated_tokens == full - (30 - 1)  # room: 30 positions less the longest word's one token


# Text whose characters span several byte-level BPE tokens (finding 1 of the user trial): a CJK
# character is 3 bytes, an emoji 4, an accented letter 2. The cut may overshoot the budget by at
# most one such character's tokens, so SLACK is an emoji's 4 tokens (the most one character takes).
SLACK = 4
MULTIBYTE = {
    "cjk": "我喜欢这部电影。" * 100,
    "emoji": "😀 fun " * 100,
    "few_emoji": "a great 😀 movie with fun " * 40,
    "accented": "café naïve résumé à la crème " * 40,
}
ENGLISH = "the movie was great and i love it " * 12


@pytest.fixture(scope="module")
def smollm2_backbone():
    if not SMOLLM2.exists():
        pytest.skip("SmolLM2 absent")
    from transformers import AutoTokenizer

    from softprompt.backbones import wrap

    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    return wrap(make_model("causal", tok), tok, model_id="smollm2-tokenizer", max_length=2048)


@pytest.fixture(params=["byte_bpe", "smollm2"])
def bpe_backbone(request):
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_backbone")
    return make_subword_backbone("byte_bpe", max_length=2048)


def fitted(bb, template, row, budget):
    cut = fit(bb, template, row, None, budget)
    kept = {f: cut.overrides.get(f, row[f]) for f in template.fields}
    text = template.render(row, overrides=cut.overrides)[cut.head_chars:]
    return cut, kept, len(bb.tokenize(text))


def test_a_cjk_character_is_one_unit_of_its_three_tokens():
    tok = make_subword_backbone("byte_bpe").tokenizer
    assert token_units(tok, "我喜欢") == [(1, 3), (2, 6), (3, 9)]  # 3 bytes, 3 tokens each in the fixture
    assert token_units(tok, "😀 fun") == [(1, 4), (5, 5)]  # the emoji's 4 tokens, then " fun"


@pytest.mark.parametrize("kind", sorted(MULTIBYTE))
@pytest.mark.parametrize("budget", [100, 60, 30])
def test_multibyte_text_is_cut_to_the_budget_as_a_prefix(bpe_backbone, kind, budget):
    template = get_task("rotten_tomatoes").template
    row = {"text": MULTIBYTE[kind]}
    full = len(bpe_backbone.tokenize(template.render(row)))
    cut, kept, n = fitted(bpe_backbone, template, row, budget)
    assert budget - SLACK <= n <= budget  # was 9 tokens of 100 for the CJK text on SmolLM2
    assert row["text"].startswith(kept["text"]) and cut.head_chars == 0
    assert cut.cut_tokens == full - n


@pytest.mark.parametrize("kind", sorted(MULTIBYTE))
@pytest.mark.parametrize("budget", [100, 60, 30])
def test_multibyte_and_english_fields_end_near_equal(bpe_backbone, kind, budget):
    template = get_task("rte").template
    row = {"premise": MULTIBYTE[kind], "hypothesis": ENGLISH}
    cut, kept, n = fitted(bpe_backbone, template, row, budget)
    assert budget - SLACK <= n <= budget  # '😀 fun ' * 100 at 100 was 14 tokens, the hypothesis 1
    assert all(row[f].startswith(kept[f]) for f in template.fields)
    n1, n2 = (len(bpe_backbone.tokenize(kept[f])) for f in template.fields)
    assert abs(n1 - n2) <= SLACK and min(n1, n2) > 1


def test_encoded_cjk_row_fills_the_room_left_by_the_prompt():
    bb = make_subword_backbone("byte_bpe", max_length=128)
    task = get_task("rotten_tomatoes")
    row = {"text": MULTIBYTE["cjk"], "label": "positive"}
    batch = encode(bb, task, [row], prompt_length=10)
    kept = batch.context_text[0][len("Review: "): -len("\nSentiment:")]
    room = 128 - 10 - max(len(w) for w in batch.words[0])
    assert row["text"].startswith(kept) and batch.truncated == 1
    assert room - SLACK <= len(batch.context[0]) <= room
