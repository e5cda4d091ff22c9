from collections import Counter

import pytest

from softprompt.errors import ConfigError, DataError
from softprompt.ppt.corpus import Document
from softprompt.ppt.formats import (FORMATS, PAIR_LABEL_WORDS, SINGLE_LABEL_WORDS, build_examples, get_format,
                                    hold_out)

from .conftest import make_documents

DOCS = make_documents(12)
BY_INDEX = {d.index: d for d in DOCS}


def _balanced(counter: Counter, keys) -> bool:
    counts = [counter[k] for k in keys]
    return max(counts) - min(counts) <= 1 and min(counts) > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_examples_are_well_formed_and_deterministic_per_seed(fmt):
    rows = build_examples(DOCS, fmt, 31, seed=5)
    task = get_format(fmt).task()
    task.validate(rows, where=fmt)  # every row renders and has a label the verbalizer knows
    assert [r["idx"] for r in rows] == list(range(31))
    assert all(task.template.render(r).endswith("\nAnswer:") for r in rows)
    assert build_examples(DOCS, fmt, 31, seed=5) == rows
    assert build_examples(DOCS, fmt, 31, seed=6) != rows


def test_pair_classes_are_balanced_and_follow_their_definition():
    rows = build_examples(DOCS, "pair", 60, seed=1)
    assert _balanced(Counter(r["label"] for r in rows), PAIR_LABEL_WORDS)
    for r in rows:
        d, e = BY_INDEX[r["doc"]], BY_INDEX[r["doc2"]]
        assert (r["sentence1"], r["sentence2"]) == (d.sentences[r["position"]], e.sentences[r["position2"]])
        assert r["position"] + 1 < len(d.sentences)  # every anchor has a next sentence ...
        assert any(abs(j - r["position"]) >= 2 for j in range(len(d.sentences)))  # ... and a far one
        if r["label"] == "next":
            assert r["doc2"] == r["doc"] and r["position2"] == r["position"] + 1
        elif r["label"] == "same_document":
            assert r["doc2"] == r["doc"] and abs(r["position2"] - r["position"]) >= 2
        else:
            assert r["doc2"] != r["doc"]


@pytest.mark.parametrize("options", [2, 4, 5])
def test_choice_gold_slot_is_balanced_and_distractors_never_take_the_anchor_or_answer(options):
    rows = build_examples(DOCS, "choice", 10 * options, seed=2, options=options)
    slots = Counter(r["choices"].index(r["label"]) for r in rows)
    assert _balanced(slots, range(options))
    for r in rows:
        d = BY_INDEX[r["doc"]]
        assert len(r["choices"]) == options == len(set(r["choices"])) == len(r["sources"])
        assert r["sentence"] == d.sentences[r["position"]] and r["label"] == d.sentences[r["position"] + 1]
        assert [BY_INDEX[e].sentences[j] for e, j in r["sources"]] == r["choices"]
        gold = r["choices"].index(r["label"])
        assert r["sources"][gold] == [d.index, r["position"] + 1]
        wrong = [tuple(s) for k, s in enumerate(r["sources"]) if k != gold]
        assert (d.index, r["position"]) not in wrong and (d.index, r["position"] + 1) not in wrong
        assert r["sentence"] not in r["choices"]
        same = [s for s in wrong if s[0] == d.index]
        others = [s[0] for s in wrong if s[0] != d.index]
        has_third = len(d.sentences) > 2
        assert len(same) == (1 if has_third else 0)
        assert len(others) == len(set(others))  # one sentence per other document (12 documents are plenty)


def test_single_labels_are_balanced_and_exact():
    rows = build_examples(DOCS, "single", 41, seed=3)
    assert _balanced(Counter(r["label"] for r in rows), SINGLE_LABEL_WORDS)
    for r in rows:
        d = BY_INDEX[r["doc"]]
        assert r["sentence"] == d.sentences[r["position"]] and len(d.sentences) >= 2
        assert (r["position"] == 0) == (r["label"] == "first")


def test_unified_mixes_the_three_sources_as_lettered_questions():
    rows = build_examples(DOCS, "unified", 60, seed=4, options=4)
    assert _balanced(Counter(r["source"] for r in rows), ("pair", "choice", "single"))
    for r in rows:
        letters = r["choices"]
        assert letters == list("ABCD"[: len(letters)])
        lines = r["options"].split("\n")
        texts = [line.split(") ", 1)[1] for line in lines]
        assert [line[1] for line in lines] == letters
        assert texts[letters.index(r["label"])] == r["answer"]
        if r["source"] == "pair":
            assert sorted(texts) == sorted(PAIR_LABEL_WORDS.values()) and r["context"].startswith("Sentence 1: ")
        elif r["source"] == "single":
            assert sorted(texts) == sorted(SINGLE_LABEL_WORDS.values())
        else:
            assert len(texts) == 4 and r["answer"] == BY_INDEX[r["doc"]].sentences[r["position"] + 1]
    pair_answers = Counter(r["label"] for r in rows if r["source"] == "pair")
    assert len(pair_answers) > 1  # the options are shuffled: no fixed letter per answer


def test_a_pair_example_renders_as_documented():
    row = {"sentence1": "The cat sat.", "sentence2": "It purred."}
    assert get_format("pair").task().template.render(row) == (
        "Sentence 1: The cat sat.\nSentence 2: It purred.\n"
        "Question: Does sentence 2 follow sentence 1 in the same text?\nAnswer:")
    assert get_format("pair").label_words_spec == "next=yes;same_document=maybe;other_document=no"
    assert get_format("unified").label_words_spec == "choices:choices"


def _docs(*lengths):
    return [Document(k, k + 1, tuple(f"S{k}x{i}." for i in range(n))) for k, n in enumerate(lengths)]


def test_too_small_corpora_get_clear_errors():
    with pytest.raises(DataError, match="'pair', which needs at least 2 documents, one of them with at least 3"):
        build_examples(_docs(2, 2, 2), "pair", 5, where="c.txt")
    with pytest.raises(DataError, match="c.txt: too small for the PPT format 'single'"):
        build_examples(_docs(1, 1), "single", 5, where="c.txt")
    with pytest.raises(DataError, match="'choice'.*at least 2 documents"):
        build_examples(_docs(5), "choice", 5)
    with pytest.raises(DataError, match="pass fewer options"):
        build_examples(_docs(2, 2), "choice", 5, options=4)
    assert len(build_examples(_docs(2, 2), "choice", 5, options=3)) == 5  # exactly enough sentences
    with pytest.raises(ConfigError, match="unknown PPT format 'nsp'"):
        build_examples(DOCS, "nsp", 5)
    with pytest.raises(ConfigError, match="2 to 26 options"):
        build_examples(DOCS, "choice", 5, options=1)


def test_hold_out_splits_documents_disjointly():
    train, dev = hold_out(DOCS, 0.25, seed=0)
    assert len(dev) == 3 and len(train) == 9
    assert {d.index for d in train} | {d.index for d in dev} == set(range(12))
    assert not {d.index for d in train} & {d.index for d in dev}
    assert hold_out(DOCS, 0.25, seed=0) == (train, dev) and hold_out(DOCS, 0.25, seed=1) != (train, dev)
    assert len(hold_out(DOCS, 0.001)[1]) == 2  # at least two, so a dev example can use "another document"
    with pytest.raises(DataError, match="too few to hold out"):
        hold_out(DOCS[:3], 0.5)
