"""experiments/relations.yaml (issue 17, item 5) expands into its four arms at k = 8, 16, 32 and full, 3 seeds."""

from collections import Counter
from pathlib import Path

from softprompt.experiments.config import expand, load_experiment
from softprompt.tasks.from_config import task_from_config

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "relations.yaml"


def test_relations_experiment_expands_into_its_arms():
    runs = expand(load_experiment(CONFIG))
    arms = Counter((r.key.split("/")[0].split("_")[0], r.config.method) for r in runs)
    assert arms == {("oneword", "prompt-tuning"): 12, ("ptr", "prompt-tuning"): 12, ("ptr", "full-tuning"): 12,
                    ("oneword", "manual"): 1, ("ptr", "manual"): 1}
    for r in runs:
        cfg = r.config
        k = r.key.split("/")[0].split("_")[1]
        assert (cfg.shots, cfg.shots_per_class) == ((int(k[1:]), True) if k != "all" else (None, False)), r.key
        assert cfg.test_file.endswith("semeval2010_task8/test.jsonl") and cfg.test_limit is None  # the full test split
        task = task_from_config(cfg)
        assert task.primary_metric() == "semeval_f1" and task.entity_markers == "tags"
        assert len(task.verbalizer.labels) == 19
        assert type(task.verbalizer).__name__ == ("RuleVerbalizer" if r.key.startswith("ptr") else "Verbalizer")
    assert sorted({r.config.seed for r in runs if r.config.method != "manual"}) == [0, 1, 2]
