"""SemEval-2010 Task 8's official score, computed as the official perl scorer computes it.

Follows ``semeval2010_task8_scorer-v1.2.pl`` (Hendrickx et al., 2010), its evaluation "(9+1)-way
taking directionality into account": labels are relations with a direction, ``Cause-Effect(e1,e2)``,
or ``Other``. For each relation ``R`` of the gold labels (direction dropped, ``Other`` included):
a prediction of ``R`` with the wrong direction counts against ``R``'s precision (the scorer's
``WRONG_DIR`` row) and is not correct; ``P = correct / (predicted R + wrong directions of gold R)``,
``R = correct / gold R``, ``F1 = 2PR / (P + R)``, in percent. The official score is the mean F1
over the gold relations other than ``Other``; micro-F1 pools the same counts over them.
Values here are fractions in [0, 1] (the scorer prints percentages: 100 times these).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

OTHER = "Other"
_DIRECTION = re.compile(r"\(e[12],e[12]\)$")


def relation_of(label: str) -> str:
    """``label`` without its direction: ``Cause-Effect(e2,e1)`` -> ``Cause-Effect``."""
    return _DIRECTION.sub("", label)


def semeval_counts(preds: Sequence[str], golds: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Per gold relation (direction dropped): ``(correct, counted as proposed, gold)`` as the
    official scorer counts them (wrong directions of a gold relation count as proposed for it)."""
    correct: Counter = Counter()
    proposed: Counter = Counter()
    wrong_dir: Counter = Counter()
    gold: Counter = Counter(relation_of(g) for g in golds)
    for p, g in zip(preds, golds):
        rp, rg = relation_of(p), relation_of(g)
        if p == g:
            correct[rg] += 1
            proposed[rp] += 1
        elif rp == rg:
            wrong_dir[rg] += 1
        else:
            proposed[rp] += 1
    return {r: (correct[r], proposed[r] + wrong_dir[r], gold[r]) for r in sorted(gold)}


def _prf(correct: int, proposed: int, gold: int) -> tuple[float, float, float]:
    p = 0.0 if proposed == 0 else 100.0 * correct / proposed
    r = 0.0 if gold == 0 else 100.0 * correct / gold
    return p, r, (0.0 if p + r == 0 else 2 * p * r / (p + r))


def semeval_official_f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str] = (),
                        positive_label: str | None = None) -> float:
    """The official score: macro-averaged F1 over the gold relations except ``Other``, direction
    taken into account, as a fraction (the perl scorer's last line divided by 100). 0 when the
    gold labels hold only ``Other``."""
    counts = {r: c for r, c in semeval_counts(preds, golds).items() if r != OTHER}
    if not counts:
        return 0.0
    return sum(_prf(*c)[2] for c in counts.values()) / len(counts) / 100.0


def semeval_micro_f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str] = (),
                     positive_label: str | None = None) -> float:
    """Micro-averaged F1 excluding ``Other``, direction taken into account (the scorer's
    "Micro-averaged result" of its official evaluation), as a fraction."""
    counts = [c for r, c in semeval_counts(preds, golds).items() if r != OTHER]
    return _prf(*(sum(c[i] for c in counts) for i in range(3)))[2] / 100.0


def answer_file(ids: Sequence[int], labels: Sequence[str]) -> str:
    """The scorer's input format: one ``<id>\\t<label>`` line per row."""
    return "".join(f"{i}\t{label}\n" for i, label in zip(ids, labels))
