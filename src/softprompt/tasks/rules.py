"""Rule files and PTR's rule verbalizer (Han et al., 2021, "PTR: Prompt Tuning with Rules").

A class is a conjunction of conditions, each answered at one named answer slot of the template
(``{mask:head}``, ``{mask:link}``, ...): a rule gives, per slot, the word the class puts there. A
slot's candidate set is every word any rule puts in it (rules sharing a word share that
candidate). A class's log-score is the sum over slots of its word's log-score at the slot; the
training loss adds to the cross-entropy over classes the mean over slots of each slot's
cross-entropy over its candidates (thunlp/PTR; OpenPrompt's ``PTRVerbalizer``).

Rule files (``--label-words rules:PATH``), TSV with a header naming the slots::

    relation	head	link	tail
    Cause-Effect(e1,e2)	event	causes	event

or YAML: ``{slots: [head, link, tail], rules: {LABEL: [word, word, word], ...}}``. A word may be
several tokens ("is part of"). :func:`check_rules_cover` refuses data holding a relation with no
rule, and rules for a relation the data never has.

Scoring (:meth:`RuleVerbalizer.rule_scores`) goes through ``Backbone.slot_word_scores`` only:
on a model with a mask token every slot is a mask at once and each slot is scored alone; on one
without (decoder-only, encoder-decoder), slots are read in order, an earlier slot filled with the
gold words in training and with each class's own words at inference (classes sharing their earlier
words share one call).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from softprompt.conditioning import PerRow, as_conditioning
from softprompt.errors import ConfigError, DataError, UnknownLabelError
from softprompt.tasks.verbalizer import VERBALIZER_TYPES, Verbalizer

RULES_PREFIX = "rules:"
BUNDLED_RULES = {"semeval": Path(__file__).resolve().parent.parent / "data" / "semeval2010_task8" / "rules.tsv"}
"""Rule files shipped with the package, by the name ``--label-words rules:NAME`` takes."""


def parse_rules(text: str, fmt: str = "tsv", where: str = "rules") -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """``(slots, {label: [word per slot]})`` from a rule file's text (``fmt``: ``tsv`` or ``yaml``).
    Raises :class:`ConfigError` naming the line or label for a malformed file."""
    if fmt == "yaml":
        import yaml

        data = yaml.safe_load(text)
        if not isinstance(data, Mapping) or "slots" not in data or "rules" not in data:
            raise ConfigError(f"{where}: a YAML rule file holds 'slots: [name, ...]' and 'rules: {{LABEL: [word, ...]}}'")
        slots, rules = data["slots"], data["rules"]
        if not isinstance(rules, Mapping):
            raise ConfigError(f"{where}: 'rules' must map each label to its words, one per slot")
        rules = {str(k): ([v] if isinstance(v, str) else v) for k, v in rules.items()}
    else:
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not lines:
            raise ConfigError(f"{where}: empty rule file; its first line names the slots: relation<TAB>slot<TAB>...")
        header = lines[0].split("\t")
        slots, rules = header[1:], {}
        for n, line in enumerate(lines[1:], 2):
            cells = [c.strip() for c in line.split("\t")]
            if len(cells) != len(header):
                raise ConfigError(f"{where}: line {n} {line!r} has {len(cells)} tab-separated cells, the header "
                                  f"{len(header)} ({', '.join(header)})")
            if cells[0] in rules:
                raise ConfigError(f"{where}: relation {cells[0]!r} has two rules; keep one")
            rules[cells[0]] = cells[1:]
    if not isinstance(slots, Sequence) or not slots or not all(isinstance(s, str) and s.isidentifier() for s in slots):
        raise ConfigError(f"{where}: slots must be answer slot names of the template (identifiers), got {slots!r}")
    for label, words in rules.items():
        if not isinstance(words, Sequence) or len(words) != len(slots):
            raise ConfigError(f"{where}: the rule of {label!r} gives {words!r}; give one word per slot ({', '.join(slots)})")
    return tuple(slots), {label: [str(w) for w in words] for label, words in rules.items()}


def read_rules(spec: str) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Read a rule file: a path (``.tsv``, ``.yaml``/``.yml``) or a bundled name (:data:`BUNDLED_RULES`)."""
    path = BUNDLED_RULES.get(spec, Path(spec))
    if not path.is_file():
        raise ConfigError(f"no rule file {spec!r}: give a .tsv or .yaml path, or a bundled one "
                          f"({', '.join(BUNDLED_RULES)}), e.g. --label-words rules:semeval")
    fmt = "yaml" if path.suffix in (".yaml", ".yml") else "tsv"
    return parse_rules(path.read_text(encoding="utf-8"), fmt, where=str(path))


def check_rules_cover(verbalizer: "RuleVerbalizer", labels: Sequence[str], where: str = "the data") -> None:
    """Refuse a label of ``labels`` (the data's) with no rule, and a rule for no label of them.
    Raises :class:`DataError` naming them."""
    missing = sorted(set(labels) - set(verbalizer.labels))
    if missing:
        raise DataError(f"{where} has relation(s) {', '.join(map(repr, missing))} with no rule: add a line for each "
                        "to the rule file (--label-words rules:PATH)")
    unused = [label for label in verbalizer.labels if label not in set(labels)]
    if unused:
        raise DataError(f"the rule file has rules for {', '.join(map(repr, unused))}, which {where} never holds: "
                        "remove them from the rule file, or check the data's label names")


class RuleVerbalizer(Verbalizer):
    """PTR's verbalizer: per label one word per answer slot (``rules[label][k]`` fills ``slots[k]``).

    As a :class:`Verbalizer` it shows the first slot's words (what ``encode`` lays out); its
    scores come from :meth:`label_scores_of` and its loss from :meth:`training_loss`, which
    :mod:`softprompt.scoring` calls instead of the one-slot path. Raises :class:`ConfigError`
    when two labels have the same words in every slot (they could not be told apart)."""

    type_name = "rules"
    scores_slots = True  # scores its slots itself and has its own two-part loss

    def __init__(self, rules: Mapping[str, Sequence[str]], slots: Sequence[str], prefix: str = " ",
                 source: str | None = None) -> None:
        slots = tuple(slots)
        seen: dict[tuple[str, ...], str] = {}
        for label, words in rules.items():
            if len(words) != len(slots):
                raise ConfigError(f"the rule of {label!r} gives {list(words)!r}; give one word per slot ({', '.join(slots)})")
            if tuple(words) in seen:
                raise ConfigError(f"relations {seen[tuple(words)]!r} and {label!r} have the same words {list(words)!r} in "
                                  "every slot, so no score can tell them apart: change a word of one rule")
            seen[tuple(words)] = label
        super().__init__({label: [words[0]] for label, words in rules.items()}, prefix=prefix, shared_words=True)
        self.slots = slots
        self.rules = {label: list(words) for label, words in rules.items()}
        self.source = source

    @property
    def slot(self) -> str:
        """The answer slot whose words ``encode`` lays out (the first)."""
        return self.slots[0]

    def slot_candidates(self, slot: str) -> list[str]:
        """The distinct words the rules put in ``slot``, in label order."""
        k = self.slots.index(slot)
        return list(dict.fromkeys(words[k] for words in self.rules.values()))

    def slot_words(self, label: str) -> dict[str, str]:
        """``{slot: word}`` of ``label``'s rule (why the relation won); :class:`KeyError` for a
        label with no rule."""
        return dict(zip(self.slots, self.rules[label]))

    def gold_index(self, example: Mapping[str, Any]) -> int:
        """Position of ``example["label"]`` among the labels; a relation with no rule raises
        :class:`DataError` naming it and the rule file to extend."""
        label = example.get("label") if isinstance(example, Mapping) else None
        if label is not None and str(label) not in self.labels:
            raise UnknownLabelError(self.unknown_label_message(label, example))
        return super().gold_index(example)

    def unknown_label_message(self, label: Any, example: Mapping[str, Any] | None = None,
                              data_labels: Sequence[Any] | None = None) -> str:
        """A relation with no rule: the rule file to extend (``data_labels`` is not needed)."""
        idx = example.get("idx") if isinstance(example, Mapping) else None
        return (f"relation {label!r}{'' if idx is None else f' (row idx={idx})'} has no rule in "
                f"{self.source or 'the rule file'}: add a line for it (--label-words rules:PATH), "
                f"or fix the row's label; the rules know {', '.join(map(repr, self.labels))}")

    def check_rows(self, rows: Sequence[Mapping[str, Any]], where: str = "the data") -> None:
        """:func:`check_rules_cover` on the labels of ``rows`` (the training rows)."""
        check_rules_cover(self, [str(r["label"]) for r in rows if "label" in r], where)

    # ------------------------------------------------------------------ scoring
    def _ids(self, backbone, word: str) -> list[int]:
        return backbone.tokenize(self.prefix + word)

    def rule_scores(self, backbone, batch, cond=None, teacher_gold: bool = False, length_normalize: bool = False):
        """Per-slot scores of a batch encoded with this verbalizer's template.

        Returns ``(class_scores [batch, n_labels], parts [batch, n_labels, n_slots], slot_scores)``:
        ``parts[b, c, k]`` the log-score of label ``c``'s word at slot ``k``, ``class_scores`` their
        sum over slots; ``slot_scores[slot]``: ``[batch, n_candidates]`` log-scores of the slot's
        candidates (:meth:`slot_candidates`) with the gold words before it (``teacher_gold``) or none
        (a mask model); on a model reading slots in order at inference, parts come from each
        class's own earlier words and ``slot_scores`` is empty. Raises :class:`ConfigError` when
        the template's answer slots are not the rules' slots."""
        if tuple(batch.slot_names) != self.slots:
            raise ConfigError(f"the template's answer slots ({', '.join(batch.slot_names)}) are not the rules' slots "
                              f"({', '.join(self.slots)}): write one {{mask:NAME}} per rule slot in --template, in that order")
        n, labels = len(batch), self.labels
        in_order = backbone.mask_token_id is None  # slots read left to right: earlier ones need their words
        columns: list[torch.Tensor] = []
        slot_scores: dict[str, torch.Tensor] = {}
        if in_order and teacher_gold and len(self.slots) > 1 and self._continuable(batch) \
                and not isinstance(as_conditioning(cond), PerRow):
            # every slot in one call: the row's text is read once, up to its last slot, with the gold words
            slot_scores = self._gold_slot_continuations(backbone, batch, cond, length_normalize)
            for k, slot in enumerate(self.slots):
                cands = self.slot_candidates(slot)
                index = torch.tensor([cands.index(self.rules[c][k]) for c in labels], device=slot_scores[slot].device)
                columns.append(slot_scores[slot][:, index])
            parts = torch.stack(columns, -1)
            return parts.sum(-1), parts, slot_scores
        for k, slot in enumerate(self.slots):
            cands = self.slot_candidates(slot)
            cand_ids = [self._ids(backbone, w) for w in cands]
            if not in_order or k == 0 or teacher_gold:
                fills = None
                if in_order and k > 0:
                    if batch.gold is None:
                        raise ConfigError("training scores need the gold labels: encode the rows with their labels")
                    fills = {s: [self._ids(backbone, self.rules[labels[g]][j]) for g in batch.gold]
                             for j, s in enumerate(self.slots[:k])}
                if in_order and self._continuable(batch):  # the row's text before the slot read once for all candidates
                    scores = self._slot_continuations(backbone, batch, cond, k, cand_ids, fills or {}, length_normalize)
                else:
                    scores = backbone.slot_word_scores(cond, batch, slot, [cand_ids] * n, fills, length_normalize)
                slot_scores[slot] = scores
                index = torch.tensor([cands.index(self.rules[c][k]) for c in labels], device=scores.device)
                columns.append(scores[:, index])
                continue
            # inference on an in-order model: each class's own earlier words
            if k == 1 and self._continuable(batch) and not length_normalize:  # every class at once as a continuation of the sentence
                totals = [self._continuation_scores(backbone, batch, cond, j, length_normalize)
                          for j in range(1, len(self.slots))]
                prev = columns[0]
                for total in totals:
                    columns.append(total - prev)
                    prev = total
                break
            # classes sharing their earlier words share a call
            col = None
            groups: dict[tuple[str, ...], list[int]] = {}
            for c, label in enumerate(labels):
                groups.setdefault(tuple(self.rules[label][:k]), []).append(c)
            for prefix, members in groups.items():
                words = list(dict.fromkeys(self.rules[labels[c]][k] for c in members))
                fills = {s: [self._ids(backbone, prefix[j])] * n for j, s in enumerate(self.slots[:k])}
                scores = backbone.slot_word_scores(cond, batch, slot, [[self._ids(backbone, w) for w in words]] * n,
                                                   fills, length_normalize)
                if col is None:
                    col = scores.new_zeros((n, len(labels)))
                for c in members:
                    col[:, c] = scores[:, words.index(self.rules[labels[c]][k])]
            columns.append(col)
        parts = torch.stack(columns, -1)
        return parts.sum(-1), parts, slot_scores

    def label_scores_of(self, backbone, batch, cond=None, length_normalize: bool = False) -> torch.Tensor:
        """``[batch, n_labels]``: each label's summed slot log-scores (inference: own earlier words).
        On a model reading slots in order, one call scores every label's words and the text between
        them as continuations of the text before the first slot (the sentence is read once per row)."""
        if backbone.mask_token_id is None and len(self.slots) > 1 and self._continuable(batch) and not length_normalize:
            return self._continuation_scores(backbone, batch, cond, len(self.slots) - 1, False)
        return self.rule_scores(backbone, batch, cond, False, length_normalize)[0]

    def _continuable(self, batch) -> bool:
        """No virtual token lies after the first slot (it would sit inside a continuation)."""
        firsts = [pos[0] for pos in batch.answer_pos]
        return not any(v[0] >= f for vs, f in zip(batch.virtual or [[]] * len(batch), firsts) for v in vs)

    def _slot_continuations(self, backbone, batch, cond, k: int, cand_ids, fills, length_normalize: bool):
        """``[batch, n_candidates]``: log p(candidate + the text after slot ``k`` up to the next slot |
        the text before it, earlier slots holding ``fills[slot][b]``), as ``slot_word_scores`` on a
        model reading slots in order, through one ``word_scores`` call (the prefix read once per row)."""
        contexts, words = self._slot_contexts(batch, k, cand_ids, fills)
        return self._as_continuations(backbone, batch, cond, contexts, words, length_normalize)

    def _slot_contexts(self, batch, k: int, cand_ids, fills) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Per row, the text before slot ``k`` (earlier slots holding ``fills[slot][b]``) and each
        candidate followed by the text after the slot up to the next one."""
        contexts, words = [], []
        for b, ctx in enumerate(batch.context):
            pos = list(batch.answer_pos[b]) + [len(ctx)]
            prefix = ctx[: pos[0]]
            for j in range(k):
                prefix = prefix + fills[self.slots[j]][b] + ctx[pos[j]: pos[j + 1]]
            after = ctx[pos[k]: pos[k + 1]]
            contexts.append(prefix)
            words.append([ids + after for ids in cand_ids])
        return contexts, words

    def _gold_slot_continuations(self, backbone, batch, cond, length_normalize: bool) -> dict[str, torch.Tensor]:
        """``{slot: [batch, n_candidates]}``, each as :meth:`_slot_continuations` with the gold words
        in the earlier slots, all through one ``word_scores`` call: the row cut at each slot is a
        prefix of the row cut at the last, so a decoder reads the text (and the prompt) once per row
        and continues every slot's candidates from its keys/values."""
        if batch.gold is None:
            raise ConfigError("training scores need the gold labels: encode the rows with their labels")
        n, labels = len(batch), self.labels
        fills = {s: [self._ids(backbone, self.rules[labels[g]][j]) for g in batch.gold] for j, s in enumerate(self.slots)}
        contexts, words, sizes = [], [], []
        for k, slot in enumerate(self.slots):
            cand_ids = [self._ids(backbone, w) for w in self.slot_candidates(slot)]
            c, w = self._slot_contexts(batch, k, cand_ids, fills)
            contexts += c
            words += w
            sizes.append(len(cand_ids))
        scores = self._as_continuations(backbone, batch, cond, contexts, words, length_normalize,
                                        rows=list(range(n)) * len(self.slots))
        return {slot: scores[k * n:(k + 1) * n, :size] for k, (slot, size) in enumerate(zip(self.slots, sizes))}

    def _as_continuations(self, backbone, batch, cond, contexts, words, length_normalize: bool,
                          rows: list[int] | None = None) -> torch.Tensor:
        """``backbone.word_scores`` of ``words[i]`` continuing ``contexts[i]``, the text of row
        ``rows[i]`` of ``batch`` (row ``i`` by default; virtual tokens of ``batch`` kept where they
        are: before the first slot, :meth:`_continuable`)."""
        from dataclasses import replace

        rows = list(range(len(batch))) if rows is None else rows
        n = max(len(w) for w in words)
        sub = replace(batch, context=contexts, words=words, word_label=[list(range(len(w))) for w in words],
                      word_weight=[[1.0] * len(w) for w in words], shared_words=False, mask_pos=[], slot_names=("mask",),
                      answer_pos=[[len(c)] for c in contexts], word_slot="mask",
                      gold=None if batch.gold is None else [batch.gold[r] for r in rows],
                      label_names=[batch.label_names[r] for r in rows] if batch.label_names else batch.label_names,
                      context_text=[batch.context_text[r] for r in rows] if batch.context_text else batch.context_text,
                      virtual=[list(batch.virtual[r]) for r in rows] if batch.virtual else [])
        return backbone.word_scores(cond, sub, length_normalize)[:, :n]

    def _continuation_scores(self, backbone, batch, cond, last: int, length_normalize: bool) -> torch.Tensor:
        """``[batch, n_labels]``: log p(label's words in slots 0..``last`` and the text after each, up to
        the next slot | the text before slot 0), through ``backbone.word_scores`` on a batch whose
        context is the text before the first slot and whose candidates are the labels' continuations."""
        n_slots = len(self.slots)
        contexts, words = [], []
        for b, ctx in enumerate(batch.context):
            pos = list(batch.answer_pos[b]) + [len(ctx)]
            contexts.append(ctx[: pos[0]])
            row = []
            for label in self.labels:
                ids: list[int] = []
                for k in range(last + 1):
                    ids += self._ids(backbone, self.rules[label][k]) + ctx[pos[k]: pos[k + 1] if k + 1 < n_slots else len(ctx)]
                row.append(ids)
            words.append(row)
        return self._as_continuations(backbone, batch, cond, contexts, words, length_normalize)

    def training_loss(self, backbone, batch, cond=None, length_normalize: bool = False) -> torch.Tensor:
        """PTR's loss, a scalar: cross-entropy over the labels' summed slot scores plus the mean over
        slots of each slot's cross-entropy over its candidates (gold words before a slot on an
        in-order model)."""
        if batch.gold is None:
            raise ConfigError("the PTR loss needs the gold labels: encode the rows with their labels")
        class_scores, _, slot_scores = self.rule_scores(backbone, batch, cond, True, length_normalize)
        gold = torch.tensor(batch.gold, device=class_scores.device)
        loss = torch.nn.functional.cross_entropy(class_scores, gold)
        slot_losses = []
        for k, slot in enumerate(self.slots):
            cands = self.slot_candidates(slot)
            target = torch.tensor([cands.index(self.rules[self.labels[g]][k]) for g in batch.gold], device=gold.device)
            slot_losses.append(torch.nn.functional.cross_entropy(slot_scores[slot], target))
        return loss + torch.stack(slot_losses).mean()

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "slots": list(self.slots), "rules": {k: list(v) for k, v in self.rules.items()},
                "prefix": self.prefix, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RuleVerbalizer":
        if "rules" not in data or "slots" not in data:
            raise ConfigError(f"a saved rule verbalizer needs 'rules' and 'slots', got keys {sorted(data)}")
        return cls(data["rules"], data["slots"], prefix=data.get("prefix", " "), source=data.get("source"))

    @classmethod
    def from_spec(cls, spec: str, prefix: str = " ") -> "RuleVerbalizer":
        """From ``rules:PATH`` or ``rules:NAME`` (a bundled file)."""
        name = spec[len(RULES_PREFIX):] if spec.startswith(RULES_PREFIX) else spec
        slots, rules = read_rules(name)
        return cls(rules, slots, prefix=prefix, source=name)

    def extra_repr(self) -> str:
        return f"slots={self.slots}, {len(self.rules)} rules, prefix={self.prefix!r}"


VERBALIZER_TYPES[RuleVerbalizer.type_name] = RuleVerbalizer
