import torch

from softprompt.scoring import evaluate, match_generation, predict
from softprompt.tasks.registry import get_task

ROWS = [{"text": "great fun", "label": "positive"}, {"text": "awful and dull", "label": "negative"},
        {"text": "i love this movie", "label": "positive"}]


def test_rank_predictions_are_probabilities_over_labels(any_backbone):
    task = get_task("rotten_tomatoes")
    preds, truncated = predict(any_backbone, task, ROWS, torch.randn(3, any_backbone.dim), batch_size=2)
    assert truncated == 0 and len(preds) == 3
    for p in preds:
        assert set(p.scores) == {"negative", "positive"}
        assert abs(sum(p.scores.values()) - 1) < 1e-5
        assert p.label == max(p.scores, key=p.scores.get)


def test_batching_does_not_change_predictions(causal_backbone):
    task = get_task("rotten_tomatoes")
    prompt = torch.randn(3, causal_backbone.dim)
    one, _ = predict(causal_backbone, task, ROWS, prompt, batch_size=1)
    many, _ = predict(causal_backbone, task, ROWS, prompt, batch_size=3)
    for a, b in zip(one, many):
        assert a.label == b.label
        assert all(abs(a.scores[k] - b.scores[k]) < 1e-4 for k in a.scores)


def test_generation_maps_back_to_labels_and_counts_invalid(causal_backbone):
    task = get_task("rotten_tomatoes")
    res = evaluate(causal_backbone, task, ROWS, None, scoring="generate")
    assert res.n == 3 and 0 <= res.invalid <= 3
    assert all(p.generated is not None for p in res.predictions)
    assert res.metrics["accuracy"] <= 1 - res.invalid / 3 + 1e-9


def test_match_generation():
    names, cands = ["positive", "negative"], [["positive", "good"], ["negative"]]
    assert match_generation(" Positive.", names, cands) == "positive"
    assert match_generation("good movie", names, cands) == "positive"
    assert match_generation("negative", names, cands) == "negative"
    assert match_generation("neutral", names, cands) is None
    assert match_generation("goodness", names, cands) is None


def test_choice_task_scoring(any_backbone):
    task = get_task("copa")
    rows = [{"premise": "it was dull", "question": "effect", "choices": ["i love it", "i hate it", "bad"], "label": "bad"},
            {"premise": "great", "question": "cause", "choices": ["fun", "dull"], "label": "fun"}]
    res = evaluate(any_backbone, task, rows, None)
    assert res.n == 2
    assert set(res.predictions[0].scores) == {"i love it", "i hate it", "bad"}
    assert set(res.predictions[1].scores) == {"fun", "dull"}
