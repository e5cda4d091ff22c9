"""import-peft refuses adapter weights it cannot use, and both PEFT commands treat ``--out`` as
``train`` does: checked, locked while written, an existing output kept unless ``--overwrite``
(findings 5 and 6): :mod:`softprompt.peft_compat`."""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import softprompt.peft_compat as peft_compat
from conftest import hold_out_lock, make_backbone
from softprompt.cli import main
from softprompt.errors import PromptFileError
from softprompt.outdir import LOCK_FILE
from softprompt.peft_compat import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft, import_peft
from softprompt.prompt import META_FILE, PROMPT_FILE, SoftPrompt



@pytest.fixture
def adapter(tmp_path, tiny_model_dirs) -> Path:
    """A PEFT adapter ``[3, 32]`` exported for the tiny causal model directory."""
    from softprompt.modeling import load_model

    model = str(tiny_model_dirs["causal"])
    export_peft(SoftPrompt(torch.randn(3, 32), {"model_id": model}), tmp_path / "adapter", load_model(model))
    return tmp_path / "adapter"


def _weights(adapter: Path, tensor: torch.Tensor, token_dim: int | None = None) -> None:
    save_file({"prompt_embeddings": tensor}, str(adapter / ADAPTER_WEIGHTS))
    if token_dim is not None:
        cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
        (adapter / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "token_dim": token_dim}))


# ----------------------------------------------------------------------------- finding 5: the weights
def _nan():
    w = torch.zeros(3, 32)
    w[2, 5] = float("nan")
    return w


def _float64_beyond_float32():
    w = torch.zeros(3, 32, dtype=torch.float64)
    w[0, 0] = 1e300
    return w


@pytest.mark.parametrize("make, message", [
    (_nan, f"{ADAPTER_WEIGHTS}: prompt_embeddings holds 1 NaN or infinite value(s)"),
    (lambda: torch.full((3, 32), float("inf")), f"{ADAPTER_WEIGHTS}: prompt_embeddings holds 96 NaN or infinite"),
    (_float64_beyond_float32, f"{ADAPTER_WEIGHTS}: prompt_embeddings holds 1 NaN or infinite value(s) (as float32)"),
    (lambda: torch.ones(3, 32, dtype=torch.int64), f"{ADAPTER_WEIGHTS}: prompt_embeddings is torch.int64, not floating"),
    (lambda: torch.ones(3, 32, dtype=torch.bool), f"{ADAPTER_WEIGHTS}: prompt_embeddings is torch.bool, not floating"),
    (lambda: torch.zeros(3, 16), f"{ADAPTER_WEIGHTS}: prompt_embeddings has shape (3, 16), config says (3, 32)"),
    (lambda: torch.zeros(96), f"{ADAPTER_WEIGHTS}: prompt_embeddings has shape (96,), config says (3, 32)"),
])
def test_unusable_adapter_weights_are_refused_with_exit_2_naming_the_file(adapter, tmp_path, capsys, make, message):
    _weights(adapter, make())
    with pytest.raises(PromptFileError):
        import_peft(adapter)
    assert main(["import-peft", str(adapter), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(adapter) in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()  # refused before anything was written


def test_weights_for_another_models_dimension_are_refused_naming_the_file(adapter, tmp_path, capsys):
    _weights(adapter, torch.randn(3, 16), token_dim=16)
    assert main(["import-peft", str(adapter), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{adapter / ADAPTER_WEIGHTS}: prompt_embeddings has dimension 16" in err and "--model" in err
    assert "Traceback" not in err and not (tmp_path / "p" / PROMPT_FILE).exists()


def test_half_precision_weights_are_imported_exactly(adapter):
    w = torch.randn(3, 32).to(torch.bfloat16)
    _weights(adapter, w)
    assert torch.equal(import_peft(adapter).weight, w.float())


@pytest.mark.parametrize("text, message", [("[1, 2, 3]", "JSON list, not an object"),
                                           ('{"peft_type": "PROMPT_TUNING", "num_virt', "not valid JSON")])
def test_a_malformed_adapter_config_still_exits_2(adapter, tmp_path, capsys, text, message):
    (adapter / ADAPTER_CONFIG).write_text(text)
    assert main(["import-peft", str(adapter), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{adapter / ADAPTER_CONFIG}" in err and message in err and "Traceback" not in err


# ----------------------------------------------------------------------------- finding 6: --out
@pytest.fixture
def trained(tmp_path, adapter) -> Path:
    """A saved prompt folder standing for a trained ``rt/best`` (its metadata records training)."""
    prompt = import_peft(adapter)
    folder = tmp_path / "rt" / "best"
    SoftPrompt(prompt.weight, {"model_id": prompt.metadata["model_id"], "training": {"lr": 0.3}}).save(folder)
    return folder


def test_import_keeps_a_saved_output_unless_overwrite(adapter, trained, capsys):
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    argv = ["import-peft", str(adapter), "--out", str(trained), "--task", "rotten_tomatoes"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--out {trained} already holds a saved softprompt output ({META_FILE}, {PROMPT_FILE}): pass --overwrite" in err
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before  # no lock file left, nothing replaced
    assert main(argv + ["--overwrite"]) == 0
    meta = json.loads((trained / META_FILE).read_text())
    assert "training" not in meta and meta["init"] == f"peft:{adapter}"
    assert sorted(p.name for p in trained.iterdir()) == [PROMPT_FILE, META_FILE]  # the save ended the hold


def test_export_keeps_an_adapter_unless_overwrite(adapter, trained, tmp_path, capsys):
    before = (adapter / ADAPTER_WEIGHTS).read_bytes()
    assert main(["export-peft", str(trained), "--out", str(adapter)]) == 2
    err = capsys.readouterr().err
    assert f"--out {adapter} already holds a PEFT adapter ({ADAPTER_CONFIG}, {ADAPTER_WEIGHTS}): pass --overwrite" in err
    assert (adapter / ADAPTER_WEIGHTS).read_bytes() == before
    assert main(["export-peft", str(trained), "--out", str(adapter), "--overwrite"]) == 0
    assert torch.equal(import_peft(adapter).weight, SoftPrompt.load(trained).weight)
    assert main(["export-peft", str(trained), "--out", str(tmp_path / "new")]) == 0  # a new folder needs nothing


def test_export_never_mixes_an_adapter_into_a_saved_output_or_a_run(trained, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    for out in (trained, run):
        for extra in ([], ["--overwrite"]):
            assert main(["export-peft", str(trained), "--out", str(out), *extra]) == 2
            assert "holds a softprompt run or saved output" in capsys.readouterr().err
            assert not (out / ADAPTER_WEIGHTS).exists()


@pytest.fixture
def locked(tmp_path):
    """``tmp_path/run`` held by another process, as a running ``train --out`` holds it."""
    out = tmp_path / "run"
    out.mkdir()
    holder = hold_out_lock(out)
    yield out, holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()


def test_neither_command_writes_into_a_folder_a_running_run_holds(adapter, trained, locked, capsys):
    out, pid = locked
    for argv in (["export-peft", str(trained), "--out", str(out)], ["import-peft", str(adapter), "--out", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is in use by another run (pid {pid} on" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_an_unwritable_out_is_refused(adapter, trained, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "out"
    for argv in (["export-peft", str(trained), "--out", str(bad)], ["import-peft", str(adapter), "--out", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--out {bad} is not writable" in err and "Traceback" not in err


def test_both_commands_hold_the_lock_while_writing(adapter, trained, tmp_path, monkeypatch):
    seen = []

    def probe(out):
        fd = os.open(Path(out) / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(Path(out).name)
        finally:
            os.close(fd)

    real_export, real_save = peft_compat.export_peft, SoftPrompt.save
    monkeypatch.setattr(peft_compat, "export_peft", lambda p, out, *a, **k: (probe(out), real_export(p, out, *a, **k))[1])
    monkeypatch.setattr(SoftPrompt, "save", lambda self, path, *a, **k: (probe(path), real_save(self, path, *a, **k))[1])
    assert main(["export-peft", str(trained), "--out", str(tmp_path / "exported")]) == 0
    assert main(["import-peft", str(adapter), "--out", str(tmp_path / "imported")]) == 0
    assert seen == ["exported", "imported"]
