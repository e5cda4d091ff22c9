"""Export to and import from PEFT's prompt-tuning format.

PEFT stores a prompt-tuning adapter as ``adapter_config.json`` (``peft_type: PROMPT_TUNING``) and
``adapter_model.safetensors`` holding ``prompt_embeddings: [num_virtual_tokens, token_dim]``.
PEFT puts the virtual tokens before *every* input token of a decoder-only model; softprompt puts
them after a leading BOS if the tokenizer adds one. For tokenizers that add no BOS (SmolLM2,
GPT-2, ...) the two are the same computation, which the tests check logit for logit. Only
decoder-only models are exported: PEFT's encoder-decoder prompt tuning also prompts the decoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_text
from .errors import ConfigError, PromptFileError
from .prompt import SoftPrompt

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def export_peft(prompt: SoftPrompt, out: str | Path, model_config: Any | None = None) -> Path:
    """Write ``prompt`` as a PEFT prompt-tuning adapter directory ``out``."""
    family = prompt.metadata.get("model_family", "causal")
    if family != "causal":
        raise ConfigError(f"only decoder-only prompts export to PEFT; this one is for a {family} model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_cfg = model_config.get_text_config() if model_config is not None and hasattr(model_config, "get_text_config") else model_config
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": prompt.length,
        "token_dim": prompt.dim,
        "num_transformer_submodules": 1,
        "num_attention_heads": getattr(text_cfg, "num_attention_heads", None),
        "num_layers": getattr(text_cfg, "num_hidden_layers", None),
        "base_model_name_or_path": prompt.metadata.get("model_id"),
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
        save_file({"prompt_embeddings": prompt.weight.detach().float().contiguous().cpu()}, str(tmp))
    atomic_write_text(out / ADAPTER_CONFIG, json.dumps(config, indent=2) + "\n")
    return out


def import_peft(path: str | Path) -> SoftPrompt:
    """Read a PEFT prompt-tuning adapter directory as a :class:`SoftPrompt` (no task attached)."""
    path = Path(path)
    cfg_file, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_file.exists() or not weights.exists():
        raise PromptFileError(f"{path} is not a PEFT adapter directory: need {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = json.loads(cfg_file.read_text())
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{path} holds a {config.get('peft_type')} adapter; only PROMPT_TUNING can be imported")
    if config.get("num_transformer_submodules", 1) != 1:
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
    want = (config.get("num_virtual_tokens"), config.get("token_dim"))
    if tuple(weight.shape) != tuple(want):
        raise PromptFileError(f"{weights}: prompt_embeddings has shape {tuple(weight.shape)}, config says {want}")
    return SoftPrompt(weight.to(torch.float32), {"model_id": config.get("base_model_name_or_path"),
                                                "model_family": "causal", "init": f"peft:{path}"})


def _cli_export(args) -> int:
    prompt = SoftPrompt.load(args.prompt)
    model_config = None
    model_id = prompt.metadata.get("model_id")
    if model_id:
        try:
            from transformers import AutoConfig

            from .modeling import resolve_model_path

            model_config = AutoConfig.from_pretrained(resolve_model_path(model_id))
        except Exception:  # the adapter is still usable without head/layer counts
            model_config = None
    out = export_peft(prompt, args.out, model_config)
    print(f"wrote PEFT adapter to {out}")
    return 0


def _cli_import(args) -> int:
    from .modeling import load_model

    prompt = import_peft(args.adapter)
    meta = {}
    if args.task:
        from .tasks.registry import get_task

        meta["task"] = get_task(args.task).to_dict()
    model_id = args.model or prompt.metadata.get("model_id")
    if model_id:
        backbone = load_model(model_id)
        meta.update(model_id=backbone.model_id, model_fingerprint=backbone.fingerprint, model_family=backbone.family)
    prompt.save(args.out, meta)
    print(f"wrote softprompt prompt to {args.out}")
    return 0


def add_cli(sub) -> None:
    """Add ``export-peft`` and ``import-peft`` to the CLI's subcommands."""
    p = sub.add_parser("export-peft", help="write a saved prompt as a PEFT prompt-tuning adapter")
    p.add_argument("prompt", help="saved prompt directory")
    p.add_argument("--out", required=True, help="adapter directory to write")
    p.set_defaults(handler=_cli_export)
    p = sub.add_parser("import-peft", help="read a PEFT prompt-tuning adapter as a softprompt prompt")
    p.add_argument("adapter", help="PEFT adapter directory")
    p.add_argument("--out", required=True, help="prompt directory to write")
    p.add_argument("--model", help="model the adapter is for (default: its base_model_name_or_path)")
    p.add_argument("--task", help="built-in task to attach, so predict/eval can use the prompt directly")
    p.set_defaults(handler=_cli_import)
