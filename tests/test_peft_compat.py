import json

import pytest
import torch

from conftest import make_backbone, make_model, make_tokenizer
from softprompt.cli import main
from softprompt.errors import ConfigError, PromptFileError
from softprompt.peft_compat import export_peft, import_peft, peft_base_path, place_after_lead
from softprompt.prompt import SoftPrompt


def _peft_logits(peft, model, adapter, ids):
    """Logits PEFT gives for ``ids`` (the text's positions only)."""
    pm = peft.PeftModel.from_pretrained(model, str(adapter))
    pm.eval()
    with torch.no_grad():
        return pm(input_ids=torch.tensor([ids])).logits[0, -len(ids):].float()


def _our_logits(bb, prompt, text):
    """Logits softprompt gives for ``text``'s tokens after ``prompt`` (lead specials placed as training does)."""
    with torch.no_grad():
        emb, mask, offset = bb.inputs([bb.tokenize(text)], prompt.weight)
        return bb.model(inputs_embeds=emb, attention_mask=mask).logits[0, offset:].float()


TEXT = "this movie was great fun . sentiment :"


def test_peft_loads_our_export_and_gives_the_same_logits(tmp_path):
    peft = pytest.importorskip("peft")
    bb = make_backbone("causal")
    prompt = SoftPrompt(torch.randn(5, bb.dim) * 0.3, {"model_id": "tiny", "model_family": "causal"})
    export_peft(prompt, tmp_path / "adapter", bb)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 5

    ids = bb.tokenize(TEXT)
    theirs = _peft_logits(peft, make_backbone("causal").model, tmp_path / "adapter", ids)
    assert torch.allclose(_our_logits(bb, prompt, TEXT), theirs, atol=1e-5, rtol=1e-4)


def test_a_bos_model_prompt_is_refused_without_fold_bos(tmp_path):
    bb = make_backbone("causal-bos")
    assert bb.lead_ids == [bb.tokenizer.bos_token_id]
    prompt = SoftPrompt(torch.randn(5, bb.dim) * 0.3, {"model_id": "tiny", "model_family": "causal"})
    with pytest.raises(ConfigError, match="--fold-bos"):
        export_peft(prompt, tmp_path / "adapter", bb)
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()


def test_fold_bos_export_scores_the_same_under_peft_and_round_trips(tmp_path):
    """softprompt scores [BOS] prompt text; PEFT prepends its virtual tokens to the input, so the
    folded adapter [BOS; prompt] with the text tokenized without BOS is the same computation."""
    peft = pytest.importorskip("peft")
    bb = make_backbone("causal-bos")
    prompt = SoftPrompt(torch.randn(5, bb.dim) * 0.3, {"model_id": "tiny", "model_family": "causal"})
    export_peft(prompt, tmp_path / "adapter", bb, fold_bos=True)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["num_virtual_tokens"] == 6

    ours = _our_logits(bb, prompt, TEXT)
    no_bos = bb.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    theirs = _peft_logits(peft, make_backbone("causal-bos").model, tmp_path / "adapter", no_bos)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    # the plain (unfolded) prompt under PEFT with the usual BOS-adding call really does differ
    export_peft(SoftPrompt(prompt.weight.clone()), tmp_path / "plain", make_backbone("causal"))
    with_bos = bb.tokenizer(TEXT)["input_ids"]
    plain = _peft_logits(peft, make_backbone("causal-bos").model, tmp_path / "plain", with_bos)[1:]
    assert not torch.allclose(ours, plain, atol=1e-3)

    back = place_after_lead(import_peft(tmp_path / "adapter"), bb)  # the BOS vector is dropped again
    assert torch.equal(back.weight, prompt.weight)


def test_an_adapter_peft_trained_before_bos_is_refused_on_import_unless_allowed(tmp_path):
    bb = make_backbone("causal-bos")
    theirs = SoftPrompt(torch.randn(4, bb.dim))
    with pytest.raises(PromptFileError, match="--allow-bos-mismatch"):
        place_after_lead(theirs, bb)
    assert place_after_lead(theirs, bb, allow_mismatch=True) is theirs
    assert place_after_lead(theirs, make_backbone("causal")) is theirs  # no BOS: nothing to move


def test_base_model_is_a_path_peft_loads_offline(tmp_path, tiny_model_dirs, monkeypatch):
    peft = pytest.importorskip("peft")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from softprompt.modeling import load_model

    model_dir = tiny_model_dirs["causal"]
    bb = load_model(str(model_dir))
    prompt = SoftPrompt(torch.randn(3, bb.dim) * 0.3, {"model_id": str(model_dir), "model_family": "causal"})
    export_peft(prompt, tmp_path / "adapter", bb)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(model_dir.resolve())
    pm = peft.AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"))  # base model from the config
    ids = bb.tokenize(TEXT)
    with torch.no_grad():
        theirs = pm(input_ids=torch.tensor([ids])).logits[0, -len(ids):].float()
    assert torch.allclose(_our_logits(bb, prompt, TEXT), theirs, atol=1e-5, rtol=1e-4)


def test_the_embedded_model_exports_as_its_cache_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    cache = tmp_path / "models" / "smollm2-135m"
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("{}")
    (cache / "model.safetensors").write_text("")
    assert peft_base_path("smollm2-135m") == str(cache.resolve())
    assert peft_base_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a hub id stays
    export_peft(SoftPrompt(torch.randn(3, 32), {"model_id": "smollm2-135m"}), tmp_path / "a", make_backbone("causal"))
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(cache.resolve())
    assert import_peft(tmp_path / "a").metadata["model_id"] == "smollm2-135m"  # and back to softprompt's name


def test_import_round_trip(tmp_path):
    w = torch.randn(3, 32)
    export_peft(SoftPrompt(w, {"model_id": "m"}), tmp_path / "a", make_backbone("causal"))
    back = import_peft(tmp_path / "a")
    assert torch.equal(back.weight, w) and back.metadata["model_id"] == "m"


def test_import_refuses_what_is_not_a_prompt_tuning_adapter(tmp_path):
    with pytest.raises(PromptFileError, match="not a PEFT adapter"):
        import_peft(tmp_path)
    export_peft(SoftPrompt(torch.randn(3, 32)), tmp_path / "a", make_backbone("causal"))
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["peft_type"] = "LORA"
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PromptFileError, match="LORA"):
        import_peft(tmp_path / "a")


@pytest.mark.parametrize("text, message", [
    ('{"peft_type": "PROMPT_TUNING", "num_virt', "not valid JSON"),
    ("[1, 2, 3]", "JSON list, not an object"),
    ('{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": "3", "token_dim": 32}', "num_virtual_tokens must be a positive integer"),
    ('{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 3, "token_dim": null}', "token_dim must be a positive integer"),
    ('{"peft_type": 7, "num_virtual_tokens": 3, "token_dim": 32}', "peft_type must be a string"),
])
def test_a_malformed_adapter_config_is_a_project_error_and_exit_2(tmp_path, capsys, text, message):
    export_peft(SoftPrompt(torch.randn(3, 32)), tmp_path / "a", make_backbone("causal"))
    (tmp_path / "a" / "adapter_config.json").write_text(text)
    with pytest.raises(PromptFileError, match=message):
        import_peft(tmp_path / "a")
    assert main(["import-peft", str(tmp_path / "a"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_import_without_task_says_how_to_attach_one_and_predict_names_task(tmp_path, tiny_model_dirs, capsys):
    from softprompt.modeling import load_model

    model_dir = str(tiny_model_dirs["causal"])
    bb = load_model(model_dir)
    export_peft(SoftPrompt(torch.randn(3, bb.dim), {"model_id": model_dir}), tmp_path / "a", bb)
    assert main(["import-peft", str(tmp_path / "a"), "--out", str(tmp_path / "p")]) == 0
    assert "--task NAME" in capsys.readouterr().out
    assert main(["predict", "great fun", "--prompt", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "import-peft" in err and "--task" in err
    assert main(["import-peft", str(tmp_path / "a"), "--out", str(tmp_path / "q"), "--task", "rotten_tomatoes"]) == 0
    assert "no task" not in capsys.readouterr().out
    assert main(["predict", "great fun", "--prompt", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("positive", "negative")


def test_only_decoder_prompts_export(tmp_path):
    with pytest.raises(ConfigError, match="seq2seq"):
        export_peft(SoftPrompt(torch.randn(3, 32), {"model_family": "seq2seq"}), tmp_path / "x", make_backbone("seq2seq"))


def test_export_cli_refuses_a_bos_model_with_exit_2(tmp_path, capsys):
    tok = make_tokenizer("causal-bos")
    d = tmp_path / "bosmodel"
    make_model("causal-bos", tok).save_pretrained(d)
    tok.save_pretrained(d)
    from softprompt.modeling import load_model

    bb = load_model(str(d))
    SoftPrompt(torch.randn(3, bb.dim), {"model_id": str(d), "model_family": "causal",
                                        "model_fingerprint": bb.fingerprint}).save(tmp_path / "p")
    assert main(["export-peft", str(tmp_path / "p"), "--out", str(tmp_path / "a")]) == 2
    assert "--fold-bos" in capsys.readouterr().err
    assert main(["export-peft", str(tmp_path / "p"), "--out", str(tmp_path / "a"), "--fold-bos"]) == 0
    assert "add_special_tokens=False" in capsys.readouterr().out
