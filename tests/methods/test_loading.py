import json

import pytest

from softprompt.api import PromptedModel
from softprompt.cli import main
from softprompt.errors import ModelMismatchError, PromptFileError
from softprompt.training import train


@pytest.mark.parametrize("method, extra", [("prefix-tuning", {"optimizer": "adam", "lr": 0.01}),
                                           ("in-context", {"method_options": "shots=2"}),
                                           ("full-tuning", {"optimizer": "adam", "lr": 1e-3})])
def test_eval_reads_any_methods_output_and_scores_as_training_did(method, extra, tiny_model_dirs, toy_data, tmp_path,
                                                                  capsys):
    out = tmp_path / "run"
    train(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]), method=method,
          prompt_length=3, init="vocab", batch_size=4, max_steps=4, eval_every=2, out=str(out), progress=False,
          zero_shot_baseline=False, **extra)
    results = json.loads((out / "results.json").read_text())
    assert main(["eval", "--prompt", str(out / "best"), "--data-dir", str(toy_data), "--split", "test",
                 "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["accuracy"] == pytest.approx(results["test"]["accuracy"]) and got["n"] == results["test"]["n"]
    pm = PromptedModel.from_saved(out / "best")
    assert pm.method is not None and pm.method.name == method
    assert pm.classify(["great fun"])[0].label in ("positive", "negative")


def test_another_models_output_is_refused_and_a_missing_one_named(tiny_model_dirs, toy_data, tmp_path):
    from conftest import make_model, make_tokenizer

    out = tmp_path / "run"
    train(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]), method="prefix-tuning",
          prompt_length=3, init="vocab", batch_size=4, max_steps=2, eval_every=2, out=str(out), progress=False,
          optimizer="adam", lr=0.01, test_split="")
    other = tmp_path / "other"
    tok = make_tokenizer("causal")
    make_model("causal", tok, seed=7).save_pretrained(other)
    tok.save_pretrained(other)
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        PromptedModel.from_saved(out / "best", model=str(other))
    with pytest.raises(PromptFileError, match=rf"^{tmp_path / 'nothing'} does not exist: pass a run's best/"):
        PromptedModel.from_saved(tmp_path / "nothing")
