"""experiments/relations.yaml (issue 17, item 5; issue 18, item 4) expands into its arms at k = 8, 16, 32 and
full, 3 seeds: PTR, the one-word verbalizer and KnowPrompt's three variants."""

from collections import Counter
from pathlib import Path

from softprompt.experiments.config import expand, load_experiment
from softprompt.tasks.from_config import task_from_config

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "relations.yaml"


def test_relations_experiment_expands_into_its_arms():
    runs = expand(load_experiment(CONFIG))
    arms = Counter((r.key.split("/")[0].split("_")[0], r.config.method) for r in runs)
    assert arms == {("oneword", "prompt-tuning"): 12, ("ptr", "prompt-tuning"): 12, ("ptr", "full-tuning"): 12,
                    ("oneword", "manual"): 1, ("ptr", "manual"): 1, ("knowprompt", "knowprompt"): 36}
    for r in runs:
        cfg = r.config
        k = r.key.split("/")[0].split("_")[1]
        assert (cfg.shots, cfg.shots_per_class) == ((int(k[1:]), True) if k != "all" else (None, False)), r.key
        assert cfg.test_file.endswith("semeval2010_task8/test.jsonl") and cfg.test_limit is None  # the full test split
        task = task_from_config(cfg)
        assert task.primary_metric() == "semeval_f1" and task.entity_markers == "tags"
        assert len(task.verbalizer.labels) == 19
        assert type(task.verbalizer).__name__ == ("RuleVerbalizer" if r.key.startswith("ptr") else "Verbalizer")
        if r.key.startswith("knowprompt"):  # the one-word arm's label set and budget, its template with type words
            oneword = next(o.config for o in runs if o.key == r.key.replace("knowprompt_", "oneword_", 1).split("/")[0]
                           + "/prompt-tuning/len20-vocab/" + r.key.split("/")[-1])
            assert (cfg.label_words, cfg.max_steps, cfg.batch_size, cfg.shots) == \
                (oneword.label_words, oneword.max_steps, oneword.batch_size, oneword.shots)
    assert sorted({r.config.seed for r in runs if r.config.method != "manual"}) == [0, 1, 2]


def test_knowprompt_variants_differ_only_in_the_loss_weight_and_the_initialisation():
    from softprompt.methods.configs import method_config_from

    runs = [r for r in expand(load_experiment(CONFIG)) if r.config.method == "knowprompt"]
    variants = {}
    for r in runs:
        config, _ = method_config_from(r.config)
        variants.setdefault(r.key.split("/")[2], set()).add((config.prompt_vectors, config.lam, config.word_init))
        task = task_from_config(r.config)
        assert set(task.template.virtual_tokens) == {"sub", "obj"} and len(task.verbalizer.labels) == 19
    assert variants == {"variant-knowprompt": {(20, 0.001, "knowledge")},
                        "variant-knowprompt-no-knowledge-loss": {(20, 0, "knowledge")},
                        "variant-knowprompt-random-init": {(20, 0.001, "random")}}
