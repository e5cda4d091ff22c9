"""Option values are checked, per command, before any work: a value out of range or a YAML value
of the wrong type is exit 2 with the option (and the file) named, never a traceback."""

import pytest

import softprompt.modeling
import softprompt.prompt
from conftest import write_toy_data
from softprompt.cli import main
from softprompt.config import EvalConfig, InspectConfig, PredictConfig, build
from softprompt.errors import ConfigError
from softprompt.training import train


@pytest.fixture(scope="module")
def prompt(tiny_model_dirs, tmp_path_factory):
    data = write_toy_data(tmp_path_factory.mktemp("data"), "rotten_tomatoes")
    out = tmp_path_factory.mktemp("run") / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=3,
          batch_size=4, max_steps=1, eval_every=1, out=str(out), progress=False, test_split="")
    return out / "best"


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr(softprompt.modeling, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


def _error(capsys, argv) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--task", "rotten_tomatoes", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["eval", "--task", "rotten_tomatoes", "--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
    (["eval", "--task", "rotten_tomatoes", "--limit", "0"], "--limit must be at least 1, got 0"),
    (["eval", "--task", "rotten_tomatoes", "--max-length", "-3"], "--max-length must be at least 1, got -3"),
    (["predict", "--task", "rotten_tomatoes", "--batch-size", "0", "x"], "--batch-size must be at least 1, got 0"),
    (["predict", "--task", "rotten_tomatoes", "--batch-size", "-1", "x"], "--batch-size must be at least 1, got -1"),
    (["predict", "--task", "rotten_tomatoes", "--max-length", "0", "x"], "--max-length must be at least 1, got 0"),
    (["inspect", "nosuch", "--k", "-1"], "--k must be at least 1, got -1"),
    (["inspect", "nosuch", "--k", "0"], "--k must be at least 1, got 0"),
])
def test_an_impossible_value_is_exit_2_before_the_model_loads(no_model, capsys, argv, message):
    assert message in _error(capsys, argv)


def test_inspect_k_above_the_vocabulary_is_refused_and_k_equal_to_it_runs(prompt, capsys):
    from softprompt.modeling import load_model

    vocab = load_model(str(softprompt.prompt.SoftPrompt.load(prompt).metadata["model_id"])).model.get_input_embeddings().weight.shape[0]
    err = _error(capsys, ["inspect", str(prompt), "--k", "100000000"])
    assert f"--k must be at most the model's vocabulary size ({vocab}), got 100000000" in err
    assert main(["inspect", str(prompt), "--k", str(vocab), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 3  # one line per prompt position


def test_the_configs_check_their_values_for_library_users_too():
    with pytest.raises(ConfigError, match="--batch-size must be at least 1, got 0"):
        EvalConfig(batch_size=0)
    with pytest.raises(ConfigError, match="--batch-size must be at least 1, got -1"):
        PredictConfig(batch_size=-1)
    with pytest.raises(ConfigError, match="--k must be at least 1, got 0"):
        InspectConfig(prompt="p", k=0)
    assert EvalConfig(batch_size=1, limit=None, max_length=None).batch_size == 1


# --------------------------------------------------------------------------- YAML types
@pytest.mark.parametrize("command, key, value, want", [
    ("eval", "template", "5", "a string (or null), got int 5"),
    ("train", "template", "5", "a string (or null), got int 5"),
    ("train", "label_words", "5", "a string (or null), got int 5"),
    ("predict", "label_words", "5", "a string (or null), got int 5"),
    ("eval", "field_map", "[1]", "a string (or null), got list [1]"),
    ("predict", "field_map", "[1]", "a string (or null), got list [1]"),
    ("eval", "batch_size", "true", "a whole number, got bool True"),
    ("train", "batch_size", "true", "a whole number, got bool True"),
    ("train", "lr", "'fast'", "a number (or null), got str 'fast'"),
    ("train", "resume", "1", "true or false, got int 1"),
    ("predict", "texts", "hello", "a list, got str 'hello'"),
    ("serve", "port", "'80'", "a whole number, got str '80'"),
    ("serve", "max_wait_ms", "[5]", "a number, got list [5]"),
])
def test_a_yaml_value_of_the_wrong_type_is_exit_2_naming_key_type_and_file(no_model, tmp_path, capsys, command, key, value, want):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: rotten_tomatoes\n{key}: {value}\n" if command != "serve" else f"prompts: {tmp_path}\n{key}: {value}\n")
    argv = [command, "--config", str(cfg)] + (["x"] if command == "predict" and key != "texts" else [])
    err = _error(capsys, argv)
    assert f"option {key!r} in {cfg} must be {want}" in err, err


def test_build_accepts_the_right_types_and_converts_nothing(tmp_path):
    cfg = build(EvalConfig, {"template": "{text} is", "batch_size": 4, "length_normalize": None, "max_length": 64}, "c.yaml")
    assert (cfg.template, cfg.batch_size, cfg.max_length) == ("{text} is", 4, 64)
    with pytest.raises(ConfigError, match=r"option 'batch_size' in c.yaml must be a whole number, got float 4.0"):
        build(EvalConfig, {"batch_size": 4.0}, "c.yaml")
