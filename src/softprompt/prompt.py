"""The soft prompt: a ``[length, dim]`` parameter, its initialisers, and its file format.

A saved prompt is a directory holding ``prompt.safetensors`` (one tensor, ``prompt``,
``[length, dim]`` float32) whose header also carries the metadata as JSON, and
``softprompt.json``, the same metadata pretty-printed for people. The safetensors file is the
authority and is written atomically, so a reader never sees half a prompt.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from .artifacts import (ARTIFACT_FILES, FORMAT_VERSION, META_FILE, PROMPT_FILE, check_fingerprint, check_prompt_length,
                        load_artifact)
from .atomic import atomic_dir
from .errors import ConfigError, ModelMismatchError, PromptFileError


@dataclass
class InitContext:
    """What an initialiser may use besides the shape.

    ``embed(ids [n]) -> [n, dim]`` runs the model's input-embedding *module* (so models that
    scale embeddings, like Gemma's ``* sqrt(dim)``, give vectors in the space the model really
    consumes); ``common_ids`` are the candidate "common" token ids (see :func:`common_token_ids`);
    ``tokenize(text) -> list[int]`` has no special tokens; ``label_words`` holds each label's
    verbalisations, already prefixed as they follow the template; ``label_word_ids``, when given,
    holds their token ids as scored after the template, ``[label][word][tokens]``, and wins.
    """

    embed: Callable[[torch.Tensor], torch.Tensor]
    tokenize: Callable[[str], list[int]]
    common_ids: torch.Tensor
    label_words: Sequence[Sequence[str]] = ()
    generator: torch.Generator | None = None
    model_fingerprint: str | None = None
    label_word_ids: Sequence[Sequence[Sequence[int]]] = ()


Initializer = Callable[[tuple[int, int], InitContext, str], torch.Tensor]
"""An initialiser: ``init(shape, ctx, arg) -> tensor [length, dim]``; ``arg`` is what follows
the ``name:`` in the init spec (a text, a path), empty when none."""

INITIALIZERS: dict[str, Initializer] = {}


def register_initializer(name: str) -> Callable[[Initializer], Initializer]:
    """Register an initialiser under ``name`` (usable as ``--init name`` or ``name:arg``)."""

    def deco(fn: Initializer) -> Initializer:
        INITIALIZERS[name] = fn
        return fn

    return deco


@register_initializer("random-uniform")
def init_random_uniform(shape, ctx: InitContext, arg: str = "") -> torch.Tensor:
    """Uniform in [-0.5, 0.5] (the paper's random initialisation)."""
    return torch.rand(shape, generator=ctx.generator) - 0.5


@register_initializer("vocab")
def init_vocab(shape, ctx: InitContext, arg: str = "") -> torch.Tensor:
    """Embeddings of tokens sampled (without replacement where possible) among the common ids.

    "Common" for a BPE or SentencePiece vocabulary means a low id: BPE numbers merged tokens in
    the order the merges were learnt, most frequent pair first, and SentencePiece sorts pieces by
    score; so the first 5,000 ids that are neither special tokens nor blank are taken as the
    5,000 most common tokens (see :func:`common_token_ids`).
    """
    ids = ctx.common_ids
    replace = shape[0] > len(ids)
    if replace:
        pick = torch.randint(len(ids), (shape[0],), generator=ctx.generator)
    else:
        pick = torch.randperm(len(ids), generator=ctx.generator)[: shape[0]]
    return ctx.embed(ids[pick]).float()


@register_initializer("class-labels")
def init_class_labels(shape, ctx: InitContext, arg: str = "") -> torch.Tensor:
    """Each label's embedding fills one position (the paper's class-label initialisation).

    A label's vector is the mean of its sub-token embeddings (the ids scored after the template,
    ``ctx.label_word_ids``, when given), averaged over its words; labels
    take the first positions, the remaining positions are sampled vocabulary (as in the paper).
    With more labels than positions the first ``length`` labels are used.
    """
    if not ctx.label_words and not ctx.label_word_ids:
        raise ConfigError("init 'class-labels' needs a task with a fixed label set; use --init vocab instead")
    out = init_vocab(shape, ctx)
    per_label = ctx.label_word_ids or [[ctx.tokenize(word) for word in words] for words in ctx.label_words]
    for i, words in enumerate(per_label[: shape[0]]):
        vecs = []
        for ids in words:
            if ids:
                vecs.append(ctx.embed(torch.tensor(ids)).float().mean(0))
        if vecs:
            out[i] = torch.stack(vecs).mean(0)
    return out


@register_initializer("text")
def init_text(shape, ctx: InitContext, arg: str = "") -> torch.Tensor:
    """Embeddings of a text's tokens, repeated to fill the length or cut to it: ``text:"..."``."""
    text = arg.strip().strip('"').strip("'")
    ids = ctx.tokenize(text)
    if not ids:
        raise ConfigError('init "text:" needs a non-empty text, e.g. --init \'text:Classify the sentiment\'')
    reps = math.ceil(shape[0] / len(ids))
    return ctx.embed(torch.tensor((ids * reps)[: shape[0]])).float()


@register_initializer("file")
def init_file(shape, ctx: InitContext, arg: str = "") -> torch.Tensor:
    """A saved prompt (``file:PATH``); its shape must match and its model must be this one."""
    loaded = SoftPrompt.load(arg)  # refuses a prompt of no vectors: the advice below names a length >= 1
    if loaded.dim != shape[1]:
        raise ModelMismatchError(
            f"the prompt in {arg} has dimension {loaded.dim} (trained for model "
            f"{loaded.metadata.get('model_id', 'unknown')!r}) but this model's embeddings have {shape[1]}: "
            "pass --model with the model it was trained for, or use another file"
        )
    if loaded.length != shape[0]:
        raise PromptFileError(
            f"the prompt in {arg} has shape {tuple(loaded.weight.shape)} but {tuple(shape)} was asked for: "
            f"pass --prompt-length {loaded.length} or use another file"
        )
    fp = loaded.metadata.get("model_fingerprint")
    if ctx.model_fingerprint and fp and fp != ctx.model_fingerprint:
        raise ModelMismatchError(
            f"the prompt in {arg} was trained for model {loaded.metadata.get('model_id')!r} "
            f"(fingerprint {fp}), not for this model (fingerprint {ctx.model_fingerprint})"
        )
    return loaded.weight.detach().clone().float()


# PPT's pre-trained prompts are ordinary saved prompts: ``pretrained:PATH`` reads like ``file:``.
INITIALIZERS["pretrained"] = init_file


def parse_init(spec: str) -> tuple[str, str]:
    """Split ``"name"`` or ``"name:arg"`` into ``(name, arg)``, checking the name is known."""
    name, _, arg = spec.partition(":")
    name = name.strip()
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown init {spec!r}; choose one of {sorted(INITIALIZERS)} (file: and text: take an argument)")
    if name in ("file", "pretrained", "text") and not arg:
        raise ConfigError(f"init {name!r} needs an argument: --init {name}:{'PATH' if name != 'text' else 'some words'}")
    return name, arg


def common_token_ids(tokenizer, n: int = 5000) -> torch.Tensor:
    """The ``n`` lowest token ids that are not special and do not decode to blank text.

    For BPE (GPT-2, Llama, SmolLM) and SentencePiece (T5) vocabularies a lower id means a more
    frequent token (merge order, or score order). WordPiece vocabularies (BERT) are only roughly
    frequency-sorted after their reserved ids; the same rule is used there.
    """
    special = set(tokenizer.all_special_ids or [])
    out: list[int] = []
    vocab_size = len(tokenizer)
    for i in range(vocab_size):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if not text.strip() or text.startswith("[unused") or text.startswith("<"):
            continue
        out.append(i)
        if len(out) >= n:
            break
    if not out:
        raise ConfigError("the tokenizer has no ordinary tokens to initialise from; use --init random-uniform")
    return torch.tensor(out)


class SoftPrompt(nn.Module):
    """A learnable prompt ``weight: [length, dim]`` with the metadata it was made with.

    ``forward()`` returns the unbatched ``[length, dim]`` tensor; where it goes in the input is the
    backbone's business, not the prompt's.
    """

    def __init__(self, weight: torch.Tensor, metadata: dict[str, Any] | None = None):
        super().__init__()
        if weight.dim() != 2:
            raise PromptFileError(f"a prompt must be 2-D [length, dim], got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self) -> torch.Tensor:
        """Return the prompt, ``[length, dim]``."""
        return self.weight

    @classmethod
    def initialize(cls, length: int, dim: int, init: str, ctx: InitContext) -> "SoftPrompt":
        """Make a prompt of ``[length, dim]`` with the initialiser named by ``init`` (``name[:arg]``)."""
        if length < 1:
            raise ConfigError(f"prompt length must be at least 1, got {length}")
        name, arg = parse_init(init)
        weight = INITIALIZERS[name]((length, dim), ctx, arg)
        if tuple(weight.shape) != (length, dim):
            raise PromptFileError(f"initialiser {name!r} returned shape {tuple(weight.shape)}, expected {(length, dim)}")
        return cls(weight, {"init": init})

    # ----------------------------------------------------------------------------- files
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None,
             tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """Save to directory ``path`` atomically; ``metadata`` is merged into :attr:`metadata`;
        ``tensors`` (e.g. ``verbalizer.*``) are saved beside ``prompt``."""
        path = Path(path)
        meta = {**self.metadata, **(metadata or {})}
        meta.update(format_version=FORMAT_VERSION, length=self.length, dim=self.dim)
        self.metadata = meta
        text = json.dumps(meta, indent=2, default=str)
        with atomic_dir(path, owned=ARTIFACT_FILES) as tmp:
            (tmp / META_FILE).write_text(text + "\n", encoding="utf-8")
            save_file({**(tensors or {}), "prompt": self.weight.detach().float().contiguous().cpu()}, str(tmp / PROMPT_FILE),
                      metadata={"softprompt": text})
        return path

    @classmethod
    def load(cls, path: str | Path, root: str | Path | None = None, backbone=None) -> "SoftPrompt":
        """Load a saved prompt from its directory (or its ``prompt.safetensors`` file), validated
        by :func:`~softprompt.artifacts.load_artifact` (``root`` and ``backbone`` as there).

        Raises :class:`~softprompt.errors.ArtifactError` (a :class:`PromptFileError`) for a missing,
        truncated, malformed or wrongly shaped file, or one outside ``root``.
        """
        art = load_artifact(path, root=root, backbone=backbone)
        if "prompt" not in art.tensors:
            raise PromptFileError(f"{path} holds a {art.kind} output, not a prompt; use `softprompt eval --prompt "
                                  f"{path}` or PromptedModel.from_saved, which load any method")
        return cls(art.tensors["prompt"], art.metadata)

    def check_model(self, model_id: str, fingerprint: str, dim: int, room: int | None = None) -> None:
        """Refuse a model other than the one this prompt was trained for (:class:`ModelMismatchError`),
        or whose context, ``room`` tokens after its special tokens, the prompt would fill
        (:class:`~softprompt.errors.ArtifactError`)."""
        if room is not None:
            check_prompt_length(self.length, room, f"prompt trained for {self.metadata.get('model_id', 'unknown')!r}")
        trained_for = self.metadata.get("model_id", "an unknown model")
        if self.dim != dim:
            raise ModelMismatchError(
                f"this prompt has dimension {self.dim} (trained for model {trained_for!r}) but {model_id!r} has "
                f"embedding dimension {dim}; use --model {trained_for!r} or train a prompt for {model_id!r}"
            )
        check_fingerprint(self.metadata, model_id, fingerprint, "this prompt")
