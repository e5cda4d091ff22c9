import math

import pytest
import torch

from conftest import make_backbone
from softprompt.errors import ConfigError, ModelMismatchError, PromptFileError
from softprompt.prompt import INITIALIZERS, SoftPrompt, common_token_ids, parse_init


def _ctx(bb, labels=(("positive",), ("negative",))):
    return bb.init_context(label_words=[[" " + w for w in ws] for ws in labels], seed=0)


def test_random_uniform_is_in_range(causal_backbone):
    p = SoftPrompt.initialize(50, causal_backbone.dim, "random-uniform", _ctx(causal_backbone))
    assert p.weight.shape == (50, causal_backbone.dim)
    assert p.weight.min() >= -0.5 and p.weight.max() <= 0.5
    assert p.weight.std() > 0.2  # not a constant


def test_vocab_rows_are_embeddings_of_common_tokens(causal_backbone):
    bb = causal_backbone
    ctx = _ctx(bb)
    p = SoftPrompt.initialize(10, bb.dim, "vocab", ctx)
    table = bb.embed(ctx.common_ids).detach()
    for row in p.weight.detach():
        assert (table - row).abs().sum(1).min() < 1e-6
    special = set(bb.tokenizer.all_special_ids)
    assert not special & set(ctx.common_ids.tolist())


def test_common_token_ids_takes_the_lowest_ordinary_ids(causal_backbone):
    ids = common_token_ids(causal_backbone.tokenizer, n=5).tolist()
    assert ids == sorted(ids) and len(ids) == 5
    assert all(i not in causal_backbone.tokenizer.all_special_ids for i in ids)


def test_class_labels_fill_first_positions_rest_vocab(causal_backbone):
    bb = causal_backbone
    labels = (("positive", "great fun"), ("negative",))
    p = SoftPrompt.initialize(5, bb.dim, "class-labels", _ctx(bb, labels))
    pos = torch.stack([bb.embed(torch.tensor(bb.tokenize(" positive"))).mean(0),
                       bb.embed(torch.tensor(bb.tokenize(" great fun"))).mean(0)]).mean(0)
    neg = bb.embed(torch.tensor(bb.tokenize(" negative"))).mean(0)
    assert torch.allclose(p.weight[0], pos.detach(), atol=1e-6)
    assert torch.allclose(p.weight[1], neg.detach(), atol=1e-6)
    table = bb.embed(_ctx(bb).common_ids).detach()
    assert (table - p.weight[4].detach()).abs().sum(1).min() < 1e-6


def test_class_labels_needs_labels(causal_backbone):
    with pytest.raises(ConfigError, match="class-labels"):
        SoftPrompt.initialize(5, causal_backbone.dim, "class-labels", causal_backbone.init_context())


def test_text_init_repeats_the_text(causal_backbone):
    bb = causal_backbone
    p = SoftPrompt.initialize(5, bb.dim, "text:great movie", _ctx(bb))
    ids = bb.tokenize("great movie")
    want = bb.embed(torch.tensor((ids * 3)[:5])).detach()
    assert torch.allclose(p.weight, want)


def test_file_init_and_pretrained_alias(causal_backbone, tmp_path):
    bb = causal_backbone
    src = SoftPrompt(torch.randn(4, bb.dim), {"model_fingerprint": bb.fingerprint, "model_id": bb.model_id})
    src.save(tmp_path / "p")
    for spec in (f"file:{tmp_path / 'p'}", f"pretrained:{tmp_path / 'p'}"):
        p = SoftPrompt.initialize(4, bb.dim, spec, _ctx(bb))
        assert torch.equal(p.weight, src.weight)
    with pytest.raises(PromptFileError, match="--prompt-length 4"):
        SoftPrompt.initialize(6, bb.dim, f"file:{tmp_path / 'p'}", _ctx(bb))


def test_file_init_refuses_a_prompt_of_another_model(causal_backbone, tmp_path):
    bb = causal_backbone
    SoftPrompt(torch.randn(4, bb.dim), {"model_fingerprint": "0" * 16, "model_id": "other"}).save(tmp_path / "p")
    with pytest.raises(ModelMismatchError, match="other"):
        SoftPrompt.initialize(4, bb.dim, f"file:{tmp_path / 'p'}", _ctx(bb))


def test_every_registered_initializer_is_tested():
    assert set(INITIALIZERS) == {"random-uniform", "vocab", "class-labels", "text", "file", "pretrained"}


@pytest.mark.parametrize("spec", ["nope", "file", "text:"])
def test_bad_init_specs(spec):
    with pytest.raises(ConfigError):
        parse_init(spec)


def test_scaled_embeddings_initialise_from_the_module_output():
    """Gemma multiplies embeddings by sqrt(dim): init must use what the model really consumes."""
    bb = make_backbone("gemma")
    ids = torch.tensor(bb.tokenize(" positive"))
    raw = bb.model.get_input_embeddings().weight[ids].mean(0).detach()
    p = SoftPrompt.initialize(2, bb.dim, "class-labels", _ctx(bb))
    assert torch.allclose(p.weight[0], raw * math.sqrt(bb.dim), rtol=1e-2)
    assert not torch.allclose(p.weight[0], raw, rtol=1e-2)


def test_save_load_is_bit_identical(tmp_path):
    w = torch.randn(7, 13)
    SoftPrompt(w, {"model_id": "m", "note": "x"}).save(tmp_path / "p")
    back = SoftPrompt.load(tmp_path / "p")
    assert torch.equal(back.weight, w)
    assert back.metadata["model_id"] == "m" and back.metadata["length"] == 7 and back.metadata["dim"] == 13
    assert (tmp_path / "p" / "softprompt.json").exists()
    assert [f.name for f in (tmp_path / "p").iterdir() if f.name.endswith(".tmp")] == []


def test_truncated_file_is_refused(tmp_path):
    SoftPrompt(torch.randn(7, 13)).save(tmp_path / "p")
    f = tmp_path / "p" / "prompt.safetensors"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(PromptFileError, match="truncated or corrupt"):
        SoftPrompt.load(tmp_path / "p")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(PromptFileError, match=rf"^{tmp_path / 'nothing'} does not exist"):
        SoftPrompt.load(tmp_path / "nothing")


def test_wrong_shape_is_refused(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "p").mkdir()
    save_file({"prompt": torch.randn(3, 4, 5)}, str(tmp_path / "p" / "prompt.safetensors"))
    with pytest.raises(PromptFileError, match="2-D"):
        SoftPrompt.load(tmp_path / "p")
    save_file({"prompt": torch.randn(3, 4)}, str(tmp_path / "p" / "prompt.safetensors"),
              metadata={"softprompt": '{"length": 5, "dim": 4}'})
    with pytest.raises(PromptFileError, match="metadata says"):
        SoftPrompt.load(tmp_path / "p")


def test_model_mismatch_names_both_models(causal_backbone):
    bb = causal_backbone
    p = SoftPrompt(torch.randn(3, bb.dim), {"model_id": "smollm2-135m", "model_fingerprint": "abc"})
    with pytest.raises(ModelMismatchError, match="smollm2-135m.*tiny-causal"):
        p.check_model(bb.model_id, bb.fingerprint, bb.dim)
    p2 = SoftPrompt(torch.randn(3, bb.dim + 1), {"model_id": "big"})
    with pytest.raises(ModelMismatchError, match="dimension"):
        p2.check_model(bb.model_id, bb.fingerprint, bb.dim)
    SoftPrompt(torch.randn(3, bb.dim), {"model_fingerprint": bb.fingerprint}).check_model(bb.model_id, bb.fingerprint, bb.dim)


def test_fingerprint_tells_models_apart():
    a, b, a2 = make_backbone("causal", seed=0), make_backbone("causal", seed=1), make_backbone("causal", seed=0)
    assert a.fingerprint == a2.fingerprint != b.fingerprint
