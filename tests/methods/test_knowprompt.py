"""KnowPrompt (issue 18): virtual type and answer words started from knowledge, the knowledge
constraint, gradients, and the one save/restore path, on tiny causal and masked models."""

from __future__ import annotations

import pytest
import torch

from softprompt.api import PromptedModel
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods import get_method
from softprompt.methods.knowprompt import (draw_negative_spans, knowledge_loss, mean_word_embedding, relation_words,
                                           span_means)
from softprompt.methods.loading import restore
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer

from conftest import make_backbone

TEMPLATES = {"causal": "{text} . the {soft:sub} {e1} {soft:sub} and {soft:obj} {e2} {soft:obj} is",
             "masked": "{text} . the {soft:sub} {e1} {soft:sub} {mask} {soft:obj} {e2} {soft:obj} ."}
LABELS = {"Love(e1,e2)": "love", "Love(e2,e1)": "like", "Hate(e1,e2)": "hate", "Other": "one"}
ROWS = [{"text": "i love this movie", "e1": "i", "e2": "movie", "label": "Love(e1,e2)"},
        {"text": "the movie is what i really love", "e1": "movie", "e2": "i", "label": "Love(e2,e1)"},
        {"text": "they hate the long film", "e1": "they", "e2": "film", "label": "Hate(e1,e2)"},
        {"text": "one and two", "e1": "one", "e2": "two", "label": "Other"}]
TYPES = "people time story"  # words the tiny tokenizer knows


def rel_task(family: str) -> Task:
    return Task(name="rel", template=Template(TEMPLATES[family]), verbalizer=Verbalizer(LABELS),
                metrics=("semeval_f1", "accuracy"))


def knowprompt(family: str, seed: int = 0, **options):
    bb = make_backbone(family)
    task = rel_task(family)
    config_cls, cls = get_method("knowprompt")
    return bb, task, cls(config_cls(type_words=TYPES, **options), bb, task, seed=seed)


def embed_mean(bb, words):
    """The mean over words of each word's mean token embedding, computed here from the embedding table."""
    table = bb.model.get_input_embeddings().weight.detach().float()
    return torch.stack([table[torch.tensor(bb.tokenize(" " + w))].mean(0) for w in words]).mean(0)


def test_relation_words_drop_the_direction():
    assert relation_words("Cause-Effect(e2,e1)") == ["cause", "effect"]
    assert relation_words("Cause-Effect(e1,e2)") == ["cause", "effect"]
    assert relation_words("org:founded_by") == ["org", "founded", "by"]
    assert relation_words("Other") == ["other"]
    with pytest.raises(ConfigError, match="word_init=random"):
        relation_words("(e1,e2)")


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_type_and_answer_words_start_as_the_mean_of_the_named_words(family):
    bb, task, m = knowprompt(family)
    types = embed_mean(bb, TYPES.split())
    assert set(m.virtual_tokens.tables) == {"sub", "obj"}
    for table in m.virtual_tokens.tables.values():
        assert torch.allclose(table.detach(), types.expand_as(table), atol=1e-6)
    for label, row in zip(LABELS, m.answer_words.detach()):
        assert torch.allclose(row, embed_mean(bb, relation_words(label)), atol=1e-6)
    # both directions start alike; the two words of a name count once each
    assert torch.equal(m.answer_words[0], m.answer_words[1])
    assert not torch.allclose(m.answer_words[0], m.answer_words[2])
    assert torch.allclose(mean_word_embedding(bb, ["love", "hate"]), (embed_mean(bb, ["love"]) + embed_mean(bb, ["hate"])) / 2,
                          atol=1e-6)


def test_random_init_starts_from_sampled_vocabulary_rows_not_the_words():
    bb, task, m = knowprompt("causal", word_init="random")
    table = bb.model.get_input_embeddings().weight.detach().float()
    for row in m.answer_words.detach():
        assert any(torch.equal(row, t) for t in table)  # a real token's vector: the model's scale
    assert not torch.allclose(m.answer_words[0], embed_mean(bb, ["love"]))
    sub = m.virtual_tokens.tables["sub"].detach()[0]
    assert not torch.allclose(sub, embed_mean(bb, TYPES.split()))


def test_encoding_marks_the_entities_and_the_text_tokens():
    bb, task, m = knowprompt("causal")
    batch = encode(bb, task, ROWS)
    for row, ids, fields in zip(ROWS, batch.context, batch.field_pos):
        for name in ("e1", "e2", "text"):
            start, end = fields[name]
            assert ids[start:end] == bb.tokenize(row[name])
        # the entity fields are those of the template (after the sentence), not the sentence's own words
        assert fields["e1"][0] >= fields["text"][1] and fields["e2"][0] > fields["e1"][1]


def test_the_knowledge_loss_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, 4, generator=g)
    answer, gold = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    subj, obj = torch.tensor([[1, 3], [0, 1]]), torch.tensor([[4, 5], [2, 6]])
    neg_s, neg_o = torch.tensor([[0, 2], [3, 4]]), torch.tensor([[2, 7], [1, 3]])
    gamma = 0.3
    want = 0.0
    for b in range(2):
        s = sum(hidden[b, j] for j in range(subj[b, 0], subj[b, 1])) / (subj[b, 1] - subj[b, 0])
        o = sum(hidden[b, j] for j in range(obj[b, 0], obj[b, 1])) / (obj[b, 1] - obj[b, 0])
        s2 = sum(hidden[b, j] for j in range(neg_s[b, 0], neg_s[b, 1])) / (neg_s[b, 1] - neg_s[b, 0])
        o2 = sum(hidden[b, j] for j in range(neg_o[b, 0], neg_o[b, 1])) / (neg_o[b, 1] - neg_o[b, 0])
        d1 = float(((s + answer[b] - o) ** 2).sum().sqrt())
        d2 = float(((s2 + gold[b] - o2) ** 2).sum().sqrt())
        sig = lambda x: 1 / (1 + torch.exp(-torch.tensor(x)))  # noqa: E731
        want += float(-torch.log(sig(gamma - d1)) - torch.log(sig(d2 - gamma))) / 2
    got = knowledge_loss(hidden, answer, gold, subj, obj, neg_s, neg_o, gamma)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert torch.allclose(span_means(hidden, subj)[0], hidden[0, 1:3].mean(0))


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_negative_spans_come_only_from_the_row_s_text(family):
    """Rows of different lengths (padding), a soft prompt, a template around the text: every drawn
    span lies inside the row's own sentence tokens."""
    bb, task, m = knowprompt(family, prompt_vectors=3)
    batch = encode(bb, task, ROWS, prompt_length=3)
    text = torch.tensor([fp["text"] for fp in batch.field_pos])
    assert len({len(c) for c in batch.context}) > 1  # padded rows
    seen = set()
    for _ in range(300):
        spans = draw_negative_spans(text, m.generator)
        assert ((spans[:, 0] >= text[:, 0]) & (spans[:, 1] <= text[:, 1]) & (spans[:, 1] > spans[:, 0])).all()
        assert ((spans[:, 1] - spans[:, 0]) <= 5).all()
        seen.update(map(tuple, spans.tolist()))
    # every position of the longest sentence is drawn at some point
    longest = max(range(len(ROWS)), key=lambda b: text[b, 1] - text[b, 0])
    covered = {p for a, z in seen for p in range(a, z) if text[longest, 0] <= a and z <= text[longest, 1]}
    assert covered == set(range(int(text[longest, 0]), int(text[longest, 1])))


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_only_the_method_s_vectors_receive_gradients_and_the_knowledge_term_counts(family):
    bb, task, m = knowprompt(family, prompt_vectors=2, lam=1.0)
    m.train()
    batch = encode(bb, task, ROWS, prompt_length=2)
    loss = m(bb, task, batch)
    loss.backward()
    trained = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {"answer_words", "virtual_tokens.tables.sub", "virtual_tokens.tables.obj", "soft_prompt.weight"}
    assert all(p.grad is None for p in bb.model.parameters())
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.parameters() if p.requires_grad}
    # the loss is the cross-entropy plus lam x the constraint: lam = 0 gives the cross-entropy alone
    m.config.lam = 0.0
    with torch.no_grad():
        ce = m(bb, task, batch)
        scores = bb.word_scores(m.inference_conditioning(), batch)
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(scores, torch.tensor(batch.gold))), rel=1e-5)
    assert float(loss.detach()) > float(ce)


def test_two_stage_schedule_holds_the_prompt_then_trains_it():
    bb, task, m = knowprompt("causal", prompt_vectors=2, two_stage_steps=1)
    m.train()
    batch = encode(bb, task, ROWS, prompt_length=2)
    m(bb, task, batch).backward()
    assert m.soft_prompt.weight.grad is None and m.answer_words.grad is not None
    m(bb, task, batch).backward()
    assert m.soft_prompt.weight.grad is not None and m.soft_prompt.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_saved_knowprompt_reloads_bit_exact_and_predicts_the_same(family, tmp_path):
    bb, task, m = knowprompt(family, prompt_vectors=2)
    m.train()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        m(bb, task, encode(bb, task, ROWS, prompt_length=2)).backward()
        opt.step()
    m.eval()
    m.save(tmp_path / "run", {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "model_family": bb.family,
                              "task": task.to_dict(), "training": {"method": "knowprompt",
                                                                   "method_options": {"prompt_vectors": 2}}})
    back = restore(tmp_path / "run", bb)
    assert type(back) is type(m)
    for (name, p), (_, q) in zip(m.state_tensors().items(), back.state_tensors().items()):
        assert torch.equal(p, q), name
    assert not torch.equal(m.answer_words.detach(), m.init_answer_words)  # it trained; the start is kept apart
    inputs = [{k: r[k] for k in ("text", "e1", "e2")} for r in ROWS]
    got = PromptedModel(bb, None, task, method=back).classify(inputs)
    want = PromptedModel(bb, None, task, method=m).classify(inputs)
    assert [g.label for g in got] == [w.label for w in want]
    for g, w in zip(got, want):
        assert g.scores == w.scores


def test_refusals_say_what_to_do():
    config_cls, cls = get_method("knowprompt")
    with pytest.raises(ConfigError, match="decoder-only model"):
        cls(config_cls(), make_backbone("seq2seq"), rel_task("causal"))
    bb = make_backbone("causal")
    plain = Task(name="rel", template=Template("{text} . {e1} and {e2} is"), verbalizer=Verbalizer(LABELS))
    with pytest.raises(ConfigError, match=r"has no \{soft:name\} slot"):
        cls(config_cls(), bb, plain)
    no_text = Task(name="rel", template=Template("{soft:t} {e1} and {e2} is"), verbalizer=Verbalizer(LABELS))
    with pytest.raises(ConfigError, match=r"lacks \{text\}"):
        cls(config_cls(), bb, no_text)
    with pytest.raises(ConfigError, match="word_init"):
        config_cls(word_init="vocab")
    with pytest.raises(ConfigError, match="prompt_vectors"):
        config_cls(two_stage_steps=5)


def test_a_rules_verbalizer_is_refused_with_the_task_s_labels_ready_to_paste():
    from softprompt.tasks import get_task

    config_cls, cls = get_method("knowprompt")
    semeval = get_task("semeval2010_task8")  # its own verbalizer is PTR's rules
    task = Task(name="rel", template=Template("{text} {soft:t} {e1} {soft:t} and {e2} is"), verbalizer=semeval.verbalizer)
    with pytest.raises(ConfigError, match=r"--label-words 'Cause-Effect\(e1,e2\)=cause-effect-e1-e2;.*;Other=other'"):
        cls(config_cls(), make_backbone("causal"), task)


def _train_rel(tiny_model_dirs, tmp_path, out: str, options: str, **kw):
    """A KnowPrompt run through ``train`` on :data:`ROWS` (twice over) as your own files, task ``rel``."""
    import json

    from softprompt.training import train

    data = tmp_path / "rel.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    settings = dict(model=str(tiny_model_dirs["causal"]), train_file=str(data), validation_file=str(data), task="rel",
                    template=TEMPLATES["causal"], label_words=";".join(f"{k}={v}" for k, v in LABELS.items()),
                    method="knowprompt", method_options=f"type_words={TYPES},{options}", optimizer="adam", lr=0.05,
                    batch_size=4, out=str(tmp_path / out), progress=False, zero_shot_baseline=False, test_split="")
    return train(**{**settings, **kw})


def test_a_resumed_run_is_in_the_two_stage_schedule_s_stage_of_its_step(tiny_model_dirs, tmp_path, monkeypatch):
    """two_stage_steps=3, checkpoints at steps 2 and 4, killed in step 4: the resumed run holds the
    prompt in step 3 and trains it in steps 4 and 5, as the uninterrupted run does (it used to
    count from 0 again and hold the prompt to the end), and ends with the same vectors."""
    from conftest import crash_at_call
    from softprompt.artifacts import load_artifact
    from softprompt.methods.knowprompt import KnowPrompt

    options = "prompt_vectors=2,two_stage_steps=3,lam=0.5"
    _train_rel(tiny_model_dirs, tmp_path, "straight", options, max_steps=5, eval_every=2)
    restore_forward = crash_at_call(monkeypatch, KnowPrompt, 4)  # dies in step 4, after the step-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        _train_rel(tiny_model_dirs, tmp_path, "cut", options, max_steps=5, eval_every=2)
    restore_forward()
    checkpoint = load_artifact(tmp_path / "cut" / "checkpoint" / "prompt")
    assert checkpoint.metadata["step"] == 2
    bb = make_backbone("causal")
    config_cls, cls = get_method("knowprompt")
    m = cls(config_cls(type_words=TYPES, prompt_vectors=2, two_stage_steps=3), bb, rel_task("causal"))
    m.restore_from(checkpoint)
    assert m.steps == 2  # the stage goes on from the checkpoint's step
    _train_rel(tiny_model_dirs, tmp_path, "cut", options, max_steps=5, eval_every=2, resume=True)
    straight = load_artifact(tmp_path / "straight" / "last").tensors
    resumed = load_artifact(tmp_path / "cut" / "last").tensors
    assert not torch.equal(straight["prompt"], checkpoint.tensors["prompt"])  # stage two trained the prompt
    for name, tensor in straight.items():
        assert torch.equal(resumed[name], tensor), name


def test_rows_truncation_left_out_of_the_knowledge_term_are_counted_and_warned_about(tiny_model_dirs, tmp_path, caplog):
    """--max-length 11 leaves no room for any row's {text} (the fields are cut to a token each, then
    the text's head goes): every training row leaves the knowledge term. Each evaluation warns
    once with the rows since the last one and the fix; metrics.jsonl and results.json count them.
    A length that fits counts none and warns nothing."""
    import json
    import logging

    with caplog.at_level(logging.WARNING, logger="softprompt"):
        _train_rel(tiny_model_dirs, tmp_path, "short", "lam=0.5", max_steps=3, eval_every=2, max_length=11)
    warnings = [r.getMessage() for r in caplog.records if "knowledge term" in r.getMessage()]
    assert len(warnings) == 2  # one per evaluation: steps 2 and 3
    assert warnings[0].startswith("step 2: knowprompt: 8 training row(s)") and "--max-length" in warnings[0]
    assert warnings[1].startswith("step 3: knowprompt: 4 training row(s)")
    out = tmp_path / "short"
    evals = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if "split" in json.loads(ln)]
    assert [e["method_counts"] for e in evals] == [{"rows_without_knowledge_term": 8}, {"rows_without_knowledge_term": 4}]
    assert json.loads((out / "results.json").read_text())["method_counts"] == {"rows_without_knowledge_term": 12}

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        _train_rel(tiny_model_dirs, tmp_path, "fits", "lam=0.5", max_steps=2, eval_every=2, max_length=64)
    assert not [r for r in caplog.records if "knowledge term" in r.getMessage()]
    assert "method_counts" not in json.loads((tmp_path / "fits" / "results.json").read_text())
