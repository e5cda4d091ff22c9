"""KPT's refinement and calibration (issue 16 items 2-3), on a tiny model whose word scores the
test controls (``backbone.word_scores`` replaced by a table), so the prior is known."""

from __future__ import annotations

import math

import pytest
import torch

from softprompt.errors import ConfigError
from softprompt.refinement import (RefineOptions, build_knowledgeable, contextual_log_prior, frequency_keep,
                                   relevance_scores, resolve_duplicates)
from softprompt.tasks import KnowledgeableVerbalizer, get_task

ROWS = [{"text": t, "label": "negative", "idx": i} for i, t in enumerate(["a", "b", "c", "d"])]


def controlled(backbone, monkeypatch, table):
    """``backbone`` whose ``word_scores`` gives the i-th row it scores ``table[i % len(table)]``."""
    table = torch.tensor(table, dtype=torch.float32)
    seen = []

    def word_scores(cond, batch, *args):
        rows = [(seen.append(1) or len(seen) - 1) % len(table) for _ in range(len(batch))]
        return table[rows]

    monkeypatch.setattr(backbone, "word_scores", word_scores)
    return backbone


def test_duplicates_are_removed_from_every_label_but_the_one_they_name_or_shared():
    words = {"neg": ["bad", "meh", "dull"], "pos": ["good", "meh", "bad"]}
    kept, removed = resolve_duplicates(words, "remove")
    assert kept == {"neg": ["bad", "dull"], "pos": ["good"]}
    assert removed == {"neg": ["meh"], "pos": ["meh", "bad"]}
    assert resolve_duplicates(words, "share") == (words, {})


def test_the_prior_is_the_log_of_the_mean_probability():
    lp = torch.tensor([[math.log(0.5), math.log(0.5)], [math.log(0.1), math.log(0.9)]])
    assert torch.allclose(contextual_log_prior(lp), torch.tensor([math.log(0.3), math.log(0.7)]))


def test_frequency_drops_the_lowest_prior_fraction_but_never_empties_a_label():
    prior = torch.tensor([-5.0, -6.0, 0.0, -1.0])  # label 0's words are both the rarest
    assert frequency_keep([0, 0, 1, 1], prior, 0.5) == [True, False, True, True]
    assert frequency_keep([0, 0, 1, 1], prior, 0.25) == [True, False, True, True]
    assert frequency_keep([0, 0, 1, 1], prior, 0.0) == [True] * 4


A, B = [0.0, -5.0, 0.0, -5.0], [-5.0, 0.0, -5.0, 0.0]  # two opposite patterns over 4 rows


def test_relevance_keeps_words_that_predict_like_their_class_name():
    # columns: bad(name 0)=A, awful=B, dull=A | good(name 1)=B, great=B, fun=A
    lp = torch.tensor([A, B, A, B, B, A]).T
    rel = relevance_scores([0, 0, 0, 1, 1, 1], [0, 3], lp)
    assert rel[1] == float("-inf") and rel[5] == float("-inf")  # anti-correlated with their name: tf < 0
    assert rel[2] == pytest.approx(1.0) and rel[4] == pytest.approx(1.0)  # tf = 1, idf = 1 / |cos| = 1


def test_build_refines_with_the_known_prior_and_records_every_stage(causal_backbone, monkeypatch):
    task = get_task("rotten_tomatoes")
    words = {"negative": ["bad", "awful", "dull", "good"], "positive": ["good", "great", "fun"]}
    # columns after duplicates: bad awful dull | good great fun; each row holds the same values, so
    # the normaliser over the words is the same for every row and the prior follows the table
    table = [[0, -5, 0, -5, -5, 0], [-5, 0, -5, 0, 0, -5], [0, -5, 0, -5, -5, 0], [-5, 0, -5, 0, 0, -5]]
    table = [[v - (2.0 if j == 2 else 0.0) for j, v in enumerate(row)] for row in table]  # dull rarer
    controlled(causal_backbone, monkeypatch, table)
    opts = RefineOptions(frequency_cutoff=0.2, support_size=4, seed=3)
    verb = build_knowledgeable(causal_backbone, task, words, ROWS, opts, source="test")
    assert isinstance(verb, KnowledgeableVerbalizer)
    assert verb.candidates() == [["bad"], ["good", "great"]]
    stages = {s["stage"]: s for s in verb.record["stages"]}
    assert stages["duplicates"]["removed"] == {"negative": ["good"]}
    assert stages["frequency"]["removed"] == {"negative": ["dull"]}  # int(0.2 * 6) = 1 word: the rarest
    assert stages["relevance"]["removed"] == {"negative": ["awful"], "positive": ["fun"]}
    assert stages["relevance"]["counts"] == {"negative": 1, "positive": 2}
    assert verb.record["given"] == {"negative": 4, "positive": 3}
    assert verb.record["support"]["count"] == 4 and verb.record["support"]["seed"] == 3
    expected = contextual_log_prior(torch.log_softmax(torch.tensor(table), -1))[[0, 3, 4]]
    assert torch.allclose(verb.log_prior, expected)


def test_each_refinement_is_switchable(causal_backbone, monkeypatch):
    task = get_task("rotten_tomatoes")
    words = {"negative": ["bad", "awful"], "positive": ["good", "great"]}
    controlled(causal_backbone, monkeypatch, [[0, 0, -1, -9]] * 4)
    none = build_knowledgeable(causal_backbone, task, words, ROWS, RefineOptions(refine="none", support_size=4))
    assert none.candidates() == [["bad", "awful"], ["good", "great"]] and none.calibrate
    freq = build_knowledgeable(causal_backbone, task, words, ROWS, RefineOptions(refine="frequency", support_size=4))
    assert freq.candidates() == [["bad", "awful"], ["good"]]
    bare = build_knowledgeable(causal_backbone, task, words, [], RefineOptions(refine="none", calibrate=False))
    assert torch.equal(bare.log_prior, torch.zeros(4)) and bare.record["support"] is None
    with pytest.raises(ConfigError, match="--refine none --no-calibrate"):
        build_knowledgeable(causal_backbone, task, words, [], RefineOptions())
    with pytest.raises(ConfigError, match="unknown refinement"):
        RefineOptions(refine="frequency,stemming")


def test_calibration_divides_by_the_prior_and_changes_the_prediction():
    verb = KnowledgeableVerbalizer({"a": ["x"], "b": ["y"]}, log_prior=torch.tensor([-0.1, -3.0]), calibrate=False)
    scores, owners = torch.tensor([[-1.0, -2.0]]), torch.tensor([0, 1])
    assert verb.aggregate(scores, owners, 2).argmax().item() == 0  # the frequent word wins uncalibrated
    verb.calibrate = True
    out = verb.aggregate(scores, owners, 2)
    assert out.argmax().item() == 1
    assert out[0, 1] - out[0, 0] == pytest.approx((-2.0 + 3.0) - (-1.0 + 0.1))


def test_a_label_score_is_the_weighted_mean_of_its_words_log_probabilities():
    verb = KnowledgeableVerbalizer({"a": ["x", "z"], "b": ["y"]}, calibrate=False)
    scores = torch.tensor([[-1.0, -3.0, -2.0]])
    out = verb.aggregate(scores, torch.tensor([0, 0, 1]), 2)
    norm = torch.logsumexp(scores, -1)
    assert torch.allclose(out, torch.tensor([[-2.0, -2.0]]) - norm)


def test_relevance_never_empties_a_label_whose_class_name_frequency_dropped(causal_backbone, monkeypatch):
    task = get_task("rotten_tomatoes")
    words = {"negative": ["bad", "awful"], "positive": ["good", "great"]}
    controlled(causal_backbone, monkeypatch, [[-20, 0, 0, -1]] * 4)  # "bad" the rarest word
    opts = RefineOptions(frequency_cutoff=0.25, relevance_threshold=1e9, support_size=4)
    verb = build_knowledgeable(causal_backbone, task, words, ROWS, opts)
    assert verb.record["stages"][1]["removed"] == {"negative": ["bad"]}
    assert verb.candidates() == [["awful"], ["good"]]  # the name kept; awful the most relevant left


def test_every_model_family_refines_and_scores_with_its_own_word_scores(any_backbone):
    from softprompt.encoding import encode
    from softprompt.scoring import label_scores

    task = get_task("rotten_tomatoes")
    words = {"negative": ["bad", "awful", "dull"], "positive": ["good", "great", "fun"]}
    rows = [{"text": t, "label": "negative", "idx": i} for i, t in enumerate(["a dull plot", "great fun", "so bad"])]
    task.verbalizer = build_knowledgeable(any_backbone, task, words, rows, RefineOptions(support_size=3))
    assert torch.isfinite(task.verbalizer.log_prior).all()
    scores = label_scores(any_backbone, task, encode(any_backbone, task, rows))
    assert scores.shape == (3, 2) and torch.isfinite(scores).all()
