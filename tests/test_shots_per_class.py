"""--shots K --shots-per-class: K training rows (and K dev rows) of each label (issue 17)."""

import dataclasses
from collections import Counter

from softprompt.config import TrainConfig
from softprompt.splits import run_data
from softprompt.tasks import get_task


def test_k_rows_of_each_label_train_and_as_many_are_the_dev_set():
    task = get_task("semeval2010_task8")  # the bundled sample: 3 rows of each label, 1 of Entity-Destination(e2,e1)
    cfg = TrainConfig(task="semeval2010_task8", shots=1, shots_per_class=True, seed=3)
    data = run_data(task, cfg)
    counts = Counter(r["label"] for r in data.train)
    assert set(counts.values()) == {1} and len(counts) == 19
    dev = Counter(r["label"] for r in data.dev)
    assert set(dev.values()) == {1} and len(dev) == 18  # the label with one row trains on it, no dev row left
    assert not {r["idx"] for r in data.train} & {r["idx"] for r in data.dev}
    again = run_data(task, dataclasses.replace(cfg, seed=4))
    assert [r["idx"] for r in again.train] != [r["idx"] for r in data.train]  # another seed, other rows
    two = run_data(task, dataclasses.replace(cfg, shots=2))
    assert Counter(r["label"] for r in two.train)["Entity-Destination(e2,e1)"] == 1 and len(two.train) == 37
