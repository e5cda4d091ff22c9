"""The learnable virtual tokens a template names (``{soft}``, ``{soft*4}``, ``{soft:name*N}``).

A template's virtual tokens sit inside the text (P-tuning, Liu et al. 2021; OpenPrompt's
``MixedTemplate``). They belong to the template, so every method that trains learns them with its
own parameters: :class:`VirtualTokens` holds one ``[count, dim]`` parameter per name, started as
sampled vocabulary embeddings (the ``vocab`` initialiser of :mod:`softprompt.prompt`, one draw per
seed), hands them to the backbone as :attr:`~softprompt.conditioning.Conditioning.virtual_tokens`
and is saved with the method as tensors ``virtual.<name>``.
"""

from __future__ import annotations

import torch
from torch import nn

from .conditioning import Conditioning
from .errors import PromptFileError
from .prompt import init_vocab
from .saved_parts import load_part_tensors, part_tensors


class VirtualTokens(nn.Module):
    """One learnable ``[count, dim]`` table per virtual-token name of a template.

    ``counts``: ``{name: count}`` (:attr:`~softprompt.tasks.template.Template.virtual_tokens`);
    ``backbone``: gives the width and the embeddings the tables start from; ``seed``: the draw.
    Empty (no parameters, an empty :meth:`conditioning`) for a template without virtual tokens.
    """

    def __init__(self, counts: dict[str, int], backbone, seed: int = 0):
        super().__init__()
        self.tables = nn.ParameterDict()
        if not counts:
            return
        ctx = backbone.init_context(seed=seed + 7919)  # its own draw, apart from the prompt's
        for name, count in counts.items():
            self.tables[name] = nn.Parameter(init_vocab((count, backbone.dim), ctx))

    def conditioning(self) -> Conditioning:
        """The tables as ``virtual_tokens`` (``name -> [count, dim]``), differentiable."""
        return Conditioning(virtual_tokens=dict(self.tables.items()))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """``{"virtual.<name>": [count, dim]}``, float32 on the CPU, to save with the method."""
        return part_tensors(self.tables, "virtual")

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy the saved ``virtual.<name>`` tensors in; a missing one or one of another shape is
        refused (:class:`PromptFileError`: the template differs from the one trained with)."""
        load_part_tensors(self.tables, tensors, "virtual", PromptFileError,
                          "use the template the output was trained with ({soft:name*N} slots)")
