"""Export to and import from PEFT's prompt-tuning format.

PEFT stores a prompt-tuning adapter as ``adapter_config.json`` (``peft_type: PROMPT_TUNING``) and
``adapter_model.safetensors`` holding ``prompt_embeddings: [num_virtual_tokens, token_dim]``.

Where the prompt goes: PEFT's ``PeftModelForCausalLM`` concatenates the virtual tokens before
*every* input token, a BOS included; softprompt puts the prompt after the tokenizer's lead special
tokens (``backbone.lead_ids``, e.g. a BOS). For tokenizers that add nothing in front (SmolLM2,
GPT-2, ...) the two are the same computation, which the tests check logit for logit. For a
tokenizer that adds a BOS they are not, so both directions refuse by default:

* ``export-peft --fold-bos`` writes ``[BOS embedding; prompt]`` (length ``P + 1``). Under PEFT that
  is softprompt's exact computation *if the input is tokenized without special tokens*
  (``add_special_tokens=False``); with the usual BOS-adding call it is not.
* ``import-peft`` strips such a leading BOS vector again (a faithful round trip); an adapter
  trained under PEFT (prompt before BOS) is refused unless ``--allow-bos-mismatch`` is given.

Only decoder-only models are exported: PEFT's encoder-decoder prompt tuning also prompts the decoder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .artifacts import SAVED_OUTPUT_FILES
from .outdir import RUN_FILES
from .atomic import atomic_path, atomic_write_text
from .errors import ConfigError, ModelMismatchError, PromptFileError
from .prompt import SoftPrompt
from .value_types import fits

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def peft_base_path(model_id: str | None) -> str | None:
    """What PEFT's loader (``AutoPeftModel*.from_pretrained``) accepts for ``model_id``: the
    safetensors cache directory of an embedded model (``smollm2-135m`` -> ``~/.cache/softprompt/
    models/smollm2-135m``), the absolute path of a local model directory, a hub id unchanged."""
    if not model_id:
        return None
    from .modeling import resolve_model_path

    path = Path(resolve_model_path(model_id))
    return str(path.resolve()) if path.exists() else model_id


def softprompt_model_id(base: str | None) -> str | None:
    """The inverse of :func:`peft_base_path` for the embedded models: their cache directory maps
    back to the name softprompt knows them by (so prompts keep their model id); others unchanged."""
    if not base:
        return base
    from .modeling import _EMBEDDED, cache_dir

    for name in _EMBEDDED:
        if Path(base).resolve() == (cache_dir() / "models" / name).resolve():
            return name
    return base


def _lead_embeddings(backbone) -> torch.Tensor:
    """``[len(lead_ids), dim]``: the embeddings of what the tokenizer puts before every input."""
    with torch.no_grad():
        return backbone.embed(torch.tensor(backbone.lead_ids, dtype=torch.long)).float().cpu()


def _lead_text(backbone) -> str:
    return " ".join(backbone.tokenizer.convert_ids_to_tokens(backbone.lead_ids))


def export_peft(prompt: SoftPrompt, out: str | Path, backbone, fold_bos: bool = False) -> Path:
    """Write ``prompt`` (``[P, dim]``) as a PEFT prompt-tuning adapter directory ``out``.

    ``backbone`` is the model the prompt was trained for (checked by fingerprint); its head and
    layer counts go into the config and ``base_model_name_or_path`` is :func:`peft_base_path` of
    its id. If its tokenizer adds a BOS, PEFT would put the prompt before it: refused with a
    :class:`ConfigError` unless ``fold_bos``, which writes ``[BOS embedding; prompt]``
    (``[P + 1, dim]``), exact under PEFT for inputs tokenized with ``add_special_tokens=False``.
    Raises :class:`ConfigError` for a non-causal prompt, :class:`ModelMismatchError` for another model.
    """
    family = prompt.metadata.get("model_family", backbone.family)
    if not backbone.peft_exportable or family != backbone.family:
        raise ConfigError(f"only decoder-only prompts export to PEFT; this one is for a {family} model")
    prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
    weight = prompt.weight.detach().float().cpu()
    if backbone.lead_ids:
        if not fold_bos:
            raise ConfigError(
                f"{backbone.model_id!r} puts {_lead_text(backbone)!r} before every input. softprompt trained the prompt "
                f"after it, but PEFT puts its virtual tokens before every input token, so the adapter would score "
                f"differently under PEFT. Pass --fold-bos to export [{_lead_text(backbone)}; prompt] as "
                f"{prompt.length + len(backbone.lead_ids)} virtual tokens, exact under PEFT when inputs are tokenized "
                f"with add_special_tokens=False")
        weight = torch.cat([_lead_embeddings(backbone), weight], 0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = backbone.model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": weight.shape[0],
        "token_dim": weight.shape[1],
        "num_transformer_submodules": 1,
        "num_attention_heads": getattr(text_cfg, "num_attention_heads", None),
        "num_layers": getattr(text_cfg, "num_hidden_layers", None),
        "base_model_name_or_path": peft_base_path(prompt.metadata.get("model_id") or backbone.model_id),
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "inference_mode": True,
        "revision": None,
        "auto_mapping": None,
        "modules_to_save": None,
    }
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file({"prompt_embeddings": weight.contiguous()}, str(tmp))
    atomic_write_text(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out


def _read_config(file: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict, its fields checked (:class:`PromptFileError` otherwise)."""
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"{file} is not valid JSON, truncated or corrupt ({exc}); re-export the adapter "
                              "with PEFT's save_pretrained") from exc
    if not isinstance(config, dict):
        raise PromptFileError(f"{file} holds a JSON {type(config).__name__}, not an object of adapter settings; "
                              "re-export the adapter with PEFT's save_pretrained")
    for key in ("num_virtual_tokens", "token_dim"):
        value = config.get(key)
        if not fits(value, int) or value < 1:
            raise PromptFileError(f"{file}: {key} must be a positive integer, got {value!r}")
    subs = config.get("num_transformer_submodules", 1)
    if not fits(subs, int | None):
        raise PromptFileError(f"{file}: num_transformer_submodules must be an integer, got {subs!r}")
    for key in ("peft_type", "base_model_name_or_path"):
        if not fits(config.get(key), str | None):
            raise PromptFileError(f"{file}: {key} must be a string, got {config[key]!r}")
    return config


def import_peft(path: str | Path) -> SoftPrompt:
    """Read a PEFT prompt-tuning adapter directory as a :class:`SoftPrompt` (``[num_virtual_tokens,
    token_dim]``, no task attached). Raises :class:`PromptFileError` for a missing, malformed or
    non-prompt-tuning adapter."""
    path = Path(path)
    cfg_file, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_file.exists() or not weights.exists():
        raise PromptFileError(f"{path} is not a PEFT adapter directory: need {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = _read_config(cfg_file)
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{path} holds a {config.get('peft_type')} adapter; only PROMPT_TUNING can be imported")
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise PromptFileError(f"{path} prompts {config['num_transformer_submodules']} submodules (encoder-decoder); "
                              "only single-stack (decoder-only) prompts can be imported")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise PromptFileError(f"{weights} is truncated or corrupt ({exc})") from exc
    key = next((k for k in tensors if k.endswith("prompt_embeddings")), None)
    if key is None:
        raise PromptFileError(f"{weights} holds no prompt_embeddings tensor (found {sorted(tensors)})")
    weight = tensors[key]
    want = (config["num_virtual_tokens"], config["token_dim"])
    if tuple(weight.shape) != want:
        raise PromptFileError(f"{weights}: {key} has shape {tuple(weight.shape)}, config says {want}; re-export "
                              "the adapter with PEFT's save_pretrained")
    if not weight.dtype.is_floating_point:
        raise PromptFileError(f"{weights}: {key} is {weight.dtype}, not floating point; re-export the adapter "
                              "with PEFT's save_pretrained")
    weight = weight.to(torch.float32)  # half precision widens exactly; a float64 beyond float32 becomes inf
    if not bool(torch.isfinite(weight).all()):
        bad = int((~torch.isfinite(weight)).sum())
        raise PromptFileError(f"{weights}: {key} holds {bad} NaN or infinite value(s) (as float32); the training "
                              "diverged or the file is damaged: export another checkpoint of the adapter")
    return SoftPrompt(weight, {"model_id": softprompt_model_id(config.get("base_model_name_or_path")),
                                                "model_family": "causal", "init": f"peft:{path}"})


def place_after_lead(prompt: SoftPrompt, backbone, allow_mismatch: bool = False) -> SoftPrompt:
    """``prompt`` as read from PEFT, made to score under softprompt as it did under PEFT.

    For a tokenizer with no lead specials it is returned unchanged. If the prompt starts with the
    lead specials' embeddings (an ``export-peft --fold-bos`` adapter), they are dropped: the same
    computation. Otherwise PEFT put this prompt before the BOS and softprompt would put it after:
    :class:`PromptFileError` unless ``allow_mismatch``."""
    n = len(backbone.lead_ids)
    if not n:
        return prompt
    lead = _lead_embeddings(backbone)
    if prompt.length > n and torch.equal(prompt.weight[:n].detach().float().cpu(), lead):
        return SoftPrompt(prompt.weight[n:].detach().clone(), dict(prompt.metadata))
    if allow_mismatch:
        return prompt
    raise PromptFileError(
        f"{backbone.model_id!r} puts {_lead_text(backbone)!r} before every input: PEFT trained this adapter with its "
        f"virtual tokens before it, softprompt would place them after it, so scores would differ. Pass "
        f"--allow-bos-mismatch to import it anyway")


@contextlib.contextmanager
def _writing(out: str | Path, overwrite: bool, names: tuple[str, ...], what: str,
             foreign: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold ``--out`` for a command that writes ``names`` there, checked as ``train`` checks its
    folder (:func:`~softprompt.outdir.check_out_dir`, :func:`~softprompt.outdir.out_lock`: writable,
    not in use by a running run); a folder already holding any of ``names`` (``what``, a saved
    output) is refused unless ``overwrite``, one holding any of ``foreign`` (another kind of
    output, which the files would be mixed into) always. Raises :class:`ConfigError`."""
    from .outdir import check_out_dir, out_lock

    out = Path(out)

    def refuse_a_saved_output() -> None:
        present = lambda listed: [n for n in listed if (out / n).exists() or (out / n).is_symlink()]  # noqa: E731
        mixed = present(foreign)
        if mixed:
            raise ConfigError(f"--out {out} holds a softprompt run or saved output ({', '.join(mixed)}): {what} "
                              "goes in a folder of its own; choose another --out")
        found = present(names)
        if found and not overwrite:
            raise ConfigError(f"--out {out} already holds {what} ({', '.join(found)}): pass --overwrite to "
                              "replace it, or choose another --out")

    refuse_a_saved_output()  # before the checks write anything there
    check_out_dir(out)
    with out_lock(out):
        refuse_a_saved_output()  # again under the lock: another command may have saved there since
        yield out


def export_command(cfg) -> int:
    """``softprompt export-peft``, given its :class:`~softprompt.config.ExportPeftConfig`; returns 0."""
    from .modeling import load_model

    prompt = SoftPrompt.load(cfg.prompt)
    model_id = cfg.model or prompt.metadata.get("model_id")
    if not model_id:
        raise ConfigError(f"{cfg.prompt} does not name its model: pass --model")
    with _writing(cfg.out, cfg.overwrite, (ADAPTER_CONFIG, ADAPTER_WEIGHTS), "a PEFT adapter",
                  foreign=(*SAVED_OUTPUT_FILES, *sorted(RUN_FILES))):
        backbone = load_model(model_id)
        out = export_peft(prompt, cfg.out, backbone, fold_bos=cfg.fold_bos)
    print(f"wrote PEFT adapter to {out}")
    if backbone.lead_ids:
        print(f"note: its first virtual token is {_lead_text(backbone)!r}: tokenize inputs with "
              "add_special_tokens=False under PEFT")
    return 0


def import_command(cfg) -> int:
    """``softprompt import-peft``, given its :class:`~softprompt.config.ImportPeftConfig`; returns 0."""
    from .modeling import load_model

    prompt = import_peft(cfg.adapter)
    meta = {}
    if cfg.task:
        from .tasks.registry import get_task

        meta["task"] = get_task(cfg.task).to_dict()
    model_id = cfg.model or prompt.metadata.get("model_id")
    if not model_id:
        raise ConfigError(f"{cfg.adapter} names no base model (base_model_name_or_path): pass --model")
    with _writing(cfg.out, cfg.overwrite, SAVED_OUTPUT_FILES, "a saved softprompt output"):
        backbone = load_model(model_id)
        if prompt.dim != backbone.dim:
            raise ModelMismatchError(
                f"{Path(cfg.adapter) / ADAPTER_WEIGHTS}: prompt_embeddings has dimension {prompt.dim} but "
                f"{backbone.model_id!r} has embedding dimension {backbone.dim}: pass --model with the adapter's base model")
        prompt = place_after_lead(prompt, backbone, cfg.allow_bos_mismatch)
        prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
        meta.update(model_id=backbone.model_id, model_fingerprint=backbone.fingerprint, model_family=backbone.family)
        prompt.save(cfg.out, meta)
    print(f"wrote softprompt prompt to {cfg.out}")
    if not cfg.task:
        print("note: no task attached, and `softprompt predict`/`eval` need one: re-import with --task NAME")
    return 0
