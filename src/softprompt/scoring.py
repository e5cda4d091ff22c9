"""Scoring: rank classification over label words, and generation mapped back to labels.

Rank classification scores each label by the log-likelihood of its verbalisation after the
template, with the ids the word has in that natural text (:mod:`softprompt.answer_tokens`) (``length_normalize`` divides a multi-token word's log-likelihood by its token count);
a label with several words takes their weighted log-mean-exp (the verbalizer's ``aggregate``).
Generation decodes greedily and maps the output back to the label whose word it starts with;
outputs that match no label are counted as invalid (and as wrong).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from .batching import estimate_lengths, eval_batches
from .conditioning import as_conditioning
from .encoding import EncodedBatch, encode
from .errors import ConfigError

SCORINGS = ("rank", "generate")
WORD_SCORINGS = ("exact", "first-token")
"""How a multi-token word is scored: all its tokens (exact), or its first token alone (one position
per row, as for single-token words; words of two labels that start alike then score alike)."""


@dataclass
class Prediction:
    """One row's answer: the label (None for an invalid generation) and per-label probabilities."""

    label: str | None
    scores: dict[str, float] = field(default_factory=dict)
    generated: str | None = None


@dataclass
class EvalResult:
    """Metrics of one evaluation plus counts: rows, truncated rows, invalid generations, and the
    tokens truncation cut in all (``truncated_tokens``)."""

    metrics: dict[str, float]
    n: int
    truncated: int = 0
    invalid: int = 0
    predictions: list[Prediction] = field(default_factory=list)
    truncated_tokens: int = 0

    def summary(self) -> dict[str, Any]:
        return {**self.metrics, "n": self.n, "truncated": self.truncated, "invalid": self.invalid}


def first_tokens(batch: EncodedBatch) -> EncodedBatch:
    """``batch`` with each candidate word cut to its first token (``word_scoring="first-token"``)."""
    return dataclasses.replace(batch, words=[[w[:1] for w in ws] for ws in batch.words])


def label_scores(backbone, task, batch: EncodedBatch, prompt=None,
                 length_normalize: bool = False, word_scoring: str = "exact") -> torch.Tensor:
    """Differentiable per-label log-scores ``[batch, n_labels]`` (``-inf`` pads for choice tasks).

    ``prompt``: a :class:`~softprompt.conditioning.Conditioning` or anything
    :func:`~softprompt.conditioning.as_conditioning` takes (a ``[length, dim]`` prompt, None for
    zero-shot). With answer vectors, their scores are the labels' (one answer vector per label).
    ``word_scoring``: one of :data:`WORD_SCORINGS` (else :class:`ConfigError`).
    """
    prompt = as_conditioning(prompt)
    if word_scoring not in WORD_SCORINGS:
        raise ConfigError(f"unknown word scoring {word_scoring!r}; choose one of {WORD_SCORINGS} (--word-scoring)")
    if task.verbalizer.scores_slots:  # scores several answer slots itself (PTR's rules)
        return task.verbalizer.label_scores_of(backbone, batch, prompt, length_normalize)
    if word_scoring == "first-token":
        batch = first_tokens(batch)
    scores = backbone.word_scores(prompt, batch, length_normalize)
    if getattr(prompt, "answer_vectors", None) is not None:
        return scores
    if not batch.shared_words:  # one word per candidate: the word is the label
        return scores
    word_label = torch.tensor(batch.word_label[0], device=scores.device)
    return task.verbalizer.aggregate(scores, word_label, len(batch.label_names[0]))


def classification_loss(backbone, task, batch: EncodedBatch, prompt=None,
                        loss: str = "rank", length_normalize: bool = False, word_scoring: str = "exact") -> torch.Tensor:
    """Mean loss over the batch: ``rank`` = cross-entropy over the labels' scores; ``lm`` = the
    gold word's token negative log-likelihood over the whole vocabulary (the paper's objective)."""
    if loss == "lm":
        return backbone.gold_nll(prompt, batch).mean()
    if loss != "rank":
        raise ConfigError(f"unknown loss {loss!r}; choose 'rank' or 'lm'")
    if task.verbalizer.scores_slots:  # its own loss over several slots (PTR's two-part loss)
        return task.verbalizer.training_loss(backbone, batch, as_conditioning(prompt), length_normalize)
    scores = label_scores(backbone, task, batch, prompt, length_normalize, word_scoring)
    gold = torch.tensor(batch.gold, device=scores.device)
    return torch.nn.functional.cross_entropy(scores, gold)


def _normalize_text(text: str) -> str:
    return re.sub(r"[^\w\s]", " ", text.lower()).strip()


def match_generation(text: str, label_names: Sequence[str], candidates: Sequence[Sequence[str]]) -> str | None:
    """The label whose word (or, for choice tasks, text) the generated ``text`` starts with, else None."""
    got = _normalize_text(text)
    best, best_len = None, 0
    for name, words in zip(label_names, candidates):
        for w in words:
            w_norm = _normalize_text(w)
            if w_norm and (got == w_norm or got.startswith(w_norm + " ")) and len(w_norm) > best_len:
                best, best_len = name, len(w_norm)
    return best


@torch.no_grad()
def predict(backbone, task, examples: Sequence[Mapping[str, Any]], prompt=None,
            batch_size: int = 32, scoring: str = "rank", length_normalize: bool = False,
            with_labels: bool = False, max_new_tokens: int | None = None, progress: bool = False,
            max_length: int | None = None, word_scoring: str = "exact"):
    """Predict every example under ``prompt`` (a conditioning, as :func:`label_scores` takes);
    returns ``(predictions, truncated_count)`` in input order. ``max_length`` caps each input in
    tokens, prompt included, below ``backbone.max_length``; ``word_scoring`` as in :func:`label_scores`."""
    preds, truncated, _ = _predict(backbone, task, examples, prompt, batch_size, scoring, length_normalize,
                                   with_labels, max_new_tokens, progress, max_length, word_scoring)
    return preds, truncated


@torch.no_grad()  # scores only: no graph through the prompt or the verbalizer's parameters
def _predict(backbone, task, examples, prompt, batch_size, scoring, length_normalize, with_labels,
             max_new_tokens, progress, max_length=None, word_scoring="exact"):
    """:func:`predict`, also returning the tokens truncation cut: ``(predictions, rows, tokens)``."""
    if scoring not in SCORINGS:
        raise ConfigError(f"unknown scoring {scoring!r}; choose one of {SCORINGS}")
    lengths = estimate_lengths(examples, task.template.fields)
    preds: list[Prediction | None] = [None] * len(examples)
    truncated = cut_tokens = 0
    prompt = as_conditioning(prompt)
    plen = prompt.length
    batches = eval_batches(lengths, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="eval" if with_labels else "predict", leave=False)
    for idx in batches:
        rows = [examples[i] for i in idx]
        batch = encode(backbone, task, rows, prompt_length=plen, with_labels=with_labels, max_length=max_length)
        truncated += batch.truncated
        cut_tokens += batch.truncated_tokens
        if scoring == "rank":
            probs = torch.softmax(label_scores(backbone, task, batch, prompt, length_normalize, word_scoring), -1).cpu()
            for j, i in enumerate(idx):
                names = batch.label_names[j]
                p = probs[j, : len(names)]
                preds[i] = Prediction(label=names[int(p.argmax())], scores={n: float(v) for n, v in zip(names, p)})
        else:
            longest = max(len(w) for ws in batch.words for w in ws)
            texts = backbone.generate(prompt, batch, max_new_tokens or longest + 2)
            for j, i in enumerate(idx):
                cands = task.verbalizer.candidates(rows[j])
                preds[i] = Prediction(label=match_generation(texts[j], batch.label_names[j], cands), generated=texts[j])
    return preds, truncated, cut_tokens


def score_predictions(task, examples: Sequence[Mapping[str, Any]], preds: Sequence[Prediction],
                      truncated: int = 0) -> EvalResult:
    """The task's metrics of ``preds`` against the gold labels of ``examples`` (same order)."""
    from .tasks.metrics import compute_metrics

    golds = [str(ex["label"]) for ex in examples]
    guessed = [p.label if p.label is not None else "<invalid>" for p in preds]
    labels = task.verbalizer.labels if task.verbalizer.is_fixed else sorted(set(golds))
    metrics = compute_metrics(task.metrics, guessed, golds, labels, task.positive_label)
    invalid = sum(p.label is None for p in preds)
    return EvalResult(metrics=metrics, n=len(examples), truncated=truncated, invalid=invalid, predictions=list(preds))


def evaluate(backbone, task, examples: Sequence[Mapping[str, Any]], prompt=None,
             batch_size: int = 32, scoring: str = "rank", length_normalize: bool = False,
             progress: bool = False, max_length: int | None = None, word_scoring: str = "exact") -> EvalResult:
    """Score ``examples`` (which carry gold labels) and compute the task's metrics; ``max_length``
    and ``word_scoring`` as in :func:`predict`."""
    preds, truncated, cut_tokens = _predict(backbone, task, examples, prompt, batch_size, scoring, length_normalize,
                                            True, None, progress, max_length, word_scoring)
    result = score_predictions(task, examples, preds, truncated)
    result.truncated_tokens = cut_tokens
    return result
