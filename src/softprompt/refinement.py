"""KPT's refinement of label words with the frozen model, and their offline expansion.

Hu, Ding, Wang, Liu, Wang, Li, Wu & Sun (ACL 2022), "Knowledgeable Prompt-tuning", section 3.2
(refinement, contextualized calibration); the reference is OpenPrompt's ``KnowledgeableVerbalizer``
and the authors' refinement scripts, followed in spirit. :func:`build_knowledgeable` takes label
words (a file's, inline, or :func:`expand_label_words`'s) through these stages, each recorded:

1. duplicates (``remove``: a word under several labels leaves all of them, unless it is one
   label's class name, kept there only; ``share``: kept under each);
2. the contextual prior ``P(v) = mean_x p(v | template(x))`` over ``support_size`` unlabelled
   training inputs (sampled with the run's seed), scored through the task's template with no
   prompt; ``p`` is normalised over all candidate words (as OpenPrompt), so it is the same
   whichever way the backbone scores a row (its single-token path omits the vocabulary
   normaliser);
3. frequency refinement: the ``frequency_cutoff`` fraction of words with the lowest prior is
   dropped, a label keeping at least its highest-prior word;
4. relevance refinement: ``q_v`` = v's log-probabilities over the support rows, centred;
   ``tf = cos(q_v, q_name(y))``, ``idf = 1 / powermean_p(|cos(q_v, q_name(y'))|, y' != y)``,
   ``p = 1 + 10 / (C - 1.99)``; ``r = tf * idf`` (``-inf`` when ``tf < 0``); words with
   ``r >= relevance_threshold`` stay, the class name always, and a label keeps at least its
   most relevant word (where frequency refinement dropped its name).

Calibration (``calibrate``) then scores a word by ``log p(v|x) - log P(v)``
(:class:`~softprompt.tasks.knowledgeable.KnowledgeableVerbalizer`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .conditioning import Conditioning
from .encoding import encode
from .errors import ConfigError, DataError
from .scoring import WORD_SCORINGS, first_tokens
from .tasks.knowledgeable import KnowledgeableVerbalizer
from .tasks.task import Task
from .tasks.verbalizer import Verbalizer

REFINEMENTS = ("frequency", "relevance")
DUPLICATES = ("remove", "share")


def parse_refine(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"frequency,relevance"`` -> ``("frequency", "relevance")``; ``"none"`` or ``""`` -> ``()``.
    Raises :class:`ConfigError` for an unknown refinement."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(p.strip() for p in parts if p.strip() and p.strip() != "none")
    unknown = [n for n in names if n not in REFINEMENTS]
    if unknown:
        raise ConfigError(f"--refine: unknown refinement(s) {unknown}; give a comma list of {', '.join(REFINEMENTS)}, or none")
    return names


@dataclass
class RefineOptions:
    """How :func:`build_knowledgeable` refines and scores words (the fields of the same names in
    :mod:`softprompt.config`; defaults: KPT's AG News / DBpedia / Yahoo settings)."""

    refine: tuple[str, ...] = REFINEMENTS
    calibrate: bool = True
    frequency_cutoff: float = 0.5
    relevance_threshold: float = 1.0
    support_size: int = 200
    duplicates: str = "remove"
    learn_word_weights: bool = False
    word_scoring: str = "exact"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        self.refine = parse_refine(self.refine)
        if not 0 <= self.frequency_cutoff < 1:
            raise ConfigError(f"--frequency-cutoff must be in [0, 1), got {self.frequency_cutoff}")
        if self.duplicates not in DUPLICATES:
            raise ConfigError(f"--duplicates must be one of {DUPLICATES}, got {self.duplicates!r}")
        if self.word_scoring not in WORD_SCORINGS:
            raise ConfigError(f"--word-scoring must be one of {WORD_SCORINGS}, got {self.word_scoring!r}")
        if self.support_size < 1:
            raise ConfigError(f"--support-size must be at least 1, got {self.support_size}")

    @property
    def needs_support(self) -> bool:
        """Whether the prior (so unlabelled support rows) is needed."""
        return self.calibrate or bool(self.refine)

    @classmethod
    def from_config(cls, cfg: Any) -> RefineOptions:
        """From a command's config (fields it lacks take the defaults; ``word_scoring`` None = exact)."""
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if getattr(cfg, f.name, None) is not None}
        if getattr(cfg, "eval_batch_size", None):
            values["batch_size"] = cfg.eval_batch_size
        return cls(**values)


# --------------------------------------------------------------------------- stages
def resolve_duplicates(words: Mapping[str, Sequence[str]], mode: str = "remove"
                       ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(words, removed)``: with ``mode="remove"`` a word listed under several labels is dropped
    from all of them, except from a label whose class name (first word) it is; ``"share"`` keeps
    every word. ``removed`` maps a label to the words it lost."""
    owners: dict[str, list[str]] = {}
    for label, ws in words.items():
        for w in ws:
            owners.setdefault(w, []).append(label)
    out, removed = {}, {}
    for label, ws in words.items():
        keep = [w for i, w in enumerate(ws) if mode == "share" or len(owners[w]) == 1 or i == 0]
        out[label] = keep
        lost = [w for w in ws if w not in keep]
        if lost:
            removed[label] = lost
    return out, removed


def candidate_log_probs(backbone, task: Task, words: Mapping[str, Sequence[str]], rows: Sequence[Mapping[str, Any]],
                        word_scoring: str = "exact", batch_size: int = 32) -> torch.Tensor:
    """``[n_rows, n_words]`` log p(v | template(x)) of every word (flattened in label order) for
    every row, normalised over the words, scored through ``task``'s template with no prompt and
    no gradient. ``word_scoring``: ``exact`` (whole-word likelihood) or ``first-token``."""
    probe = Task(name=task.name, template=task.template,
                 verbalizer=Verbalizer(dict(words), prefix=task.verbalizer.prefix, shared_words=True))
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = encode(backbone, probe, rows[start: start + batch_size], with_labels=False)
            if word_scoring == "first-token":
                batch = first_tokens(batch)
            out.append(torch.log_softmax(backbone.word_scores(Conditioning(), batch).float(), -1).cpu())
    return torch.cat(out)


def contextual_log_prior(log_probs: torch.Tensor) -> torch.Tensor:
    """``[n_rows, n_words]`` -> ``[n_words]``: log of the mean probability over the rows."""
    return torch.logsumexp(log_probs, 0) - math.log(log_probs.shape[0])


def frequency_keep(owners: Sequence[int], log_prior: torch.Tensor, cutoff: float) -> list[bool]:
    """Which words stay: the ``cutoff`` fraction with the lowest prior (``int(cutoff * n)`` words)
    goes, but each label (``owners[i]`` = word i's label) keeps its highest-prior word."""
    n = len(owners)
    order = sorted(range(n), key=lambda i: float(log_prior[i]))
    keep = [True] * n
    for i in order[: int(cutoff * n)]:
        keep[i] = False
    for label in set(owners):
        mine = [i for i in range(n) if owners[i] == label]
        if not any(keep[i] for i in mine):
            keep[max(mine, key=lambda i: float(log_prior[i]))] = True
    return keep


def relevance_scores(owners: Sequence[int], names: Sequence[int], log_probs: torch.Tensor) -> torch.Tensor:
    """``[n_words]`` KPT's tf-idf-like relevance of each word to its label. ``names[y]``: the
    column of label y's class name in ``log_probs [n_rows, n_words]``. See the module docstring."""
    q = log_probs - log_probs.mean(0, keepdim=True)
    q = q / q.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = q.T @ q[:, list(names)]  # [n_words, n_labels]
    n_labels = len(names)
    p = 1 + 10 / (n_labels - 1.99) if n_labels > 1 else 1.0
    out = torch.empty(len(owners))
    for i, y in enumerate(owners):
        tf = float(cos[i, y])
        others = torch.cat([cos[i, :y], cos[i, y + 1:]]).abs()
        idf = 1 / float(others.pow(p).mean().pow(1 / p).clamp_min(1e-12)) if others.numel() else 1.0
        out[i] = float("-inf") if tf < 0 else tf * idf
    return out


def support_rows(rows: Sequence[Mapping[str, Any]], size: int, seed: int) -> tuple[list[dict], list[int]]:
    """``size`` rows (all if fewer) sampled with ``seed`` from ``rows``, labels dropped; and their positions."""
    picked = sorted(random.Random(f"kpt-support:{seed}").sample(range(len(rows)), min(size, len(rows))))
    return [{k: v for k, v in rows[i].items() if k != "label"} for i in picked], picked


def _flat(words: Mapping[str, Sequence[str]]) -> tuple[list[str], list[int]]:
    flat, owners = [], []
    for y, ws in enumerate(words.values()):
        flat.extend(ws)
        owners.extend([y] * len(ws))
    return flat, owners


def _select(words: Mapping[str, Sequence[str]], keep: Sequence[bool]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    out, removed, i = {}, {}, 0
    for label, ws in words.items():
        out[label] = [w for j, w in enumerate(ws) if keep[i + j]]
        lost = [w for j, w in enumerate(ws) if not keep[i + j]]
        if lost:
            removed[label] = lost
        i += len(ws)
    return out, removed


def build_knowledgeable(backbone, task: Task, words: Mapping[str, Sequence[str]],
                        rows: Sequence[Mapping[str, Any]] = (), options: RefineOptions | None = None,
                        source: str | None = None, repeated: Mapping[str, Any] | None = None) -> KnowledgeableVerbalizer:
    """KPT's verbalizer for ``task`` from ``words`` (label -> words, class name first, every label
    of ``task.verbalizer``), refined and calibrated on unlabelled ``rows`` of the training split
    (``options.support_size`` of them sampled with ``options.seed``). Returns a
    :class:`~softprompt.tasks.knowledgeable.KnowledgeableVerbalizer` whose ``record`` lists each
    stage's per-label counts and removed words and the support rows used. Raises
    :class:`ConfigError` when ``rows`` is empty but the prior is needed, or ``words`` names other
    labels than the task's."""
    options = options or RefineOptions()
    labels = list(task.verbalizer.labels)
    if list(words) != labels:
        raise ConfigError(f"label words are given for {list(words)}; the task's labels are {labels} (in this order)")
    given = {label: list(ws) for label, ws in words.items()}
    stages = []
    current, removed = resolve_duplicates(given, options.duplicates)
    stages.append({"stage": "duplicates", "counts": _counts(current), "removed": removed})
    record: dict[str, Any] = {"source": source, "options": {**dataclasses.asdict(options), "refine": list(options.refine)}, "given": _counts(given),
                              "repeated": dict(repeated or {}), "stages": stages, "support": None}
    log_prior = None
    if options.needs_support:
        if not rows:
            raise ConfigError("calibration and refinement need unlabelled inputs (none were given): give "
                              "--support-file FILE, or pass --refine none --no-calibrate")
        support, picked = support_rows(rows, options.support_size, options.seed)
        lp = candidate_log_probs(backbone, task, current, support, options.word_scoring, options.batch_size)
        log_prior = contextual_log_prior(lp)
        record["support"] = {"split": "train", "count": len(support), "seed": options.seed, "rows": picked,
                             "idx": [r.get("idx") for r in (rows[i] for i in picked)],
                             "word_scoring": options.word_scoring}
        _, all_owners = _flat(current)
        names = [all_owners.index(y) for y in range(len(labels))]  # each class name's column (it comes first)
        columns = list(range(len(all_owners)))  # the column of each word still kept
        for stage in options.refine:
            owners = [all_owners[c] for c in columns]
            if stage == "frequency":
                keep = frequency_keep(owners, log_prior[columns], options.frequency_cutoff)
            else:  # against the class names' predictions even where frequency dropped a name
                rel = relevance_scores(all_owners, names, lp)
                keep = [bool(rel[c] >= options.relevance_threshold) or c in names for c in columns]
                for y in set(owners):  # at least one word per label: its most relevant
                    mine = [i for i, o in enumerate(owners) if o == y]
                    if not any(keep[i] for i in mine):
                        keep[max(mine, key=lambda i: float(rel[columns[i]]))] = True
            current, removed = _select(current, keep)
            columns = [c for c, k in zip(columns, keep) if k]
            stages.append({"stage": stage, "counts": _counts(current), "removed": removed})
        log_prior = log_prior[columns]
    shared = options.duplicates == "share" or len(set(_flat(current)[0])) < len(_flat(current)[0])
    return KnowledgeableVerbalizer(current, prefix=task.verbalizer.prefix, shared_words=shared, log_prior=log_prior,
                                   calibrate=options.calibrate, learn_weights=options.learn_word_weights, record=record)


def describe(verbalizer: KnowledgeableVerbalizer) -> str:
    """One line per label of what refinement kept: ``world: 376 given -> 350 duplicates -> 175
    frequency -> 41 relevance``, then the support rows and calibration (for logs and stderr)."""
    record = verbalizer.record or {}
    lines = []
    for label in verbalizer.labels:
        steps = [f"{record.get('given', {}).get(label, '?')} given"]
        steps += [f"{st['counts'].get(label, 0)} {st['stage']}" for st in record.get("stages", [])]
        lines.append(f"  {label}: " + " -> ".join(steps))
    support = record.get("support")
    tail = f"prior from {support['count']} unlabelled inputs (seed {support['seed']}, {support['word_scoring']})" if support else "no prior"
    return (f"knowledgeable verbalizer ({record.get('source', '?')}): words per label\n" + "\n".join(lines)
            + f"\n  {tail}; calibration {'on' if verbalizer.calibrate else 'off'}")


def _counts(words: Mapping[str, Sequence[str]]) -> dict[str, int]:
    return {label: len(ws) for label, ws in words.items()}


# --------------------------------------------------------------------------- expansion
def expand_label_words(backbone, names: Mapping[str, str], per_label: int = 50, prefix: str = " ") -> dict[str, list[str]]:
    """Each label's class name followed by up to ``per_label`` neighbours from the frozen model's
    input embeddings (cosine to the mean embedding of the name's tokens), keeping tokens that are
    whole words on their own (``prefix + token`` tokenises back to that one token), lower-case
    alphabetic, at least 3 letters, not another label's name, and nearer to this label's name than
    to any other's (so "positively" does not join "negative", though embedding neighbours are often
    antonyms). No lexical resource is used: none installs with its data offline (docs/kpt.md)."""
    weight = backbone.model.get_input_embeddings().weight.detach().float()
    unit = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    taken = {n.lower() for n in names.values()}
    centres = []
    for name in names.values():
        centre = weight[torch.tensor(backbone.tokenize(prefix + name), device=weight.device)].mean(0)
        centres.append(centre / centre.norm().clamp_min(1e-12))
    sims = unit @ torch.stack(centres).T  # [vocab, n_labels]
    out = {}
    for j, (label, name) in enumerate(names.items()):
        words, seen = [name], set(taken)
        nearest_here = sims.argmax(1) == j
        for i in torch.argsort(sims[:, j], descending=True).tolist():
            if len(words) > per_label:
                break
            word = backbone.tokenizer.decode([i]).strip()
            if len(word) < 3 or not (word.isalpha() and word.islower()) or word in seen or not nearest_here[i]:
                continue
            if backbone.tokenize(prefix + word) != [i]:
                continue
            seen.add(word)
            words.append(word)
        out[label] = words
    return out


# --------------------------------------------------------------------------- from a command's options
def read_support_rows(task: Task, cfg: Any) -> list[dict[str, Any]]:
    """The unlabelled inputs that estimate the contextual prior: ``--support-file`` (labels not
    needed), else the task's training split (``--train-file`` or the built-in one), labels ignored.
    Raises :class:`ConfigError` naming the options that give them when neither can be read."""
    from .tasks.from_config import load_rows

    path = getattr(cfg, "support_file", None)
    try:
        if path:
            return task.read_file(path, labelled=False)  # renamed by the task's field map
        return load_rows(task, cfg, "train", labelled=False)
    except (ConfigError, DataError) as err:
        where = f"--support-file {path}" if path else "the training split"
        raise ConfigError(f"--verbalizer knowledgeable refines and calibrates its words on unlabelled inputs, but "
                          f"{where} cannot be read ({err}); give --support-file FILE (texts with the template's "
                          "fields, no labels needed), or pass --refine none --no-calibrate to skip") from None


def knowledgeable_from_config(cfg: Any, backbone, task: Task, out: str | Path | None = None) -> KnowledgeableVerbalizer:
    """The knowledgeable verbalizer a command's ``cfg`` asks for (``--verbalizer knowledgeable``):
    words from ``--label-words-file``, else the task's (``--label-words``) words, else
    :func:`expand_label_words` of its class names (written to ``out/label_words.txt`` when ``out``
    is given); refined on the task's whole training split (:func:`build_knowledgeable`). Raises
    :class:`ConfigError` naming the fix when no training split can be read but is needed."""
    from .tasks.label_words import read_label_words, write_label_words

    labels = list(task.verbalizer.labels)
    repeated = None
    if getattr(cfg, "label_words_file", None):
        read = read_label_words(cfg.label_words_file, labels)
        words, repeated, source = read.words, read.repeated, read.source
    elif getattr(cfg, "label_words", None):
        words, source = dict(zip(labels, task.verbalizer.candidates())), "--label-words"
    else:
        names = {label: ws[0] for label, ws in zip(labels, task.verbalizer.candidates())}
        words = expand_label_words(backbone, names, getattr(cfg, "expand", 50), task.verbalizer.prefix)
        source = "expansion"
        if out is not None:
            source = str(write_label_words(Path(out) / "label_words.txt", words))
    options = RefineOptions.from_config(cfg)
    rows: list = []
    if options.needs_support:
        rows = read_support_rows(task, cfg)
    return build_knowledgeable(backbone, task, words, rows, options, source=source, repeated=repeated)
