import pytest

from softprompt.errors import ConfigError, DataError
from softprompt.tasks.metrics import compute_metrics, majority_baseline

PREDS = ["a", "a", "b", "b", "c", "a"]
GOLDS = ["a", "b", "b", "c", "c", "a"]
LABELS = ["a", "b", "c", "d"]


def test_metrics_against_hand_computed_values():
    # per class (tp, fp, fn): a (2, 1, 0) -> 4/5; b (1, 1, 1) -> 2/4; c (1, 0, 1) -> 2/3; d never gold nor
    # predicted: no F1, left out of the mean (scikit-learn's f1_score(average="macro") gives the same)
    result = compute_metrics(["accuracy", "f1", "macro_f1"], PREDS, GOLDS, LABELS, positive_label="a")
    assert list(result) == ["accuracy", "f1", "macro_f1"]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1"] == pytest.approx(0.8)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_counts_a_class_predicted_but_never_gold_and_not_one_that_is_neither():
    # a sample (--limit) without any 'neutral' row: neutral counts only once the model predicts it
    golds = ["yes", "no", "yes", "no"]
    labels = ["yes", "no", "neutral"]
    assert compute_metrics(["macro_f1"], ["yes", "no", "yes", "no"], golds, labels)["macro_f1"] == 1.0
    # neutral predicted once, never gold: F1 0; yes (1, 0, 1) -> 2/3; no (2, 0, 0) -> 1
    got = compute_metrics(["macro_f1"], ["yes", "no", "neutral", "no"], golds, labels)["macro_f1"]
    assert got == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_binary_f1_edge_cases():
    assert compute_metrics(["f1"], ["no", "no"], ["no", "no"], ["yes", "no"], "yes")["f1"] == 0.0
    assert compute_metrics(["f1"], ["yes", "no"], ["yes", "no"], ["yes", "no"], "yes")["f1"] == 1.0
    # precision 1/3, recall 1/1 -> 2 * (1/3) / (4/3) = 0.5
    assert compute_metrics(["f1"], ["yes"] * 3, ["yes", "no", "no"], ["yes", "no"], "yes")["f1"] == 0.5


def test_f1_needs_positive_label():
    with pytest.raises(ConfigError, match="positive_label"):
        compute_metrics(["f1"], PREDS, GOLDS, LABELS)


def test_unknown_metric_lists_known():
    with pytest.raises(ConfigError, match="'auc'.*accuracy, f1, macro_f1"):
        compute_metrics(["accuracy", "auc"], PREDS, GOLDS, LABELS)


def test_mismatched_or_empty_inputs():
    with pytest.raises(DataError):
        compute_metrics(["accuracy"], ["a"], ["a", "b"], LABELS)
    with pytest.raises(DataError):
        compute_metrics(["accuracy"], [], [], LABELS)


def test_majority_baseline():
    assert majority_baseline(["yes", "no", "yes", "yes"]) == 0.75
    with pytest.raises(DataError):
        majority_baseline([])
