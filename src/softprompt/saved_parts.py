"""Parts a method holds besides its own parameters (the task's verbalizer, the template's virtual
tokens), saved beside the method's tensors as ``<part>.<parameter>`` and copied back with a check."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn


def part_tensors(module: nn.Module, part: str) -> dict[str, torch.Tensor]:
    """``module``'s parameters as ``{"<part>.<name>": tensor}``: float32, CPU, contiguous."""
    return {f"{part}.{name}": p.detach().float().cpu().contiguous() for name, p in module.named_parameters()}


def load_part_tensors(module: nn.Module, tensors: Mapping[str, torch.Tensor], part: str,
                      error: Callable[[str], Exception], fix: str) -> None:
    """Copy ``tensors["<part>.<name>"]`` into each parameter of ``module`` (other names ignored).
    A missing tensor or one of another shape raises ``error(message)``, the message ending in ``fix``."""
    for name, p in module.named_parameters():
        saved = tensors.get(f"{part}.{name}")
        if saved is None or tuple(saved.shape) != tuple(p.shape):
            got = "no tensor" if saved is None else f"shape {tuple(saved.shape)}"
            raise error(f"the saved output has {got} for {part}.{name}, which needs shape {tuple(p.shape)}: {fix}")
        with torch.no_grad():
            p.copy_(saved.to(p))
