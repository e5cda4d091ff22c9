"""KPT's knowledgeable verbalizer: many words per label, calibrated by their contextual prior,
aggregated by a (learnable) weighted mean.

Hu, Ding, Wang, Liu, Wang, Li, Wu & Sun (ACL 2022), "Knowledgeable Prompt-tuning: Incorporating
Knowledge into Prompt Verbalizer for Text Classification", sections 3.2-3.3; the reference
implementation is OpenPrompt's ``KnowledgeableVerbalizer``. The words and their prior come from
:func:`softprompt.refinement.build_knowledgeable` (which refines them with the model); this module
holds only what scores and saves them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .verbalizer import VERBALIZER_TYPES, LearnedWeightsVerbalizer, _check_shapes, _check_type


class KnowledgeableVerbalizer(LearnedWeightsVerbalizer):
    """Label words with a contextual prior; a label's score is the weighted MEAN of its words'
    calibrated log-probabilities (KPT, Hu et al., 2022, eq. 5-7).

    ``label_words``: label -> words (class name first), as :class:`~softprompt.tasks.Verbalizer`;
    ``shared_words``: a word may stand for several labels (``--duplicates share``).
    ``log_prior``: ``[n_words]`` (float32, :meth:`flat_words` order) the log of each word's
    contextual prior P(v), the mean over unlabelled support inputs of p(v | template(x)), with
    p normalised over the candidate words as in OpenPrompt (zeros when not given; saved as the
    tensor ``verbalizer.log_prior``, never trained). ``calibrate``: score a word by
    ``log p(v|x) - log P(v)`` (the probability divided by its prior), else ``log p(v|x)``.
    ``learn_weights``: the per-word logits ``word_logits [n_words]`` (started uniform) are trained,
    a softmax within each label giving the weights; otherwise they stay uniform and fixed.
    ``record``: what refinement did (source file, options, per-stage counts and removed words,
    support rows), kept in :meth:`to_dict` and so in a run's saved metadata.
    Raises :class:`ConfigError` for a ``log_prior`` of the wrong length.
    """

    type_name: ClassVar[str] = "knowledgeable"

    def __init__(self, label_words, prefix: str = " ", shared_words: bool = False, log_prior=None,
                 calibrate: bool = True, learn_weights: bool = False,
                 record: Mapping[str, Any] | None = None) -> None:
        super().__init__(label_words, prefix=prefix, shared_words=shared_words)
        n_words = self.word_logits.numel()
        self.word_logits.requires_grad_(bool(learn_weights))
        prior = torch.zeros(n_words) if log_prior is None else torch.as_tensor(log_prior, dtype=torch.float32).clone()
        if prior.shape != (n_words,):
            raise ConfigError(f"log_prior has shape {tuple(prior.shape)}; the verbalizer has {n_words} words")
        self.log_prior = nn.Parameter(prior, requires_grad=False)  # a parameter so it is saved and moved with the method
        self.calibrate = bool(calibrate)
        self.learn_weights = bool(learn_weights)
        self.record = dict(record or {})

    def aggregate(self, word_scores: torch.Tensor, word_label: torch.Tensor, n_labels: int) -> torch.Tensor:
        """``[batch, n_words]`` word log-scores -> ``[batch, n_labels]``: per label
        ``sum_w weight_w * (log p(w|x) - log P(w))`` (without ``- log P(w)`` when not calibrating),
        ``log p(w|x)`` the log-softmax of the row's scores over all its words. Differentiable in
        the prompt and in :attr:`word_logits`. Raises ``ValueError`` for mismatched shapes."""
        n_words = _check_shapes(word_scores, word_label, n_labels)
        if n_words != self.log_prior.numel():
            raise ValueError(f"word_scores has {n_words} words, the verbalizer has {self.log_prior.numel()}")
        scores = torch.log_softmax(word_scores.float(), -1)
        if self.calibrate:
            scores = scores - self.log_prior.to(scores.device)
        weighted = scores * self.log_weights(scores.device).exp()
        out = weighted.new_zeros(weighted.shape[0], n_labels)
        return out.index_add(1, word_label.to(scores.device), weighted)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.pop("weights")  # uniform at the start; the trained logits are saved as a tensor
        data.update(calibrate=self.calibrate, learn_weights=self.learn_weights, knowledge=self.record)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnowledgeableVerbalizer:
        """A verbalizer of the saved words (prior and logits zero/uniform until the saved tensors
        are loaded: :func:`~softprompt.tasks.verbalizer.load_verbalizer_tensors`)."""
        _check_type(data, cls.type_name)
        if "label_words" not in data:
            raise ConfigError(f"a saved knowledgeable verbalizer needs 'label_words', got keys {sorted(data)}")
        return cls(data["label_words"], prefix=data.get("prefix", " "), shared_words=data.get("shared_words", False),
                   calibrate=data.get("calibrate", True), learn_weights=data.get("learn_weights", False),
                   record=data.get("knowledge"))

    def extra_repr(self) -> str:
        counts = ", ".join(f"{label}={len(words)}" for label, words in zip(self.labels, self.words))
        return f"words per label: {counts}; calibrate={self.calibrate}, learn_weights={self.learn_weights}"


VERBALIZER_TYPES[KnowledgeableVerbalizer.type_name] = KnowledgeableVerbalizer
