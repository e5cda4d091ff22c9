"""In-context demonstrations: drawn per seed, balanced, equal to writing them before the input."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, make_backbone
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods import InContext, InContextConfig
from softprompt.prompt import META_FILE
from softprompt.scoring import label_scores, predict
from softprompt.tasks.registry import get_task
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template

TASK = get_task("rotten_tomatoes")
TRAIN = [{"text": t, "label": "positive", "idx": i} for i, t in enumerate(TOY_POS)] + \
        [{"text": t, "label": "negative", "idx": 8 + i} for i, t in enumerate(TOY_NEG)]
TEST = [{"text": "a witty film", "label": "positive"}, {"text": "dull and long and really boring", "label": "negative"}]


def _icl(bb, shots=4, seed=0, rows=TRAIN, task=TASK, **kw) -> InContext:
    return InContext(InContextConfig(shots=shots, **kw), bb, task, seed=seed, train_rows=rows)


def test_demonstrations_are_deterministic_per_seed():
    bb = make_backbone("causal")
    assert _icl(bb, seed=1).demonstrations == _icl(bb, seed=1).demonstrations
    assert len({tuple(r["idx"] for r in _icl(bb, seed=s).demonstrations) for s in range(5)}) > 1


@pytest.mark.parametrize("shots", [1, 4, 5])
def test_balanced_demonstrations_alternate_labels(shots):
    bb = make_backbone("causal")
    for seed in range(4):
        counts = Counter(r["label"] for r in _icl(bb, shots=shots, seed=seed).demonstrations)
        assert sum(counts.values()) == shots and max(counts.values()) - min(counts.values(), default=0) <= 1
    skewed = TRAIN[:8] + TRAIN[8:10]  # 8 positive, 2 negative: round-robin while negatives last
    counts = Counter(r["label"] for r in _icl(bb, shots=6, rows=skewed).demonstrations)
    assert counts == {"positive": 4, "negative": 2}


def test_rendering_uses_template_and_gold_word():
    bb = make_backbone("causal")
    icl = _icl(bb, shots=2)
    for row, text in zip(icl.demonstrations, icl.texts):
        assert text == f"Review: {row['text']}\nSentiment: {row['label']}"
    assert icl.text == "".join(t + "\n\n" for t in icl.texts)
    copa = get_task("copa")
    rows = [{"premise": "it was dull", "question": "effect", "choices": ["i love it", "i hate it"],
             "label": "i hate it"}]
    assert _icl(bb, shots=1, rows=rows, task=copa).texts == ["it was dull What was the effect?\nAnswer: i hate it"]
    masked = make_backbone("masked")
    assert _icl(masked, shots=1, rows=TRAIN[:1]).texts == [f"Review: {TRAIN[0]['text']}\nSentiment: positive"]


def test_zero_shots_is_the_zero_shot_baseline():
    bb = make_backbone("causal-bos")
    icl = _icl(bb, shots=0, rows=[])
    assert icl.conditioning().kinds == frozenset() and icl.prompt_length == 0
    with torch.no_grad():
        a, _ = predict(bb, TASK, TEST, icl.inference_conditioning())
        b, _ = predict(bb, TASK, TEST, None)
    assert [p.scores for p in a] == [p.scores for p in b]


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
@pytest.mark.parametrize("balanced", [True, False])
def test_prompt_equals_writing_the_demonstrations_before_the_input(family, balanced):
    bb = make_backbone(family)
    icl = _icl(bb, shots=3, balanced=balanced)
    assert icl.conditioning().input_vectors.shape == (len(bb.tokenize(icl.text)), bb.dim)
    written = Task(name="written", template=Template(icl.text + TASK.template.text), verbalizer=TASK.verbalizer)
    with torch.no_grad():
        got = label_scores(bb, TASK, encode(bb, TASK, TEST, prompt_length=icl.prompt_length), icl.conditioning())
        want = label_scores(bb, written, encode(bb, written, TEST), None)
        assert float((got - want).abs().max()) < 1e-5
        assert icl.inference_conditioning() is icl.inference_conditioning()  # one object: the backbone caches its keys/values


def test_save_writes_the_demonstrations_and_load_state_reads_them(tmp_path):
    bb = make_backbone("causal")
    icl = _icl(bb, shots=3, seed=5)
    icl.save(tmp_path / "icl", {"task_name": "toy"})
    meta = json.loads((tmp_path / "icl" / META_FILE).read_text())
    assert meta["method"] == "in-context" and meta["task_name"] == "toy" and meta["text"] == icl.text
    assert [d["row"] for d in meta["demonstrations"]] == icl.demonstrations
    assert [d["text"] for d in meta["demonstrations"]] == icl.texts
    other = _icl(bb, shots=3, seed=6)
    other.load_state(tmp_path / "icl")
    assert other.demonstrations == icl.demonstrations and torch.equal(other.conditioning().input_vectors, icl.conditioning().input_vectors)


def test_errors_say_what_to_do():
    bb = make_backbone("causal")
    with pytest.raises(ConfigError, match="training rows"):
        _icl(bb, rows=None)
    with pytest.raises(ConfigError, match="training rows"):
        _icl(bb, rows=[])
    with pytest.raises(ConfigError, match="shots=16 or fewer"):
        _icl(bb, shots=17)
    with pytest.raises(ConfigError, match="shots"):
        InContextConfig(shots=-1)
    bb.max_length = 40
    with pytest.raises(ConfigError, match="--max-length"):
        _icl(bb, shots=6)
    assert InContextConfig(shots=None).shots == 4  # TrainConfig's unset --shots


def test_options_reach_the_config_through_train_config():
    from softprompt.config import TrainConfig
    from softprompt.training import method_config_from

    config, cls = method_config_from(TrainConfig(method="in-context", method_options='shots=2,separator="\\n"'))
    assert cls is InContext and config == InContextConfig(shots=2, balanced=True, separator="\n")
    config, _ = method_config_from(TrainConfig(method="in-context"))
    assert config.shots == 4


def test_a_run_evaluates_and_saves_the_demonstrations(tiny_model_dirs, toy_data, tmp_path):
    import softprompt.training as training
    from softprompt.config import TrainConfig

    cfg = TrainConfig(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]),
                      method="in-context", method_options="shots=3", progress=False, out=str(tmp_path / "run"))
    result = training.train(cfg)
    meta = json.loads((tmp_path / "run" / "best" / META_FILE).read_text())
    assert len(meta["demonstrations"]) == 3 and result.test is not None and result.zero_shot_test is not None
