"""KnowPrompt (Chen, Zhang, Xie, Deng, Yao, Tan, Huang, Si & Chen, WWW 2022, "KnowPrompt:
Knowledge-aware Prompt-tuning with Synergistic Optimization for Relation Extraction").

The frozen model reads a relation template whose entities are framed by **virtual type words**,
and answers with **virtual answer words**; both are learned vectors that start from knowledge:

* type words: the template's virtual tokens (``{soft:name}`` slots, e.g. ``{soft:sub} {e1}
  {soft:sub}``; :class:`~softprompt.virtual_tokens.VirtualTokens`, saved as ``virtual.<name>``),
  each started as the mean input embedding of the candidate type words (default person,
  organization, location, date, country, the authors' choice for every data set);
* answer words ``[n_labels, dim]``: one vector per label, scored at the answer slot in place of
  vocabulary rows (conditioning kind ``answer_vectors``; the vocabulary is not resized), started
  as the mean of the embeddings of the words of the relation's name (:func:`relation_words`:
  ``Cause-Effect(e2,e1)`` -> cause, effect). Both directions of a relation start from the same
  vector, as in the authors' ``get_label_word.py``; the cross-entropy tells them apart;
* an optional soft prompt before the text (``prompt_vectors``, 0 = none).

``word_init="random"`` starts type and answer words from sampled vocabulary embeddings instead (the
ablation). Every vector lives in the space the model's layers read (``backbone.embed``: Gemma's
scaled embeddings too).

The loss is the cross-entropy over the labels plus ``lam`` times the knowledge constraint
(:func:`knowledge_loss`) computed from the same forward pass (:meth:`Backbone.text_states`).
With ``two_stage_steps`` N > 0, the first N training steps train the type and answer words alone
(the soft prompt is held), then every part trains (the authors' ``--two_steps``; off by default,
as in their scripts). The step count goes on from a checkpoint's step when a run resumes.

Works on decoder-only models (the template ends at the answer) and masked models (the answer at
``{mask}``); an encoder-decoder is refused (:attr:`Backbone.has_text_states`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..conditioning import Conditioning
from ..config import opt
from ..errors import ConfigError, PromptFileError
from ..prompt import SoftPrompt, init_vocab
from .base import Method, MethodConfig, register_method

SUBJECT, OBJECT, TEXT = "e1", "e2", "text"
"""The template fields holding the subject, the object and the sentence (a relation row's fields,
:mod:`softprompt.tasks.relations`)."""
INITS = ("knowledge", "random")
MAX_NEGATIVE_SPAN = 5
"""The longest corrupted span, in tokens (the authors draw 1 to 5)."""


@dataclass
class KnowPromptConfig(MethodConfig):
    type_words: str = opt("person organization location date country",
                          "words (separated by spaces) whose mean input embedding starts every virtual type word "
                          "(the template's {soft:name} slots)")
    word_init: str = opt("knowledge", "how type and answer words start: knowledge (type words' mean; the mean of the "
                    "words of each relation's name) or random (sampled vocabulary embeddings: the ablation)", INITS)
    prompt_vectors: int = opt(0, "soft prompt vectors before the text (0: none)")
    gamma: float = opt(0.3, "margin gamma of the knowledge constraint (the authors: 0.3)")
    lam: float = opt(0.001, "weight lambda of the knowledge constraint added to the cross-entropy (0: off)")
    two_stage_steps: int = opt(0, "train the type and answer words alone for this many steps before the soft "
                               "prompt joins (0: everything from the start, as the authors' default)")

    def __post_init__(self):
        if self.word_init not in INITS:
            raise ConfigError(f"knowprompt word_init {self.word_init!r} is unknown; choose one of {', '.join(INITS)} "
                              "(--method-options word_init=random)")
        for name in ("prompt_vectors", "two_stage_steps"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"knowprompt {name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.lam, (int, float)) or self.lam < 0 or not isinstance(self.gamma, (int, float)):
            raise ConfigError(f"knowprompt lam must be a number >= 0 and gamma a number, got lam={self.lam!r}, "
                              f"gamma={self.gamma!r}")
        if not str(self.type_words).split():
            raise ConfigError("knowprompt type_words is empty: give words separated by spaces, e.g. "
                              "--method-options 'type_words=person location'")
        if self.two_stage_steps and not self.prompt_vectors:
            raise ConfigError("knowprompt two_stage_steps holds the soft prompt back, but there is none "
                              "(prompt_vectors=0): give prompt_vectors=N, or drop two_stage_steps")


def relation_words(label: str) -> list[str]:
    """The words of a relation's name, lower-cased, direction left out: ``Cause-Effect(e2,e1)`` ->
    ``["cause", "effect"]``, ``org:founded_by`` -> ``["org", "founded", "by"]``, ``Other`` -> ``["other"]``.
    Raises :class:`ConfigError` for a name without letters."""
    words = re.findall(r"[a-z]+", label.split("(")[0].lower())
    if not words:
        raise ConfigError(f"label {label!r} has no word to start its answer vector from: name the relation with "
                          "words, or use --method-options word_init=random")
    return words


def mean_word_embedding(backbone, words: list[str]) -> torch.Tensor:
    """``[dim]`` float32: the mean over ``words`` of each word's mean input embedding (its tokens
    after a space, as it reads inside a sentence), through ``backbone.embed``."""
    rows = []
    with torch.no_grad():
        for word in words:
            ids = backbone.tokenize(" " + word)
            rows.append(backbone.embed(torch.tensor(ids)).float().mean(0).cpu())
    return torch.stack(rows).mean(0)


def span_means(hidden: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """``hidden [batch, T, dim]``, ``spans [batch, 2]`` (``[start, end)``) -> ``[batch, dim]``,
    the mean state over each row's span."""
    pos = torch.arange(hidden.shape[1], device=hidden.device)[None]
    inside = ((pos >= spans[:, :1]) & (pos < spans[:, 1:])).to(hidden.dtype)  # [batch, T]
    return (inside[..., None] * hidden).sum(1) / inside.sum(1, keepdim=True)


def draw_negative_spans(text_spans: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Corrupted spans inside each row's real text: ``text_spans [batch, 2]`` (``[start, end)`` of
    the sentence's tokens) -> ``[batch, 2]``, each of 1 to :data:`MAX_NEGATIVE_SPAN` tokens (no
    more than the text has), its start uniform over the places it fits. Never padding, prompt or
    template positions (the authors draw from the whole padded sequence)."""
    out = []
    for start, end in text_spans.tolist():
        longest = min(MAX_NEGATIVE_SPAN, end - start)
        length = int(torch.randint(1, longest + 1, (1,), generator=generator))
        first = start + int(torch.randint(0, end - start - length + 1, (1,), generator=generator))
        out.append((first, first + length))
    return torch.tensor(out, dtype=torch.long, device=text_spans.device)


def knowledge_loss(hidden: torch.Tensor, answer: torch.Tensor, gold_vectors: torch.Tensor, subject: torch.Tensor,
                   obj: torch.Tensor, neg_subject: torch.Tensor, neg_object: torch.Tensor,
                   gamma: float) -> torch.Tensor:
    """KnowPrompt's knowledge constraint (section 3.3), the mean over rows of
    ``-log sigma(gamma - ||s + r - o||) - log sigma(||s' + r_y - o'|| - gamma)``.

    ``hidden [batch, T, dim]``: last-layer states of the text; ``s``, ``o``: mean states over the
    ``subject`` and ``obj`` spans ``[batch, 2]``; ``r = answer [batch, dim]``: the last layer's
    state where the answer is read; ``r_y = gold_vectors [batch, dim]``: the gold relation's
    answer vector; ``s'``, ``o'``: mean states over the corrupted spans ``neg_subject``,
    ``neg_object``. Norms are L2 per
    row (the authors' code takes one norm over the whole batch divided by its size, which flattens
    the loss). Returns a scalar (float32)."""
    s, o = span_means(hidden, subject).float(), span_means(hidden, obj).float()
    s_neg, o_neg = span_means(hidden, neg_subject).float(), span_means(hidden, neg_object).float()
    d_pos = (s + answer.float() - o).norm(dim=-1)
    d_neg = (s_neg + gold_vectors.float() - o_neg).norm(dim=-1)
    f = torch.nn.functional.logsigmoid
    return (-f(gamma - d_pos) - f(d_neg - gamma)).mean()


@register_method("knowprompt", KnowPromptConfig)
class KnowPrompt(Method):
    """Virtual type words (the template's virtual tokens), virtual answer words (one vector per
    label) and an optional soft prompt, trained with the cross-entropy plus the knowledge
    constraint. Raises :class:`ConfigError` for an encoder-decoder, a task whose labels are not
    one fixed set of single-slot words, or a template without ``{e1}``, ``{e2}``, ``{text}`` and a
    ``{soft:name}`` slot."""

    needs = frozenset({"virtual_tokens", "answer_vectors"})
    # A fifth of prompt tuning's: an answer vector meets last-layer states of norm ~45 on SmolLM2, so
    # 0.075 x RMS (0.01) moved the logits by several units a step (batch loss 3.3, 6.4, 9.8 over the
    # first three steps); 0.015 x RMS (0.002 on SmolLM2) trains smoothly (docs/knowprompt.md).
    lr_per_embedding_rms = 0.015

    def __init__(self, config: KnowPromptConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self._check(backbone, task)
        labels = list(task.verbalizer.labels)
        ctx = backbone.init_context(seed=seed + 104729)  # its own draw, apart from the prompt's and the tables'
        with torch.no_grad():
            if config.word_init == "knowledge":
                types = mean_word_embedding(backbone, str(config.type_words).split())
                for table in self.virtual_tokens.tables.values():
                    table.copy_(types.expand_as(table))
                answers = torch.stack([mean_word_embedding(backbone, relation_words(label)) for label in labels])
            else:  # the template's tables start as sampled vocabulary embeddings already
                answers = init_vocab((len(labels), backbone.dim), ctx)
        self.answer_words = nn.Parameter(answers)
        # The starting vectors, kept to show what training changed (softprompt inspect: init.<name>).
        self.register_buffer("init_answer_words", answers.clone())
        self.init_types = {name: t.detach().clone() for name, t in self.virtual_tokens.tables.items()}
        self.labels = labels
        self.soft_prompt = None
        if config.prompt_vectors:
            self.soft_prompt = SoftPrompt.initialize(config.prompt_vectors, backbone.dim, "vocab",
                                                     backbone.init_context(seed=seed))
        # the corrupted spans' draws: reseeded from the seed and the step at every training step, so a
        # resumed run draws what an uninterrupted one does (the generator's state is not checkpointed)
        self.negative_seed = seed + 15485863
        self.generator = torch.Generator()  # seeded in forward, before each training step's draws
        # training steps taken (forward passes with gradients), for the two-stage schedule; a restore
        # (--resume) takes the step the output was saved at (restore_from)
        self.steps = 0
        self.rows_without_knowledge = 0  # rows left out of the knowledge term since take_counts

    def _check(self, backbone, task) -> None:
        who = "method 'knowprompt'"
        if not backbone.has_text_states:
            raise ConfigError(f"{who} reads the hidden states of the entities and of the answer in one pass, which "
                              f"{backbone.model_id!r} ({backbone.description} model) does not give: use a decoder-only "
                              "model (the template ending at the answer) or a masked one (the answer at {mask})")
        verbalizer = task.verbalizer
        if not verbalizer.is_fixed or verbalizer.scores_slots or verbalizer.conditioning().kinds:
            example = ";".join(f"{label}={re.sub(r'[^a-z0-9]+', '-', str(label).lower()).strip('-') or 'x'}"
                               for label in verbalizer.labels)
            raise ConfigError(f"{who} scores its own answer vector per label, so it needs one fixed label set of plain "
                              "words (they are not scored), not choices:, rules: or answer-vectors:; for this task's "
                              f"labels: --label-words '{example}'")
        template = task.template
        missing = [f"{{{f}}}" for f in (SUBJECT, OBJECT, TEXT) if f not in template.fields]
        if missing or not template.virtual_tokens or len(template.answer_slots) > 1:
            raise ConfigError(
                f"{who} needs a template with {{text}}, {{e1}} and {{e2}}, virtual type words {{soft:name}} around "
                f"the entities and at most one answer slot; {template.text!r} "
                + (f"lacks {', '.join(missing)}" if missing else "has no {soft:name} slot" if not template.virtual_tokens
                   else "has several answer slots")
                + ": e.g. --template '{text} The relation between {soft:sub} {e1} {soft:sub} and {soft:obj} {e2} "
                "{soft:obj} is' (a masked model: '... and {soft:obj} {e2} {soft:obj} is {mask}.')")

    # ------------------------------------------------------------------ what it adds
    def _prompt(self) -> torch.Tensor | None:
        """The soft prompt ``[length, dim]``, held (detached) during the first stage of training."""
        if self.soft_prompt is None:
            return None
        weight = self.soft_prompt.weight
        first_stage = torch.is_grad_enabled() and self.steps < self.config.two_stage_steps
        return weight.detach() if first_stage else weight

    def conditioning(self) -> Conditioning:
        """The answer words as ``answer_vectors [n_labels, dim]`` and the soft prompt (if any) as
        ``input_vectors``; the type words come as the template's virtual tokens."""
        return Conditioning(input_vectors=self._prompt(), answer_vectors=self.answer_words)

    def forward(self, backbone, task, batch, loss: str = "rank", length_normalize: bool = False,
                word_scoring: str = "exact") -> torch.Tensor:
        """Cross-entropy over the labels plus ``lam`` times :func:`knowledge_loss`, from one
        forward pass (``loss``, ``length_normalize`` and ``word_scoring`` change nothing: an answer
        vector's score is one position's). Rows whose entity or text tokens were all cut by
        truncation leave the knowledge term (the cross-entropy keeps them); a training step counts
        them (:meth:`take_counts`)."""
        cond = self.training_conditioning()
        if torch.is_grad_enabled():  # a training step (the trainer calls forward for nothing else)
            self.steps += 1
            self.generator.manual_seed(self.negative_seed * 1_000_003 + self.steps)
        states = backbone.text_states(cond, batch)
        hidden = states.hidden
        scores = backbone.answer_log_scores(states.answer, cond.answer_vectors)
        gold = torch.tensor(batch.gold, device=scores.device)
        total = torch.nn.functional.nll_loss(scores, gold)
        rows = [b for b, fp in enumerate(batch.field_pos) if all(f in fp for f in (SUBJECT, OBJECT, TEXT))]
        if self.config.lam and torch.is_grad_enabled():
            self.rows_without_knowledge += len(batch) - len(rows)
        if self.config.lam and rows:
            spans = {f: torch.tensor([batch.field_pos[b][f] for b in rows], device=hidden.device)
                     for f in (SUBJECT, OBJECT, TEXT)}
            idx = torch.tensor(rows, device=hidden.device)
            r = hidden[idx, states.answer_at[idx]]  # the last layer's state where the answer is read
            ke = knowledge_loss(hidden[idx], r, cond.answer_vectors[gold[idx]], spans[SUBJECT], spans[OBJECT],
                                draw_negative_spans(spans[TEXT], self.generator),
                                draw_negative_spans(spans[TEXT], self.generator), self.config.gamma)
            total = total + self.config.lam * ke.to(total.dtype)
        return total

    def take_counts(self) -> dict[str, int]:
        """``{"rows_without_knowledge_term": n}``: training rows since the last call whose subject,
        object or text tokens truncation cut away (or that could not be located), so the knowledge
        constraint left them out (the cross-entropy kept them); nothing with ``lam`` 0."""
        n, self.rows_without_knowledge = self.rows_without_knowledge, 0
        return {"rows_without_knowledge_term": n} if self.config.lam else {}

    def counts_warning(self, counts: dict[str, int]) -> str | None:
        """How many rows left the knowledge term, and the fix: a longer ``--max-length``."""
        n = counts.get("rows_without_knowledge_term", 0)
        if not n:
            return None
        return (f"knowprompt: {n} training row(s) since the last evaluation left the knowledge term out (the "
                "cross-entropy still trains on them): truncation cut all the tokens of their {e1}, {e2} or {text} (or "
                "they could not be located among the tokens); "
                "raise --max-length so every row's entities and text fit (results.json counts them in method_counts)")

    # ---------------------------------------------------------------------- saving
    def state_tensors(self):
        """``answer_words [n_labels, dim]``, the type words ``virtual.<name>``, ``prompt`` (with a
        soft prompt), and the starting vectors ``init.answer_words`` / ``init.virtual.<name>``."""
        out = {**super().state_tensors(), "answer_words": self.answer_words.detach().float().cpu().contiguous(),
               "init.answer_words": self.init_answer_words.float().cpu().contiguous()}
        out.update({f"init.virtual.{n}": t.float().cpu().contiguous() for n, t in self.init_types.items()})
        if self.soft_prompt is not None:
            out["prompt"] = self.soft_prompt.weight.detach().float().cpu().contiguous()
        return out

    def state_metadata(self):
        """The labels in answer-vector order (``row_names``, read by ``softprompt inspect``) and the
        prompt's length."""
        return {"row_names": {"answer_words": self.labels, "init.answer_words": self.labels},
                "prompt_vectors": self.config.prompt_vectors}

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved prompt length; the saved vectors replace the initialisation."""
        return dataclasses.replace(config, prompt_vectors=int(metadata.get("prompt_vectors", config.prompt_vectors)),
                                   two_stage_steps=0)

    def restore_from(self, artifact):
        """Take the saved answer words, type words, prompt and starting vectors, and as the
        two-stage schedule's step count the trainer's step the output was saved at (metadata
        ``step``: a resumed run goes on in the stage it was in); a shape that differs (another
        label set, prompt length or model) is refused (:class:`PromptFileError`)."""
        super().restore_from(artifact)
        self.steps = int(artifact.metadata.get("step") or 0)  # the trainer's steps when saved: the schedule's stage
        tensors = artifact.tensors
        pairs = [("answer_words", self.answer_words), ("init.answer_words", self.init_answer_words)]
        pairs += [(f"init.virtual.{n}", t) for n, t in self.init_types.items()]
        if self.soft_prompt is not None:
            pairs.append(("prompt", self.soft_prompt.weight))
        for name, target in pairs:
            saved = tensors.get(name)
            if saved is None or saved.shape != target.shape:
                got = "none" if saved is None else tuple(saved.shape)
                raise PromptFileError(f"{artifact.path}: tensor {name!r} has shape {got}, this knowprompt needs "
                                      f"{tuple(target.shape)}: use the task (labels, template) and the model it was "
                                      "trained with")
            with torch.no_grad():
                target.copy_(saved)
