import math

import pytest
import torch

from softprompt.errors import ConfigError, DataError, UnknownLabelError
from softprompt.tasks.verbalizer import (
    ChoiceVerbalizer,
    Verbalizer,
    parse_label_words,
    verbalizer_from_dict,
)


def test_attributes_and_defaults():
    v = Verbalizer({"positive": ["great", "good"], "negative": "terrible"})
    assert v.is_fixed and v.prefix == " "
    assert v.labels == ["positive", "negative"]
    assert v.words == [["great", "good"], ["terrible"]]
    assert v.weights == [[0.5, 0.5], [1.0]]
    assert v.label_names() == v.labels
    assert v.candidates({"text": "ignored"}) == [["great", "good"], ["terrible"]]
    assert v.flat_words() == (["great", "good", "terrible"], [0, 0, 1], [0.5, 0.5, 1.0])


def test_aggregate_is_identity_with_one_word_per_label():
    v = Verbalizer({"a": "x", "b": "y", "c": "z"})
    scores = torch.randn(4, 3)
    out = v.aggregate(scores, torch.tensor([0, 1, 2]), 3)
    assert torch.equal(out, scores)


def test_aggregate_weighted_log_mean_exp_by_hand():
    # label 0: words with probabilities .2 and .4, weights 3:1 -> .75*.2 + .25*.4 = .25
    # label 1: one word with probability .1
    v = Verbalizer({"pos": ["a", "b"], "neg": ["c"]}, weights={"pos": [3, 1]})
    assert v.weights == [[0.75, 0.25], [1.0]]
    scores = torch.log(torch.tensor([[0.2, 0.4, 0.1], [0.5, 0.5, 0.9]], dtype=torch.float64))
    out = v.aggregate(scores, torch.tensor([0, 0, 1]), 2)
    expected = torch.log(torch.tensor([[0.25, 0.1], [0.5, 0.9]], dtype=torch.float64))
    assert torch.allclose(out, expected, atol=1e-12)


def test_aggregate_default_weights_are_log_mean_exp_and_differentiable():
    v = Verbalizer({"yes": ["yes", "true"], "no": ["no"]})
    scores = torch.tensor([[-1.0, -3.0, -2.0]], requires_grad=True)
    out = v.aggregate(scores, torch.tensor([0, 0, 1]), 2)
    assert out[0, 0].item() == pytest.approx(math.log((math.exp(-1) + math.exp(-3)) / 2))
    assert out[0, 1].item() == pytest.approx(-2.0)
    out[:, 0].sum().backward()
    assert torch.all(scores.grad[0, :2] > 0) and scores.grad[0, 2] == 0


def test_aggregate_checks_shapes():
    v = Verbalizer({"a": "x", "b": "y"})
    with pytest.raises(ValueError):
        v.aggregate(torch.zeros(2, 3), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(ValueError):
        v.aggregate(torch.zeros(2, 2), torch.tensor([0, 2]), 2)


def test_gold_index_and_unknown_label():
    v = Verbalizer({"negative": "bad", "positive": "good"})
    assert v.gold_index({"label": "positive"}) == 1
    with pytest.raises(UnknownLabelError) as info:
        v.gold_index({"label": "postive", "idx": 12})
    message = str(info.value)
    for part in ["'postive'", "idx=12", "'negative'", "'positive'", "did you mean 'positive'"]:
        assert part in message
    with pytest.raises(UnknownLabelError, match="no 'label'"):
        v.gold_index({"text": "x"})


def test_numeric_gold_labels_match_string_labels():
    v = Verbalizer({"0": "bad", "1": "good"})
    assert v.gold_index({"label": 1}) == 1


@pytest.mark.parametrize(
    "label_words, weights",
    [
        ({}, None),
        ({"a": []}, None),
        ({"a": ""}, None),
        ({"a": " x"}, None),
        ({"a": "x", "b": "x"}, None),
        ({"a": ["x", "y"]}, {"a": [1.0]}),
        ({"a": ["x", "y"]}, {"a": [1.0, -1.0]}),
        ({"a": "x"}, {"b": [1.0]}),
    ],
)
def test_bad_verbalizers_are_config_errors(label_words, weights):
    with pytest.raises(ConfigError):
        Verbalizer(label_words, weights=weights)


def test_parse_label_words():
    assert parse_label_words("positive=great, good; negative=terrible;") == {
        "positive": ["great", "good"],
        "negative": ["terrible"],
    }
    for bad in ["positive", "=great", "positive=", "a=x,,y", "a=x;a=y", ""]:
        with pytest.raises(ConfigError, match="positive=great,good;negative=terrible"):
            parse_label_words(bad)


def test_dict_round_trip_rebuilds_the_right_class():
    v = Verbalizer({"yes": ["yes", "sure"], "no": "no"}, weights={"yes": [2, 1]}, prefix="")
    data = v.to_dict()
    assert data["type"] == "fixed"
    again = verbalizer_from_dict(data)
    assert type(again) is Verbalizer and again == v and again.weights == v.weights
    choice = verbalizer_from_dict(ChoiceVerbalizer("options").to_dict())
    assert isinstance(choice, ChoiceVerbalizer) and choice.choices_field == "options"
    with pytest.raises(ConfigError, match="fixed, learned_weights, answer_vectors, choice"):
        verbalizer_from_dict({"type": "kpt"})


def test_choice_verbalizer():
    v = ChoiceVerbalizer()
    example = {"premise": "p", "choices": ["It rained.", "It was sunny."], "label": "It was sunny.", "idx": 3}
    assert not v.is_fixed
    assert v.label_names(example) == ["It rained.", "It was sunny."]
    assert v.candidates(example) == [["It rained."], ["It was sunny."]]
    assert v.gold_index(example) == 1
    assert v.flat_words(example) == (["It rained.", "It was sunny."], [0, 1], [1.0, 1.0])
    with pytest.raises(UnknownLabelError, match=r"'It snowed\.'.*idx=3"):
        v.gold_index({**example, "label": "It snowed."})
    for bad in [{}, {"choices": []}, {"choices": "a or b"}, {"choices": ["a", "a"]}]:
        with pytest.raises(DataError, match="choices"):
            v.label_names({**bad, "label": "a"})
    with pytest.raises(ConfigError):
        v.label_names()
    scores = torch.randn(1, 2)
    assert torch.equal(v.aggregate(scores, torch.tensor([0, 1]), 2), scores)


# ----------------------------------------------------------------- verbalizers as modules

from conftest import make_backbone  # noqa: E402
from softprompt.tasks.verbalizer import (  # noqa: E402
    VERBALIZER_TYPES,
    AnswerVectorVerbalizer,
    LearnedWeightsVerbalizer,
)


def _all_kinds():
    return [
        Verbalizer({"pos": ["great", "good"], "neg": "bad"}, weights={"pos": [3, 1]}),
        Verbalizer({"pos": ["great", "good"], "neg": ["bad", "good"]}, shared_words=True),
        LearnedWeightsVerbalizer({"pos": ["great", "good"], "neg": "bad"}),
        AnswerVectorVerbalizer(["pos", "neg"], prefix=""),
        ChoiceVerbalizer("options"),
    ]


@pytest.mark.parametrize("v", _all_kinds(), ids=lambda v: v.type_name)
def test_every_verbalizer_is_a_module_and_rebuilds_from_its_dict(v):
    assert isinstance(v, torch.nn.Module) and isinstance(v, Verbalizer)
    again = verbalizer_from_dict(v.to_dict())
    assert type(again) is type(v) and again.to_dict() == v.to_dict()
    assert VERBALIZER_TYPES[v.type_name] is type(v)
    assert {v} and v in [v]  # hashable by identity, as modules are


def test_a_word_in_two_labels_is_refused_unless_shared_words():
    with pytest.raises(ConfigError, match="shared:LABEL=WORD"):
        Verbalizer({"pos": ["great", "good"], "neg": ["bad", "good"]})
    with pytest.raises(ConfigError, match="twice"):
        Verbalizer({"pos": ["good", "good"]}, shared_words=True)
    with pytest.raises(ConfigError, match="twice for 'neg'"):
        Verbalizer({"pos": "good", "neg": ["good", "fine", "good"]}, shared_words=True)
    v = Verbalizer({"pos": ["great", "good"], "neg": ["bad", "good"]}, shared_words=True)
    assert v.flat_words() == (["great", "good", "bad", "good"], [0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5])
    assert v.to_dict()["shared_words"] is True
    assert "shared_words" not in Verbalizer({"a": "x"}).to_dict()  # older saved tasks stay as they were
    # "good" counts for both labels: p(pos) = (.2 + .4) / 2, p(neg) = (.1 + .4) / 2
    scores = torch.log(torch.tensor([[0.2, 0.4, 0.1, 0.4]], dtype=torch.float64))
    out = v.aggregate(scores, torch.tensor([0, 0, 1, 1]), 2)
    assert torch.allclose(out.exp(), torch.tensor([[0.3, 0.25]], dtype=torch.float64))


def test_shared_words_encode_and_score_on_a_model():
    from softprompt.encoding import encode
    from softprompt.scoring import label_scores
    from softprompt.tasks import Task, Template

    bb = make_backbone("causal")
    task = Task("t", Template("review : {text} sentiment :"),
                Verbalizer({"pos": ["great", "good"], "neg": ["bad", "good"]}, shared_words=True))
    batch = encode(bb, task, [{"text": "fun", "label": "pos"}, {"text": "dull", "label": "neg"}])
    with torch.no_grad():
        words = bb.word_scores(None, batch)
        labels = label_scores(bb, task, batch, None)
    assert torch.equal(words[:, 1], words[:, 3])  # one word, one score, counted for both labels
    expected = torch.stack([words[:, :2].logsumexp(1), words[:, 2:].logsumexp(1)], 1) - math.log(2)
    assert torch.allclose(labels, expected, atol=1e-6)


def test_learned_weights_start_as_the_given_weights_and_train():
    fixed = Verbalizer({"pos": ["great", "good", "fun"], "neg": "bad"}, weights={"pos": [2, 1, 1]})
    learned = LearnedWeightsVerbalizer({"pos": ["great", "good", "fun"], "neg": "bad"}, weights={"pos": [2, 1, 1]})
    assert [name for name, _ in learned.named_parameters()] == ["word_logits"]
    assert sum(learned.weights, []) == pytest.approx(sum(fixed.weights, []))
    assert LearnedWeightsVerbalizer({"pos": ["a", "b"], "neg": "c"}).weights == [[0.5, 0.5], [1.0]]  # uniform
    scores = torch.randn(3, 4)
    label = torch.tensor([0, 0, 0, 1])
    assert torch.allclose(learned.aggregate(scores, label, 2), fixed.aggregate(scores, label, 2), atol=1e-6)
    learned.aggregate(scores, label, 2)[:, 0].sum().backward()
    assert learned.word_logits.grad[:3].abs().sum() > 0 and learned.word_logits.grad[3] == 0
    with torch.no_grad():
        learned.word_logits.copy_(torch.tensor([0.0, math.log(3), 0.0, 5.0]))
    assert sum(learned.weights, []) == pytest.approx([0.2, 0.6, 0.2, 1.0])  # softmax within each label
    again = verbalizer_from_dict(learned.to_dict())
    assert sum(again.weights, []) == pytest.approx(sum(learned.weights, []))


def test_answer_vectors_start_at_the_label_names_mean_embedding():
    bb = make_backbone("causal")
    v = AnswerVectorVerbalizer(["very good", "bad"])
    assert list(v.parameters()) == []
    with pytest.raises(ConfigError, match="build"):
        v.conditioning()
    v.build(bb)
    assert v.answer_vectors.shape == (2, bb.dim) and v.answer_vectors.requires_grad
    ids = bb.tokenize(" very good")
    assert len(ids) == 2
    expected = bb.embed(torch.tensor(ids)).float().mean(0)
    assert torch.allclose(v.answer_vectors[0], expected)
    assert v.candidates() == [["very good"], ["bad"]] and v.labels == ["very good", "bad"]
    conditioning = pytest.importorskip("softprompt.conditioning")
    cond = v.conditioning()
    assert isinstance(cond, conditioning.Conditioning) and cond.answer_vectors is v.answer_vectors
    assert Verbalizer({"a": "x"}).conditioning().kinds == frozenset()


@pytest.mark.parametrize("v", [Verbalizer({"positive": "great", "negative": "terrible"}),
                               ChoiceVerbalizer("options")])
def test_check_rows_asks_nothing_of_rows_together_by_default(v):
    """Only PTR's rules check the rows as a whole; a fixed label set leaves each row's label to
    gold_index, so rows missing a label, or holding only one label, pass."""
    rows = [{"text": "great fun", "label": "positive"}, {"text": "no label here"}]
    assert v.check_rows(rows, "the training rows") is None
    assert v.check_rows([]) is None


@pytest.mark.parametrize("v", _all_kinds(), ids=lambda v: v.type_name)
def test_one_word_list_per_label_fills_no_slots(v):
    """slot_words explains a prediction by the words of several answer slots; a verbalizer with one
    word list per label has none to give (PTR's rules do: tests/tasks/test_rules.py)."""
    assert v.slot_words("pos") is None
    assert v.choices_field == ("options" if v.type_name == "choice" else None)
