"""docs/architecture.md's code runs as written and says what it prints (on SmolLM2-135M)."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
import types
from pathlib import Path

import pytest

from softprompt.methods import METHODS
from softprompt.modeling import cache_dir

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_template_block_prints_what_its_comments_say():
    block = next(b for b in BLOCKS if "Template(" in b and "load_model" not in b and "FeedForwardScale" not in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(DOC), "exec"), {})
    expected = [line.split("# ", 1)[1].strip() for line in block.splitlines() if line.startswith("print(")]
    assert out.getvalue().splitlines() == expected


@pytest.mark.skipif(not (cache_dir() / "models" / "smollm2-135m" / "model.safetensors").exists(),
                    reason="SmolLM2-135M not converted here")
def test_every_block_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    module = types.ModuleType("architecture_doc")  # a module, as the dataclass in the doc needs one
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            for block in BLOCKS:
                exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        METHODS.pop("ff-scale", None)  # the example method must not leak into other tests
    lines = out.getvalue().splitlines()
    assert lines[0] == f"(4, 2) torch.Size([8, {namespace['backbone'].dim}])"
    assert lines[-1] == "FeedForwardScale"
    assert namespace["method"].scale.grad.abs().sum() > 0
