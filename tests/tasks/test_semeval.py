"""The official SemEval-2010 Task 8 score equals what the official perl scorer prints (issue 17)."""

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from softprompt.tasks.metrics import compute_metrics
from softprompt.tasks.semeval import answer_file, semeval_micro_f1, semeval_official_f1

from conftest import SHARED_DATA

DATA = SHARED_DATA / "semeval2010_task8"
SCORER = DATA / "official_scorer" / "semeval2010_task8_scorer-v1.2.pl"


def fixed_predictions():
    """The test split's gold labels and a fixed corruption of them: a quarter replaced by a random
    label, a tenth of the directed ones flipped (wrong direction)."""
    golds = [json.loads(line)["label"] for line in (DATA / "test.jsonl").read_text().splitlines()]
    labels = sorted(set(golds))
    rng = random.Random(17)
    preds = []
    for g in golds:
        u = rng.random()
        if u < 0.25:
            preds.append(rng.choice(labels))
        elif u < 0.35 and g != "Other":
            preds.append(g.replace("(e1,e2)", "(x)").replace("(e2,e1)", "(e1,e2)").replace("(x)", "(e2,e1)"))
        else:
            preds.append(g)
    return preds, golds


@pytest.mark.skipif(shutil.which("perl") is None or not SCORER.is_file(), reason="needs perl and the shared data")
def test_official_score_equals_the_perl_scorer(tmp_path):
    preds, golds = fixed_predictions()
    ids = range(1, len(golds) + 1)
    (tmp_path / "proposed.txt").write_text(answer_file(ids, preds))
    (tmp_path / "key.txt").write_text(answer_file(ids, golds))
    out = subprocess.run(["perl", str(SCORER), str(tmp_path / "proposed.txt"), str(tmp_path / "key.txt")],
                         capture_output=True, text=True, check=True).stdout
    official = float(re.search(r"macro-averaged F1 = ([\d.]+)%", out).group(1))
    official_part = out.split("-- OFFICIAL >>>")[1]
    micro = float(re.search(r"Micro-averaged result \(excluding Other\):\nP = .*F1 =\s*([\d.]+)%", official_part).group(1))
    assert round(100 * semeval_official_f1(preds, golds), 2) == official
    assert round(100 * semeval_micro_f1(preds, golds), 2) == micro
    assert 0.3 < official / 100 < 0.9


def test_hand_counted_example():
    golds = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other", "Message-Topic(e1,e2)"]
    preds = ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)", "Message-Topic(e1,e2)", "Other"]
    # Cause-Effect: correct 1, proposed 1 + 1 wrong direction = 2, gold 2 -> P = R = 50, F1 = 50
    # Message-Topic: correct 0 -> F1 0; Other excluded. Official = (50 + 0) / 2
    assert semeval_official_f1(preds, golds) == pytest.approx(0.25)
    # micro: correct 1, proposed 2 + 1 = 3, gold 3 -> 1/3
    assert semeval_micro_f1(preds, golds) == pytest.approx(1 / 3)
    metrics = compute_metrics(["semeval_f1", "micro_f1_no_other", "accuracy"], preds, golds, sorted(set(golds)))
    assert metrics == pytest.approx({"semeval_f1": 0.25, "micro_f1_no_other": 1 / 3, "accuracy": 0.25})
