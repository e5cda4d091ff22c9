"""The default learning rate follows the model (prompt tuning); what is given always wins."""

import pytest

from conftest import make_backbone
from softprompt.config import TrainConfig
from softprompt.methods import embedding_rms, with_method_defaults


def test_embedding_rms_is_the_scale_of_the_embedding_entries():
    bb = make_backbone("causal")  # LlamaConfig(initializer_range=0.2): entries drawn with std 0.2
    assert embedding_rms(bb) == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("family, lr", [("causal", 0.02), ("seq2seq", 0.1), ("masked", 0.002)])
def test_prompt_tuning_lr_is_a_tenth_of_the_models_embedding_rms(family, lr):
    """Tiny Llama entries have RMS 0.2, T5's 1.0, BERT's 0.02 (their initialisers' std)."""
    cfg = with_method_defaults(TrainConfig(), make_backbone(family))
    assert (cfg.optimizer, cfg.lr) == ("adafactor", lr)


def test_smollm2_default_lr_is_0_014():
    from softprompt.modeling import cache_dir, load_model

    if not (cache_dir() / "models" / "smollm2-135m" / "model.safetensors").exists():
        pytest.skip("SmolLM2 not converted in the cache")
    bb = load_model("smollm2-135m")
    assert round(embedding_rms(bb), 3) == 0.136
    assert with_method_defaults(TrainConfig(), bb).lr == 0.014


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
    assert (cfg.optimizer, cfg.lr) == ("adam", 0.02)


@pytest.mark.parametrize("method, lr", [("full-tuning", 1e-5), ("prefix-tuning", 1e-3)])
def test_other_methods_keep_their_own_fixed_defaults(method, lr):
    for backbone in (None, make_backbone("causal")):
        cfg = with_method_defaults(TrainConfig(method=method), backbone)
        assert (cfg.optimizer, cfg.lr) == ("adam", lr)
