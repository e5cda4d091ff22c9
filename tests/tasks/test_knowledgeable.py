"""The knowledgeable verbalizer in a method (issue 16 items 3-4): learned word weights move, and a
trained one saves and restores bit for bit through save_artifact / restore."""

from __future__ import annotations

import torch

from softprompt.encoding import encode
from softprompt.methods import get_method
from softprompt.methods.loading import restore
from softprompt.refinement import RefineOptions, build_knowledgeable
from softprompt.tasks import KnowledgeableVerbalizer, get_task, verbalizer_from_dict

ROWS = [{"text": t, "label": lab, "idx": i} for i, (t, lab) in enumerate(
    [("great fun", "positive"), ("awful and dull", "negative"), ("i love this movie", "positive"),
     ("worst movie ever", "negative")])]
WORDS = {"negative": ["bad", "awful", "dull", "boring"], "positive": ["good", "great", "fun", "witty"]}


def trained_method(backbone, learn=True):
    task = get_task("rotten_tomatoes")
    task.verbalizer = build_knowledgeable(backbone, task, WORDS, ROWS,
                                          RefineOptions(refine="none", support_size=4, learn_word_weights=learn))
    config_cls, method_cls = get_method("prompt-tuning")
    method = method_cls(config_cls(prompt_length=2), backbone, task)
    opt = torch.optim.Adam(method.trainable_parameters(), lr=0.1)
    method(backbone, task, encode(backbone, task, ROWS, prompt_length=2)).backward()
    opt.step()
    return method, task


def test_learned_word_weights_start_uniform_and_move_after_a_step_the_prior_stays(causal_backbone):
    method, task = trained_method(causal_backbone)
    verb = task.verbalizer
    assert any(p is verb.word_logits for p in method.trainable_parameters())
    assert not any(p is verb.log_prior for p in method.trainable_parameters())
    weights = verb.weights
    assert all(abs(sum(w) - 1) < 1e-6 for w in weights) and any(abs(w - 0.25) > 1e-4 for ws in weights for w in ws)
    fixed, _ = trained_method(causal_backbone, learn=False)
    assert not any(p is fixed.verbalizer.word_logits for p in fixed.trainable_parameters())
    assert fixed.verbalizer.weights == [[0.25] * 4, [0.25] * 4]


def test_a_trained_knowledgeable_run_restores_bit_for_bit(causal_backbone, tmp_path):
    method, task = trained_method(causal_backbone)
    out = method.save(tmp_path / "run", {"model_id": causal_backbone.model_id,
                                         "model_fingerprint": causal_backbone.fingerprint, "task": task.to_dict()})
    back = restore(out, causal_backbone)
    verb = back.verbalizer
    assert isinstance(verb, KnowledgeableVerbalizer) and verb == task.verbalizer
    assert torch.equal(verb.log_prior, task.verbalizer.log_prior) and verb.log_prior.dtype == torch.float32
    assert torch.equal(verb.word_logits, task.verbalizer.word_logits)
    assert verb.record == task.verbalizer.record and verb.record["support"]["count"] == 4
    batch = encode(causal_backbone, task, ROWS, prompt_length=2)
    from softprompt.scoring import label_scores

    with torch.no_grad():
        assert torch.equal(label_scores(causal_backbone, task, batch, method.inference_conditioning()),
                           label_scores(causal_backbone, task, batch, back.inference_conditioning()))


def test_the_saved_dict_rebuilds_the_words_and_options():
    verb = KnowledgeableVerbalizer({"a": ["x", "y"], "b": ["y"]}, shared_words=True, calibrate=False,
                                   learn_weights=True, record={"source": "f.txt"})
    again = verbalizer_from_dict(verb.to_dict())
    assert again.to_dict() == verb.to_dict() and again.shared_words and not again.calibrate and again.learn_weights
