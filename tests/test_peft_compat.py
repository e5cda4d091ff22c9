import json

import pytest
import torch

from conftest import make_backbone
from softprompt.encoding import EncodedBatch
from softprompt.errors import ConfigError, PromptFileError
from softprompt.peft_compat import export_peft, import_peft
from softprompt.prompt import SoftPrompt


def test_peft_loads_our_export_and_gives_the_same_logits(tmp_path):
    peft = pytest.importorskip("peft")
    bb = make_backbone("causal")
    prompt = SoftPrompt(torch.randn(5, bb.dim) * 0.3, {"model_id": "tiny", "model_family": "causal"})
    export_peft(prompt, tmp_path / "adapter", bb.model.config)
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 5

    ids = bb.tokenize("this movie was great fun . sentiment :")
    peft_model = peft.PeftModel.from_pretrained(bb.model, str(tmp_path / "adapter"))
    peft_model.eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.tensor([ids])).logits[0, -len(ids):]
    ours_bb = make_backbone("causal")  # a fresh copy: PeftModel wraps the model in place
    with torch.no_grad():
        hidden = ours_bb._forward(prompt.weight, [ids])[0]
        ours = ours_bb._head(hidden[0])
    assert torch.allclose(ours, theirs.float(), atol=1e-5, rtol=1e-4)


def test_import_round_trip(tmp_path):
    w = torch.randn(3, 8)
    export_peft(SoftPrompt(w, {"model_id": "m"}), tmp_path / "a")
    back = import_peft(tmp_path / "a")
    assert torch.equal(back.weight, w) and back.metadata["model_id"] == "m"


def test_import_refuses_what_is_not_a_prompt_tuning_adapter(tmp_path):
    with pytest.raises(PromptFileError, match="not a PEFT adapter"):
        import_peft(tmp_path)
    export_peft(SoftPrompt(torch.randn(3, 8)), tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["peft_type"] = "LORA"
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PromptFileError, match="LORA"):
        import_peft(tmp_path / "a")


def test_only_decoder_prompts_export(tmp_path):
    with pytest.raises(ConfigError, match="seq2seq"):
        export_peft(SoftPrompt(torch.randn(3, 8), {"model_family": "seq2seq"}), tmp_path / "x")
