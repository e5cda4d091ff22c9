"""Prefix tuning (Li & Liang, 2021): learned keys and values in every layer of a decoder-only model.

What is learnt: a table ``E [length, dim]`` (initialised as a prompt-tuning prompt is) and an MLP
``dim -> hidden -> tanh -> kv_size``, where ``kv_size`` is the sum over layers of the key's and
the value's ``kv_heads * head_dim``. The prefix's keys/values are ``base + MLP(E)``: ``base`` holds
the keys/values the frozen model computes for the initial ``E`` read as a prompt (the "real
words" activations Li & Liang start from), and the MLP's last layer starts at zero, so training
starts exactly at that prompt. The MLP is only a reparameterisation that steadies training:
evaluation and :meth:`~softprompt.methods.base.Method.inference_conditioning` use the materialised
keys/values alone.
With ``reparameterize=False`` the keys/values are one plain parameter, starting at ``base``.

The prefix enters the model as the conditioning's ``layer_kv`` (a
:class:`~softprompt.conditioning.LayerKV`): ``[BOS] prefix text``, the lead special token (if the
tokenizer adds one) keeping its own keys/values at position 0, the text's positions continuing
after the prefix. A backbone that does not take layer keys/values (encoder-decoder and masked LMs:
their prompt positions are recomputed from the text in every layer) is refused with
:class:`ConfigError` at construction (:attr:`PrefixTuning.needs`).

``save`` writes a directory through :func:`~softprompt.artifacts.save_artifact`:
``prefix.safetensors`` with the materialised keys/values (for inference; ``key.{layer}`` and
``value.{layer}``, ``[kv_heads, length, head_dim]``) and what resuming needs (``base``, and
``embedding`` and ``mlp.*`` or ``kv``), plus the JSON metadata (``softprompt.json``) that prompts have.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifacts import PREFIX_FILE, load_artifact
from ..conditioning import Conditioning, LayerKV
from ..conditioning import PrefixKV  # noqa: F401  (the old name, still importable from here)
from ..errors import ConfigError, ModelMismatchError, PromptFileError
from .base import Method, MethodConfig, register_method
from .prompt_tuning import PromptTuning, PromptTuningConfig

@dataclass
class PrefixTuningConfig(MethodConfig):
    prompt_length: int = field(default=100, metadata={"help": "prefix positions in every layer"})
    init: str = field(default="class-labels", metadata={"help": "initialiser of E, as for prompt tuning"})
    hidden: int = field(default=512, metadata={"help": "width of the reparameterising MLP (Li & Liang: 512)"})
    reparameterize: bool = field(default=True, metadata={"help": "learn keys/values through the MLP (else directly)"})

    def __post_init__(self) -> None:
        for name in ("prompt_length", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"prefix-tuning: {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.reparameterize, bool):
            raise ConfigError(f"prefix-tuning: reparameterize must be true or false, got {self.reparameterize!r}")


def flatten_kv(prefix: LayerKV) -> torch.Tensor:
    """``prefix`` as one ``[length, kv_size]`` table: per layer its key then its value, each
    ``[length, kv_heads * head_dim]``."""
    return torch.cat([t[0].transpose(0, 1).flatten(1) for kv in prefix.layers for t in kv], 1)


def unflatten_kv(flat: torch.Tensor, shapes: list) -> LayerKV:
    """Inverse of :func:`flatten_kv`: ``flat [length, kv_size]`` -> :class:`LayerKV` of views;
    ``shapes`` as :attr:`LayerKV.layer_shapes`."""
    heads_dims = [hd for layer in shapes for hd in layer]  # key, value, key, value, ...
    chunks = flat.split([h * d for h, d in heads_dims], 1)
    tensors = [c.unflatten(1, hd).transpose(0, 1)[None] for c, hd in zip(chunks, heads_dims)]
    return LayerKV(tuple(zip(tensors[::2], tensors[1::2])))


def load_prefix(path: str | Path, root: str | Path | None = None) -> tuple[LayerKV, dict[str, Any], dict[str, torch.Tensor]]:
    """Read a saved prefix directory: ``(materialised LayerKV, metadata, all saved tensors)``.

    Validated by :func:`~softprompt.artifacts.load_artifact` (every tensor floating point and
    finite; ``root`` as there). Raises :class:`PromptFileError` for a missing, corrupt or foreign file.
    """
    path = Path(path)
    file = path / PREFIX_FILE if path.is_dir() else path
    art = load_artifact(file, root=root) if file.exists() or file.is_symlink() else None
    if art is None or art.kind != "prefix-tuning":
        raise PromptFileError(f"no saved prefix at {path}: expected {PREFIX_FILE} there (train one with "
                              f"`softprompt train --method prefix-tuning --out DIR`, then pass DIR/best)")
    return prefix_of(art), art.metadata, art.tensors


def prefix_of(art) -> LayerKV:
    """The materialised prefix of a loaded prefix-tuning :class:`~softprompt.artifacts.Artifact`
    (its ``key.N``/``value.N`` tensors, ``[kv_heads, length, head_dim]``); :class:`PromptFileError` if incomplete."""
    tensors, file = art.tensors, art.path / PREFIX_FILE
    n_layers = sum(1 for name in tensors if name.startswith("key."))
    if n_layers == 0 or any(f"{kind}.{i}" not in tensors for i in range(n_layers) for kind in ("key", "value")):
        raise PromptFileError(f"{file} holds no complete key.N/value.N tensors (found {sorted(tensors)}); "
                              "is it a prefix-tuning file?")
    flat = [n for n in tensors if n.startswith(("key.", "value.")) and tensors[n].dim() != 3]
    if flat:
        raise PromptFileError(f"{file}: {flat[0]} has shape {tuple(tensors[flat[0]].shape)}, expected "
                              "[kv_heads, length, head_dim]; the file is damaged")
    return LayerKV(tuple((tensors[f"key.{i}"][None], tensors[f"value.{i}"][None]) for i in range(n_layers)))


@register_method("prefix-tuning", PrefixTuningConfig)
class PrefixTuning(Method):
    """Learned keys/values in every layer of a frozen decoder-only model (see the module docstring)."""

    needs = frozenset({"layer_kv"})
    default_optimizer = "adam"
    default_lr = 1e-3  # docs/methods.md: the MLP's output moves keys/values directly

    def __init__(self, config: PrefixTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        init = PromptTuning(PromptTuningConfig(config.prompt_length, config.init), backbone, task,
                            seed).conditioning().input_vectors
        with torch.no_grad():
            base = backbone.prompt_kv(init.detach())
        self.layer_shapes = base.layer_shapes
        self.register_buffer("base", flatten_kv(base).float())
        if config.reparameterize:
            kv_size = self.base.shape[1]
            gen = torch.Generator().manual_seed(seed)
            self.embedding = nn.Parameter(init.detach().clone().float())
            self.mlp = nn.Sequential(nn.Linear(backbone.dim, config.hidden), nn.Tanh(),
                                     nn.Linear(config.hidden, kv_size))
            with torch.no_grad():
                bound = 1 / math.sqrt(backbone.dim)  # nn.Linear's own default range, drawn from the seed
                self.mlp[0].weight.uniform_(-bound, bound, generator=gen)
                self.mlp[0].bias.uniform_(-bound, bound, generator=gen)
                self.mlp[2].weight.zero_()
                self.mlp[2].bias.zero_()
        else:
            self.kv = nn.Parameter(self.base.clone())

    @property
    def prompt_length(self) -> int:
        return self.config.prompt_length

    def kv_table(self) -> torch.Tensor:
        """The prefix's keys/values as one table ``[length, kv_size]`` (see :func:`flatten_kv`)."""
        if self.config.reparameterize:
            return self.base + self.mlp(self.embedding)
        return self.kv

    def conditioning(self) -> Conditioning:
        """The prefix as layer keys/values: per layer ``(key, value)``, each ``[1, kv_heads, length,
        head_dim]``; differentiable, or (under ``torch.no_grad``) materialised and contiguous."""
        prefix = unflatten_kv(self.kv_table(), self.layer_shapes)
        if not torch.is_grad_enabled():  # for inference: no MLP left, contiguous tensors
            prefix = LayerKV(tuple((k.contiguous(), v.contiguous()) for k, v in prefix.layers))
        return Conditioning(layer_kv=prefix)

    # ----------------------------------------------------------------------------- files
    def state_tensors(self):
        """The materialised keys/values (for inference; ``key.{layer}`` and ``value.{layer}``,
        ``[kv_heads, length, head_dim]``) and what resuming needs (``base``, and ``embedding`` and
        ``mlp.*`` or ``kv``), float32, with the verbalizer's tensors."""
        tensors = {"base": self.base}
        for i, (k, v) in enumerate(self.inference_conditioning().layer_kv.layers):
            tensors[f"key.{i}"], tensors[f"value.{i}"] = k[0], v[0]
        if self.config.reparameterize:
            tensors["embedding"] = self.embedding
            tensors.update({f"mlp.{name}": t for name, t in self.mlp.state_dict().items()})
        else:
            tensors["kv"] = self.kv
        return {**super().state_tensors(), **{name: t.detach().float() for name, t in tensors.items()}}

    def state_metadata(self):
        return {"length": self.prompt_length, "layers": len(self.layer_shapes), "layer_shapes": self.layer_shapes,
                "reparameterize": self.config.reparameterize, "hidden": self.config.hidden}

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved length, ``hidden`` and ``reparameterize``; ``random-uniform`` init (the saved
        keys/values replace it)."""
        saved = {"prompt_length": metadata.get("length"), "hidden": metadata.get("hidden"),
                 "reparameterize": metadata.get("reparameterize")}
        return dataclasses.replace(config, init="random-uniform", **{k: v for k, v in saved.items() if v is not None})

    def restore_from(self, artifact):
        """Restore what :meth:`save` wrote, exactly; refuses a prefix of another shape or model."""
        super().restore_from(artifact)
        path, meta, tensors = artifact.path, artifact.metadata, artifact.tensors
        prefix = prefix_of(artifact)
        got, want = prefix.layer_shapes, self.layer_shapes
        if got != want:
            raise ModelMismatchError(
                f"the prefix in {path} has {len(got)} layers of ((kv_heads, head_dim) of key, of value) "
                f"{sorted(set(got))} (model {meta.get('model_id', 'unknown')!r}), but this model has "
                f"{len(want)} layers of {sorted(set(want))}: use the model the prefix was trained for"
            )
        if prefix.length != self.prompt_length:
            raise PromptFileError(f"the prefix in {path} has {prefix.length} positions but {self.prompt_length} "
                                  f"were asked for: pass --prompt-length {prefix.length}")
        needed = ["base"] + (["embedding"] + [f"mlp.{n}" for n in self.mlp.state_dict()]
                             if self.config.reparameterize else ["kv"])
        missing = [n for n in needed if n not in tensors]
        if missing:
            raise PromptFileError(
                f"the prefix in {path} lacks {missing} (saved with reparameterize={meta.get('reparameterize')}, "
                f"hidden={meta.get('hidden')}): load it with the options it was trained with")
        with torch.no_grad():
            try:
                self.base.copy_(tensors["base"])
                if self.config.reparameterize:
                    self.embedding.copy_(tensors["embedding"])
                    self.mlp.load_state_dict({n: tensors[f"mlp.{n}"] for n in self.mlp.state_dict()})
                else:
                    self.kv.copy_(tensors["kv"])
            except RuntimeError as exc:  # a shape mismatch (another --method-options hidden=...)
                raise PromptFileError(f"the prefix in {path} does not fit these options (saved with "
                                      f"hidden={meta.get('hidden')}): {exc}") from exc
