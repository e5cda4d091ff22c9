"""Length-bucketed batching: rows of similar length share a batch, so padding stays small.

Lengths are estimated from the characters of the fields a template reads (no tokenisation of
the whole data set up front). Training batches are drawn from shuffled "mega-buckets" of
``batch_size * bucket_factor`` rows sorted by length, and the batch order is shuffled again, so
every epoch sees a different, reproducible order given ``(seed, epoch)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch


def estimate_lengths(examples: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> list[int]:
    """A cheap length proxy per example: characters in ``fields`` (plus choices, if any)."""
    out = []
    for ex in examples:
        n = sum(len(str(ex.get(f, ""))) for f in fields)
        if "choices" in ex and isinstance(ex["choices"], (list, tuple)):
            n += max((len(str(c)) for c in ex["choices"]), default=0)
        out.append(n)
    return out


def training_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                     bucket_factor: int = 50) -> list[list[int]]:
    """Shuffled, length-bucketed batches of row indices for one epoch (deterministic in seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = max(batch_size, batch_size * bucket_factor)
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start: start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i: i + batch_size] for i in range(0, len(part), batch_size))
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of row indices sorted longest first (a memory peak shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
