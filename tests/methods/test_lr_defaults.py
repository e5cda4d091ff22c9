"""The default learning rate follows the model (prompt tuning); what is given always wins."""

import pytest

from conftest import make_backbone
from softprompt.config import TrainConfig
from softprompt.methods import embedding_rms, with_method_defaults


def test_embedding_rms_is_the_scale_of_the_embedding_entries():
    bb = make_backbone("causal")  # LlamaConfig(initializer_range=0.2): entries drawn with std 0.2
    assert embedding_rms(bb) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("family, lr", [("causal", 0.015), ("seq2seq", 0.075), ("masked", 0.0015)])
def test_prompt_tuning_lr_is_0_075_of_the_models_embedding_rms(family, lr):
    """Tiny Llama entries have RMS 0.2, T5's 1.0, BERT's 0.02 (their initialisers' std)."""
    cfg = with_method_defaults(TrainConfig(), make_backbone(family))
    assert (cfg.optimizer, cfg.lr) == ("adafactor", lr)


def test_smollm2_default_lr_is_0_01():
    from softprompt.modeling import cache_dir, load_model

    if not (cache_dir() / "models" / "smollm2-135m" / "model.safetensors").exists():
        pytest.skip("SmolLM2 not converted in the cache")
    bb = load_model("smollm2-135m")
    assert round(embedding_rms(bb), 3) == 0.136
    assert with_method_defaults(TrainConfig(), bb).lr == 0.01


def test_without_a_model_the_prompt_tuning_lr_stays_unresolved():
    cfg = with_method_defaults(TrainConfig())
    assert (cfg.optimizer, cfg.lr) == ("adafactor", None)


def test_a_given_lr_wins_and_the_papers_setting_is_one_option_away():
    bb = make_backbone("causal")
    assert with_method_defaults(TrainConfig(lr=0.3), bb).lr == 0.3
    assert with_method_defaults(TrainConfig(optimizer="adam", lr=0.05), bb).lr == 0.05


def test_adam_prompt_tuning_gets_the_same_model_following_lr():
    """Adam, like Adafactor without parameter scaling, moves each entry by about lr per step."""
    cfg = with_method_defaults(TrainConfig(optimizer="adam"), make_backbone("causal"))
    assert (cfg.optimizer, cfg.lr) == ("adam", 0.015)


@pytest.mark.parametrize("method, lr", [("full-tuning", 1e-5), ("prefix-tuning", 1e-3), ("hyperformer", 3e-4),
                                        ("hyperprompt", 3e-4)])
def test_other_methods_keep_their_own_fixed_defaults(method, lr):
    for backbone in (None, make_backbone("causal")):
        cfg = with_method_defaults(TrainConfig(method=method), backbone)
        assert (cfg.optimizer, cfg.lr) == ("adam", lr)


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
def test_a_default_run_on_a_tiny_model_beats_zero_shot(tmp_path, family):
    """No --lr: 30 steps at the model-following lr (0.015 here) fit the toy rows: 0.9375 against 0.5
    (causal) and 0.4375 (causal-bos) zero-shot; the paper's 0.3 reached 0.62-0.75 (docs/methods.md)."""
    import json

    from conftest import make_model, make_tokenizer, write_toy_data
    from softprompt.training import train

    tok = make_tokenizer(family)
    model_dir = tmp_path / "model"
    make_model(family, tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    result = train(TrainConfig(task="rotten_tomatoes", data_dir=str(data), model=str(model_dir), prompt_length=4,
                               batch_size=4, max_steps=30, eval_every=10, out=str(tmp_path / "run"), progress=False))
    assert result.zero_shot_test["accuracy"] <= 0.5  # the random model says one label for (almost) every row
    assert result.test["accuracy"] >= 0.8
    logged = json.loads((tmp_path / "run" / "results.json").read_text())
    assert logged["config"]["lr"] == 0.015  # the resolved default is what the run records
