"""In-context learning (Brown et al., 2020, the GPT-3 few-shot baseline): ``k`` solved training
examples put before each input; nothing is learnt.

Each demonstration is a training row rendered with the task's template and followed by its gold
label's word (the verbalizer's prefix, then the label's first word; for choice tasks the text of
the correct choice; for masked LMs the word fills the ``{mask}`` slot). The demonstrations are
joined with ``separator`` and one more ``separator`` ends them, so the input follows as it would
follow a demonstration. :meth:`InContext.conditioning` gives the embeddings of those tokens,
``[length, dim]``: they travel the path a soft prompt travels (for causal models: after the lead
special token, keys/values computed once per batch and cached at inference), so for a causal model
this equals writing the demonstrations' text before the input's, up to the token boundary between
them (the two texts are tokenised apart: a BPE merge across the separator cannot happen).

Length: the demonstrations are never cut. :func:`softprompt.encoding.encode` budgets their
``length`` positions like a prompt's and shortens the *input* (its longest field) to fit
``max_length``; demonstrations that leave fewer than 8 tokens for the input are refused at
construction: use fewer shots or a larger ``--max-length``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..answer_tokens import natural_text
from ..artifacts import META_FILE
from ..conditioning import Conditioning
from ..encoding import MIN_TEXT_TOKENS
from ..errors import ConfigError, PromptFileError
from .base import Method, MethodConfig, register_method

DEFAULT_SHOTS = 4


@dataclass
class InContextConfig(MethodConfig):
    shots: int | None = field(default=DEFAULT_SHOTS, metadata={
        "help": f"demonstrations before each input (None, as when --shots is unset, means {DEFAULT_SHOTS})"})
    balanced: bool = field(default=True, metadata={"help": "take the demonstrations round-robin over the labels"})
    separator: str = field(default="\n\n", metadata={"help": "text between demonstrations and before the input"})

    def __post_init__(self) -> None:
        if self.shots is None:
            self.shots = DEFAULT_SHOTS
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 0:
            raise ConfigError(f"in-context: shots must be a whole number >= 0, got {self.shots!r}")
        if not isinstance(self.balanced, bool):
            raise ConfigError(f"in-context: balanced must be true or false, got {self.balanced!r}")
        if not isinstance(self.separator, str):
            raise ConfigError(f'in-context: separator must be a text (quote it: separator="\\n\\n"), '
                              f"got {self.separator!r}")


def sample_demonstrations(task, rows: Sequence[Mapping[str, Any]] | None, k: int, balanced: bool,
                          seed: int) -> list[Mapping[str, Any]]:
    """``k`` of ``rows`` drawn with ``random.Random(seed)``, in a random order.

    ``balanced``: round-robin over the gold labels (for choice tasks: over the position of the
    correct choice), so label counts differ by at most one while every label has rows left.
    """
    if k == 0:
        return []
    if not rows:
        raise ConfigError("in-context needs training rows to draw its demonstrations from, and got none: "
                          "check the task's train split (or --train-file), or use --method manual")
    if k > len(rows):
        raise ConfigError(f"in-context: {k} shots asked for but only {len(rows)} training rows exist; "
                          f"pass --method-options shots={len(rows)} or fewer")
    rng = random.Random(seed)
    if not balanced:
        return rng.sample(list(rows), k)
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(task.verbalizer.gold_index(row), []).append(row)
    pools = [rng.sample(groups[g], len(groups[g])) for g in sorted(groups)]
    rng.shuffle(pools)  # which labels get the extra shots when k is not a multiple
    picked: list[Mapping[str, Any]] = []
    while len(picked) < k:
        for pool in pools:
            if pool and len(picked) < k:
                picked.append(pool.pop())
    rng.shuffle(picked)
    return picked


def render_demonstration(task, backbone, row: Mapping[str, Any]) -> str:
    """``row`` rendered with ``task``'s template and answered with its gold label's word."""
    word = task.verbalizer.candidates(row)[task.verbalizer.gold_index(row)][0]
    if backbone.answer_in_slot:  # the word fills the mask slot, as the model is asked to
        return task.template.with_mask().render(row, mask_token=word)
    return natural_text(task.template.render(row), task.verbalizer.prefix, word)


@register_method("in-context", InContextConfig)
class InContext(Method):
    """``k`` demonstrations from the training rows as a fixed prompt ``[length, dim]`` (nothing trained)."""

    trains = False
    needs = frozenset({"input_vectors"})

    def __init__(self, config: InContextConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self._backbone = backbone
        self.register_buffer("embeddings", None, persistent=False)
        rows = sample_demonstrations(task, train_rows, config.shots, config.balanced, seed)
        texts = [render_demonstration(task, backbone, r) for r in rows]
        text = "".join(t + config.separator for t in texts)
        self._set_demonstrations(rows, texts, text, backbone.tokenize(text) if text else [])

    @classmethod
    def empty(cls, config: InContextConfig, backbone, task) -> "InContext":
        """No demonstrations yet (no training rows needed): :meth:`load_state` brings the saved ones."""
        return cls(dataclasses.replace(config, shots=0), backbone, task)

    def _set_demonstrations(self, rows: list, texts: list[str], text: str, token_ids: list[int]) -> None:
        """Keep the demonstrations, their joined ``text`` and its ``token_ids``; embed the tokens."""
        bb = self._backbone
        self.demonstrations, self.texts, self.text, self.token_ids = list(rows), list(texts), text, list(token_ids)
        room = bb.max_length - bb.n_special - len(self.token_ids)
        if self.token_ids and room < MIN_TEXT_TOKENS:
            raise ConfigError(
                f"in-context: the {len(texts)} demonstrations take {len(self.token_ids)} tokens of the model's "
                f"{bb.max_length}-token context, leaving {room} for the input: use fewer shots "
                "(--method-options shots=N) or a larger --max-length"
            )
        with torch.no_grad():
            self.embeddings = bb.embed(torch.tensor(self.token_ids)) if self.token_ids else None

    def conditioning(self) -> Conditioning:
        """Embeddings of the demonstrations' tokens as input vectors ``[length, dim]`` (the same
        tensor every call, so the backbone's inference cache holds its keys/values); empty for 0 shots."""
        return Conditioning(input_vectors=self.embeddings)

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved ``shots``, ``balanced`` and ``separator``."""
        saved = {k: metadata.get(k) for k in ("shots", "balanced", "separator")}
        return dataclasses.replace(config, **{k: v for k, v in saved.items() if v is not None})

    def state_metadata(self):
        """The demonstrations (rows and rendered text), the joined text and its token ids, so the
        run can be reproduced (:meth:`restore_from` reads them back); no tensors are saved."""
        return {"length": len(self.token_ids), "shots": self.config.shots, "balanced": self.config.balanced,
                "separator": self.config.separator,
                "demonstrations": [{"row": dict(r), "text": t} for r, t in zip(self.demonstrations, self.texts)],
                "text": self.text, "token_ids": self.token_ids}

    def restore_from(self, artifact):
        """Use the saved demonstrations (their saved token ids, embedded by this model).

        Raises :class:`~softprompt.errors.ArtifactError` for a missing or malformed file."""
        super().restore_from(artifact)
        meta, where = artifact.metadata, Path(artifact.path) / META_FILE
        if "demonstrations" not in meta:
            raise PromptFileError(f"{where} holds no in-context demonstrations (method {artifact.kind!r})")
        missing = [k for k in ("text", "token_ids") if k not in meta]
        if missing:
            raise PromptFileError(f"{where} lacks {missing}; re-save it")
        demos = meta["demonstrations"]
        self._set_demonstrations([d["row"] for d in demos], [d["text"] for d in demos], meta["text"], meta["token_ids"])
