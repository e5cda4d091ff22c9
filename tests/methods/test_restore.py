"""One restore path for every method's output (issue 15, item 4): :func:`softprompt.methods.loading.restore`,
on the tiny models of all three families, and the writer it reads (:func:`softprompt.artifacts.save_artifact`)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from conftest import make_backbone
from softprompt.api import PromptedModel
from softprompt.artifacts import TENSOR_FILE, load_artifact, save_artifact
from softprompt.errors import ConfigError, DataError, ModelMismatchError
from softprompt.methods import InContext, InContextConfig, PrefixTuning, PrefixTuningConfig, PromptTuning
from softprompt.methods import PromptTuningConfig
from softprompt.methods.loading import restore
from softprompt.prompt import SoftPrompt

from serving import SENTIMENT

ROWS = [{"text": t, "label": label} for t, label in
        [("great fun", "positive"), ("awful", "negative"), ("a joy", "positive"), ("dull stuff", "negative")]]


def _meta(bb, **training):
    return {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "model_family": bb.family,
            "task": SENTIMENT.to_dict(), "training": training}


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_a_saved_prompt_restores_as_prompt_tuning_and_scores_as_the_prompt_itself(family, tmp_path):
    bb = make_backbone(family)
    prompt = SoftPrompt(torch.randn(4, bb.dim, generator=torch.Generator().manual_seed(0)), _meta(bb))
    prompt.save(tmp_path / "p")
    method = restore(tmp_path / "p", bb)  # the task saved with it
    assert isinstance(method, PromptTuning) and method.prompt_length == 4
    assert torch.equal(method.inference_conditioning().input_vectors, prompt.weight.detach())
    assert method.metadata["method"] == "prompt-tuning"
    texts = ["great fun", "i hate this film"]
    got = PromptedModel(bb, None, SENTIMENT, method=method).classify(texts)
    want = PromptedModel(bb, prompt, SENTIMENT).classify(texts)
    assert [g.scores for g in got] == [w.scores for w in want]


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_in_context_demonstrations_restore_without_training_rows(family, tmp_path):
    bb = make_backbone(family)
    icl = InContext(InContextConfig(shots=2), bb, SENTIMENT, seed=3, train_rows=ROWS)
    icl.save(tmp_path / "icl", _meta(bb, method="in-context", method_options="shots=2"))
    back = restore(tmp_path / "icl", bb, SENTIMENT)
    assert isinstance(back, InContext) and back.demonstrations == icl.demonstrations
    assert torch.equal(back.inference_conditioning().input_vectors, icl.inference_conditioning().input_vectors)


def test_a_prefix_restores_exactly_with_the_options_it_recorded_and_is_refused_off_decoders(tmp_path):
    bb = make_backbone("causal")
    prefix = PrefixTuning(PrefixTuningConfig(prompt_length=3, init="random-uniform", hidden=8), bb, SENTIMENT, seed=1)
    with torch.no_grad():
        prefix.mlp[2].bias.add_(0.1)  # as if trained: the keys/values move off the initial prompt's
    prefix.save(tmp_path / "p", _meta(bb))  # no training options: hidden=8 comes from its own record
    back = restore(tmp_path / "p", bb, SENTIMENT)
    assert back.config.hidden == 8 and back.prompt_length == 3
    for (k1, v1), (k2, v2) in zip(prefix.inference_conditioning().layer_kv.layers, back.inference_conditioning().layer_kv.layers):
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    seq2seq = make_backbone("seq2seq")
    meta = json.loads((tmp_path / "p" / "softprompt.json").read_text())
    meta.update(model_id=seq2seq.model_id, model_fingerprint=seq2seq.fingerprint)
    save_artifact(tmp_path / "q", "prefix-tuning", load_artifact(tmp_path / "p").tensors, meta)
    with pytest.raises(ConfigError, match="--method prompt-tuning"):
        restore(tmp_path / "q", seq2seq, SENTIMENT)


def test_another_model_and_a_missing_task_are_refused_before_anything_is_built(tmp_path):
    bb, other = make_backbone("causal"), make_backbone("masked")
    SoftPrompt(torch.randn(4, bb.dim), {**_meta(bb), "model_fingerprint": "0" * 16}).save(tmp_path / "fp")
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        restore(tmp_path / "fp", bb)
    SoftPrompt(torch.randn(4, bb.dim + 1), _meta(bb)).save(tmp_path / "wide")
    with pytest.raises(ModelMismatchError, match=f"has dimension {bb.dim + 1} .* the model's embeddings have {other.dim}: pass --model"):
        restore(tmp_path / "wide", other)
    SoftPrompt(torch.randn(4, bb.dim), {"model_id": bb.model_id}).save(tmp_path / "notask")
    with pytest.raises(DataError, match="no task in its metadata"):
        restore(tmp_path / "notask", bb)
    assert restore(tmp_path / "notask", bb, SENTIMENT).prompt_length == 4  # a task given in code is enough


def test_a_verbalizers_parameters_are_saved_and_restored_with_the_method(tmp_path):
    bb = make_backbone("causal")
    method = PromptTuning(PromptTuningConfig(prompt_length=2, init="random-uniform"), bb, SENTIMENT)
    method.verbalizer = torch.nn.Linear(bb.dim, 2)  # stands for a trainable verbalizer (an nn.Module)
    method.save(tmp_path / "p", _meta(bb))
    with safe_open(str(tmp_path / "p" / "prompt.safetensors"), framework="pt") as fh:
        assert sorted(fh.keys()) == ["prompt", "verbalizer.bias", "verbalizer.weight"]
    fresh = PromptTuning(PromptTuningConfig(prompt_length=2, init="random-uniform"), bb, SENTIMENT, seed=5)
    fresh.verbalizer = torch.nn.Linear(bb.dim, 2)
    fresh.load_state(tmp_path / "p")
    assert torch.equal(fresh.verbalizer.weight, method.verbalizer.weight)
    assert torch.equal(fresh.soft_prompt.weight, method.soft_prompt.weight)


def test_a_method_without_a_file_of_its_own_writes_its_tensors_to_the_generic_file(tmp_path):
    bb = make_backbone("causal")
    icl = InContext(InContextConfig(shots=2), bb, SENTIMENT, train_rows=ROWS)
    icl.verbalizer = torch.nn.Linear(3, 2)
    icl.save(tmp_path / "icl", _meta(bb))
    assert sorted(p.name for p in (tmp_path / "icl").iterdir()) == ["softprompt.json", TENSOR_FILE]
    art = load_artifact(tmp_path / "icl")
    assert art.kind == "in-context" and sorted(art.tensors) == ["verbalizer.bias", "verbalizer.weight"]
    other = InContext.empty(InContextConfig(), bb, SENTIMENT)
    other.verbalizer = torch.nn.Linear(3, 2)
    other.load_state(tmp_path / "icl")
    assert torch.equal(other.verbalizer.bias, icl.verbalizer.bias) and other.token_ids == icl.token_ids


def test_save_artifact_writes_a_tied_weight_once_and_stamps_the_model_check(tmp_path):
    bb = make_backbone("causal")
    shared = torch.randn(3, 4)
    meta = save_artifact(tmp_path / "a", "some-later-method", {"a": shared, "b": shared, "c": shared[1:]}, {"x": 1},
                         backbone=bb)
    assert meta["method"] == "some-later-method" and meta["model_fingerprint"] == bb.fingerprint
    assert meta["model_family"] == "causal" and meta["model_id"] == bb.model_id
    art = load_artifact(tmp_path / "a")
    assert sorted(art.tensors) == ["a", "c"] and torch.equal(art.tensors["c"], shared[1:])
    assert json.loads((tmp_path / "a" / "softprompt.json").read_text()) == art.metadata
