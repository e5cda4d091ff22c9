import json
import os

import pytest
import torch

from conftest import make_backbone
from softprompt.encoding import encode
from softprompt.errors import ConfigError, PromptFileError
from softprompt.serving import MultiPromptModel, TaskConflictError, UnknownTaskError

from . import CHOICE, MULTI_WORD, SAME_WORDS, SENTIMENT, YES_NO, prompts_dir, save_prompt, soft_prompt

TEXTS = ["great fun", "i hate this film", "a dull and boring plot", "smart and funny", "worst movie ever",
         "the acting was really good", "ugly"]


@pytest.fixture(scope="module")
def backbone():
    return make_backbone("causal")


@pytest.fixture
def mixed(backbone):
    """An engine with five prompts over four word sets (one shared by two tasks)."""
    mpm = MultiPromptModel(backbone)
    for seed, task in enumerate([SENTIMENT, SAME_WORDS, YES_NO, MULTI_WORD, CHOICE]):
        mpm.add(task.name, soft_prompt(backbone, task, length=3 + seed, seed=seed))
    return mpm


def _inputs():
    choice = {"premise": "the movie was long", "question": "effect", "choices": ["i was bored", "i had fun"]}
    items = [(t, name) for t in TEXTS for name in ("sentiment", "sentiment2", "yesno", "multi")]
    return items + [(choice, "choice"), (dict(choice, choices=["we watch it", "they hate it", "so sad"]), "choice")]


def test_mixed_task_batch_equals_single_task_predict(backbone, mixed, monkeypatch):
    """One mixed batch gives each input exactly what predict gives it alone with its own prompt."""
    items = _inputs()
    calls = []
    real = backbone.word_scores
    monkeypatch.setattr(backbone, "word_scores", lambda p, b, *a: calls.append(len(b)) or real(p, b, *a))
    import functools

    import softprompt.serving.engine as engine_module

    # no cut for padding here: the point is that different tasks share one forward pass
    monkeypatch.setattr(engine_module, "length_chunks",
                        functools.partial(engine_module.length_chunks, max_padding=float("inf")))
    got = mixed.classify([x for x, _ in items], [t for _, t in items])
    # word sets: {negative, positive} (two tasks), {no, yes}, multi-word, and the choice rows
    assert sorted(calls) == sorted([2 * len(TEXTS), len(TEXTS), len(TEXTS), 2])
    monkeypatch.undo()
    for (x, name), result in zip(items, got):
        [want] = mixed.model(name).classify([x])  # the prompt alone, as `softprompt predict` scores it
        assert result.task == name and result.label == want.label
        assert result.scores.keys() == want.scores.keys()
        for label, p in want.scores.items():
            assert result.scores[label] == pytest.approx(p, abs=1e-5)


@pytest.mark.parametrize("family", ["seq2seq", "masked"])
def test_mixed_batches_on_encoder_families_equal_predict(family):
    bb = make_backbone(family)
    mpm = MultiPromptModel(bb)
    for seed, task in enumerate([SENTIMENT, YES_NO, MULTI_WORD]):
        mpm.add(task.name, soft_prompt(bb, task, length=3, seed=seed))
    items = [(t, name) for t in TEXTS[:3] for name in ("sentiment", "yesno", "multi")]
    got = mpm.classify([x for x, _ in items], [t for _, t in items])
    for (x, name), result in zip(items, got):
        [want] = mpm.model(name).classify([x])
        assert result.label == want.label
        assert result.scores == pytest.approx(want.scores, abs=1e-5)


def test_mixed_generation_equals_single_prompt_generation(backbone, mixed):
    items = [(t, name) for t in TEXTS[:3] for name in ("sentiment", "yesno", "multi")]
    got = mixed.generate([x for x, _ in items], [t for _, t in items], max_new_tokens=3)
    for (x, name), g in zip(items, got):
        pm = mixed.model(name)
        batch = encode(backbone, pm.task, [{"text": x}], prompt_length=pm.prompt_length, with_labels=False)
        assert g.text == backbone.generate(pm.conditioning, batch, 3)[0]


def test_prompt_keys_and_values_are_computed_once_per_prompt(backbone, mixed):
    mixed.classify(TEXTS, ["sentiment"] * len(TEXTS))
    before = backbone.cache_info()
    mixed.classify(TEXTS, ["sentiment"] * len(TEXTS))
    after = backbone.cache_info()
    assert after["misses"] == before["misses"] and after["hits"] == before["hits"] + 1  # one lookup, served from the cache


def test_ensemble_reports_the_majority_and_each_members_vote(backbone, tmp_path):
    mpm = MultiPromptModel.from_dir(backbone, prompts_dir(tmp_path, backbone))
    assert {t["name"]: t["kind"] for t in mpm.tasks()} == {"a": "prompt-tuning", "b": "prompt-tuning",
                                                            "c": "prompt-tuning", "yesno": "prompt-tuning",
                                                            "trio": "ensemble"}
    got = mpm.classify(TEXTS + ["great fun"], ["trio"] * len(TEXTS) + ["yesno"])
    singles = {m: mpm.classify(TEXTS, [m] * len(TEXTS)) for m in "abc"}
    for i, result in enumerate(got[:-1]):
        assert result.votes == {m: singles[m][i].label for m in "abc"}
        counts = {label: list(result.votes.values()).count(label) for label in result.votes.values()}
        assert counts[result.label] == max(counts.values())
        for label, p in result.scores.items():
            assert p == pytest.approx(sum(singles[m][i].scores[label] for m in "abc") / 3, abs=1e-5)
    assert got[-1].votes is None and got[-1].task == "yesno"


def test_from_dir_refuses_another_models_prompt_and_loads_the_rest(backbone, tmp_path, caplog):
    save_prompt(tmp_path, "good", backbone, SENTIMENT)
    save_prompt(tmp_path, "alien", backbone, SENTIMENT, fingerprint="0123456789abcdef")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "prompt.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "notes").mkdir()  # no prompt inside: ignored
    (tmp_path / "pickled").mkdir()  # only safetensors are read: a pickle is never loaded
    torch.save({"prompt": torch.zeros(2, backbone.dim)}, tmp_path / "pickled" / "prompt.pt")
    with caplog.at_level("WARNING"):
        mpm = MultiPromptModel.from_dir(backbone, tmp_path)
    assert [t["name"] for t in mpm.tasks()] == ["good"]
    assert "fingerprint" in mpm.refused["alien"] and "alien" in caplog.text
    assert "corrupt" in mpm.refused["broken"]
    assert "pickled" not in mpm.refused


def test_a_run_folder_given_as_the_prompts_dir_is_served_with_a_warning(backbone, tmp_path, caplog):
    """--prompts runs/rt serves best and last as two tasks; the log says so and how to name runs."""
    save_prompt(tmp_path, "best", backbone, SENTIMENT)
    save_prompt(tmp_path, "last", backbone, SENTIMENT, seed=1)
    with caplog.at_level("WARNING"):
        MultiPromptModel.from_dir(backbone, tmp_path)
    assert "training run" not in caplog.text  # a folder of prompts named best and last: nothing to say
    (tmp_path / "results.json").write_text("{}")
    with caplog.at_level("WARNING"):
        mpm = MultiPromptModel.from_dir(backbone, tmp_path)
    assert [t["name"] for t in mpm.tasks()] == ["best", "last"]
    assert "is one training run's folder" in caplog.text and "best/ as NAME/" in caplog.text


def test_names_and_paths_must_stay_inside_the_prompts_dir(backbone, tmp_path):
    root = tmp_path / "prompts"
    save_prompt(root, "ok", backbone, SENTIMENT)
    outside = save_prompt(tmp_path, "outside", backbone, SENTIMENT)
    os.symlink(outside, root / "link")
    mpm = MultiPromptModel.from_dir(backbone, root)
    assert "link" in mpm.refused and "outside" in mpm.refused["link"]
    for bad in ("../outside", str(outside), "link"):
        with pytest.raises(ConfigError):
            mpm.add("x", bad)
    for name in ("a/b", "..", "", "has space", "é"):
        with pytest.raises(ConfigError, match="invalid name"):
            mpm.add(name, "ok")
    with pytest.raises(PromptFileError):
        mpm.add("x", "missing")
    mpm.add("again.v2", "ok")
    assert [t["name"] for t in mpm.tasks()] == ["again.v2", "ok"]


def test_add_remove_and_conflicts(backbone, tmp_path):
    mpm = MultiPromptModel.from_dir(backbone, prompts_dir(tmp_path, backbone))
    with pytest.raises(TaskConflictError):
        mpm.add("a", "b")
    mpm.add("a", "b", replace=True)
    assert mpm.classify(["great fun"], ["a"])[0].scores == mpm.classify(["great fun"], ["b"])[0].scores
    with pytest.raises(TaskConflictError, match="trio"):
        mpm.remove("a")
    with pytest.raises(ConfigError, match="same labels"):
        mpm.add_ensemble("mixed", ["a", "yesno"])
    mpm.remove("trio")
    mpm.remove("a")
    with pytest.raises(UnknownTaskError):
        mpm.classify(["great fun"], ["a"])
    with pytest.raises(UnknownTaskError):
        mpm.remove("a")


def test_overlong_inputs_are_truncated_and_counted(backbone, mixed):
    long = " ".join(["boring"] * 400)
    got = mixed.classify([long, "great fun"], ["sentiment", "sentiment"])
    assert [g.truncated for g in got] == [True, False]


def test_bad_inputs_are_refused_before_batching(mixed):
    with pytest.raises(UnknownTaskError):
        mixed.check(["x"], "nope")
    with pytest.raises(Exception, match="premise"):
        mixed.check(["just a text"], "choice")
    with pytest.raises(ConfigError, match="one task per input"):
        mixed.classify(["a", "b"], ["sentiment"])


def test_ensembles_yaml_and_bad_members(backbone, tmp_path):
    prompts_dir(tmp_path, backbone)
    (tmp_path / "ensembles.json").unlink()
    (tmp_path / "ensembles.yaml").write_text("pair: [a, b]\nghost: [a, zzz]\n")
    mpm = MultiPromptModel.from_dir(backbone, tmp_path)
    assert [t["members"] for t in mpm.tasks() if t["kind"] == "ensemble"] == [["a", "b"]]
    assert "zzz" in mpm.refused["ghost"]
    assert json.loads(json.dumps(mpm.tasks()))  # plain data
    assert torch.is_tensor(mpm.model("a").conditioning.input_vectors)


def test_length_chunks_bound_padding_and_batch_size():
    from types import SimpleNamespace

    from softprompt.serving.engine import length_chunks

    lengths = [5, 40, 6, 7, 41, 8, 9, 10, 11, 12, 39, 38, 60, 6, 7, 8, 9, 10]
    units = [SimpleNamespace(batch=SimpleNamespace(context=[[0] * n])) for n in lengths]
    chunks = length_chunks(units, batch_size=6, max_padding=1.25, min_rows=2)
    flat = [len(u.batch.context[0]) for c in chunks for u in c]
    assert flat == sorted(lengths)  # every unit once, shortest first
    for c in chunks:
        ns = [len(u.batch.context[0]) for u in c]
        assert len(c) <= 6
        assert len(c) < 2 or len(c) * max(ns) <= 1.25 * sum(ns) or len(c) == 2
    assert len(length_chunks(units, batch_size=64, max_padding=100.0)) == 1  # no bound: one pass


def test_tasks_whose_templates_answer_at_other_slots_are_batched_apart(backbone):
    """Two tasks with the same words, one answered at the end of its text and one at a slot inside
    it, served in one call: each row gets what it gets alone."""
    from softprompt.tasks.task import Task
    from softprompt.tasks.template import Template

    inside = Task("inside", Template("{text} , it was {mask} , so ."), SENTIMENT.verbalizer)
    both = MultiPromptModel(backbone)
    both.add("sentiment", soft_prompt(backbone, SENTIMENT, seed=1))
    both.add("inside", soft_prompt(backbone, inside, seed=2))
    mixed = both.classify(TEXTS * 2, ["sentiment"] * len(TEXTS) + ["inside"] * len(TEXTS))
    for name in ("sentiment", "inside"):
        alone = both.classify(TEXTS, [name] * len(TEXTS))
        got = [c for c in mixed if c.task == name]
        assert [c.label for c in got] == [c.label for c in alone]
        for c, a in zip(got, alone):
            assert c.scores == pytest.approx(a.scores, abs=1e-5)


def test_concat_refuses_batches_of_other_answer_slots(backbone):
    from softprompt.serving.engine import concat
    from softprompt.tasks.task import Task
    from softprompt.tasks.template import Template

    two = Task("two", Template("{text} {mask:a} and {mask:b}"), SENTIMENT.verbalizer)
    one = encode(backbone, SENTIMENT, [{"text": "fine"}], with_labels=False)
    other = encode(backbone, two, [{"text": "fine"}], with_labels=False, slot="b")
    assert len(concat([one, one], shared_words=True)) == 2
    with pytest.raises(ValueError, match="different answer slots"):
        concat([one, other], shared_words=True)
