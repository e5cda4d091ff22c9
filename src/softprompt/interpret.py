"""Reading a learned prompt: the nearest vocabulary tokens of each prompt vector (cosine).

Lester et al. (2021, section 7) read prompts this way and observed that class-label-initialised
prompts keep the label words among the neighbours of their first positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass
class Neighbours:
    """For one prompt position: the ``k`` nearest tokens and their cosine similarities."""

    position: int
    tokens: list[str]
    ids: list[int]
    similarities: list[float]


@torch.no_grad()
def nearest_tokens(backbone, prompt: torch.Tensor, k: int = 5, chunk: int = 8192) -> list[Neighbours]:
    """Nearest vocabulary tokens of each row of ``prompt [length, dim]``.

    Tokens are compared in the space the model consumes: the output of its input-embedding
    module (so scaled embeddings, as in Gemma, compare correctly). Raises :class:`ConfigError`
    unless ``1 <= k <=`` the vocabulary size.
    """
    p = torch.nn.functional.normalize(prompt.detach().float().to(backbone.device), dim=-1)
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    if not 1 <= k <= vocab:
        raise ConfigError(f"k must be between 1 and the model's vocabulary size ({vocab}), got {k}")
    best_sim = torch.full((p.shape[0], k), -2.0, device=p.device)
    best_ids = torch.zeros((p.shape[0], k), dtype=torch.long, device=p.device)
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(vocab, start + chunk), device=backbone.device)
        table = torch.nn.functional.normalize(backbone.embed(ids).float(), dim=-1)
        sims = p @ table.T
        sims_all = torch.cat([best_sim, sims], 1)
        ids_all = torch.cat([best_ids, ids[None].expand(p.shape[0], -1)], 1)
        best_sim, pos = sims_all.topk(k, dim=1)
        best_ids = ids_all.gather(1, pos)
    out = []
    for i in range(p.shape[0]):
        id_list = best_ids[i].tolist()
        out.append(Neighbours(position=i, ids=id_list, similarities=[round(float(s), 4) for s in best_sim[i]],
                              tokens=[backbone.tokenizer.decode([t]) for t in id_list]))
    return out


def label_words_kept(backbone, prompt: torch.Tensor, label_words: list[list[str]], k: int = 5) -> list[bool]:
    """For each label (position ``i`` for label ``i``, as ``class-labels`` initialises them):
    is one of its words' first tokens among the ``k`` nearest tokens of that position?"""
    neighbours = nearest_tokens(backbone, prompt[: len(label_words)], k)
    kept = []
    for words, nb in zip(label_words, neighbours):
        firsts = {backbone.tokenize(w)[0] for w in words if backbone.tokenize(w)}
        kept.append(bool(firsts & set(nb.ids)))
    return kept
