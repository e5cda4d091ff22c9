"""Build a task and read its rows from command options (built-in name, files, overrides)."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .registry import BUILTIN_TASKS, get_task, load_split, unknown_task
from .task import Task
from .template import Template
from .verbalizer import (AnswerVectorVerbalizer, ChoiceVerbalizer, LearnedWeightsVerbalizer, Verbalizer,
                         parse_label_words)

_FILE_OPTIONS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
_SPLIT_WORD = re.compile(r"(^|[-_.])(train|training|dev|valid|validation|val|test|eval)$", re.IGNORECASE)


def data_name(path: str | Path) -> str:
    """The name of your own data, read from one of its files: the file's stem less a split word
    (``reviews`` for ``reviews_train.jsonl`` or ``reviews-test.csv``), or, for a file named after
    its split alone, its folder's name (``reviews`` for ``reviews/train.jsonl``); ``"custom"``
    when neither is left."""
    p = Path(path)
    stem = _SPLIT_WORD.sub("", p.stem)
    return stem or p.absolute().parent.name or "custom"


def own_data(cfg: Any) -> tuple[str, str] | None:
    """``(flag, path)`` of your own data that ``cfg`` runs on as a whole, or None: train's
    ``--train-file`` or eval's ``--file`` (a ``--validation-file`` or ``--test-file`` alone
    evaluates the task's training data on your rows, so the task keeps its name)."""
    for option in ("train_file", "file"):
        path = getattr(cfg, option, None)
        if path:
            return "--" + option.replace("_", "-"), str(path)
    return None


def parse_field_map(spec: str | None) -> dict[str, str] | None:
    """``"text=sentence,label=sentiment"`` -> ``{"text": "sentence", "label": "sentiment"}``."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        ours, eq, theirs = part.partition("=")
        if not eq or not ours.strip() or not theirs.strip():
            raise ConfigError(f"malformed --field-map {spec!r}; write it as 'text=sentence,label=sentiment'")
        out[ours.strip()] = theirs.strip()
    return out


def verbalizer_from_spec(spec: str) -> Verbalizer:
    """``--label-words`` text -> a verbalizer.

    - ``'positive=great,good;negative=bad'``: fixed words (:class:`Verbalizer`);
    - ``'shared:positive=good,great;negative=bad,not good,good'``: the same, a word may stand for
      several labels;
    - ``'learned:positive=great,good;negative=bad'``: word weights trained with the method
      (:class:`LearnedWeightsVerbalizer`); ``'learned+shared:...'`` lets words be shared too;
    - ``'answer-vectors:positive,negative'``: one trained vector per label
      (:class:`AnswerVectorVerbalizer`);
    - ``'rules:PATH'`` or ``'rules:semeval'``: PTR's rule file, one word per answer slot per label
      (:class:`~softprompt.tasks.rules.RuleVerbalizer`);
    - ``'choices:FIELD'``: multiple choice, each row's candidates are the strings in its FIELD list
      and its label is the correct one's text.

    Raises :class:`ConfigError` naming the bad part.
    """
    kind, sep, rest = spec.strip().partition(":")
    kinds = set(kind.strip().split("+")) if sep else set()
    if kind.strip() == "choices":
        field = rest.strip()
        if not field:
            raise ConfigError("--label-words 'choices:FIELD' needs the field holding each row's choices, e.g. choices:options")
        return ChoiceVerbalizer(field)
    if kind.strip() == "rules":  # PTR: a rule file's words per answer slot (tasks/rules.py)
        from softprompt.tasks.rules import RuleVerbalizer

        return RuleVerbalizer.from_spec(rest.strip())
    if kind.strip() == "answer-vectors":
        labels = [label.strip() for label in rest.split(",")]
        if not all(labels):
            raise ConfigError(f"--label-words {spec!r}: write 'answer-vectors:LABEL,LABEL', e.g. answer-vectors:positive,negative")
        return AnswerVectorVerbalizer(labels)
    if not sep or "=" in kind or not kinds <= {"shared", "learned"}:
        return Verbalizer(parse_label_words(spec))  # no known kind before a colon: plain label words
    cls = LearnedWeightsVerbalizer if "learned" in kinds else Verbalizer
    return cls(parse_label_words(rest), shared_words="shared" in kinds)


def task_from_config(cfg: Any, base: Task | None = None) -> Task:
    """The task named by ``cfg.task`` with ``cfg.template`` / ``cfg.label_words`` / files applied.

    ``base`` (e.g. a saved prompt's task) is the starting point when ``cfg.task`` is unset or names
    it; a copy is changed, never ``base`` itself. Your own data (:func:`own_data`) with no
    ``cfg.task`` makes a task named after its file (:func:`data_name`), so a run's metadata, results
    and messages name your data. Raises :class:`ConfigError` for a task that is neither built in nor
    given a template and label words (naming the options ``cfg`` has).
    """
    files = {split: getattr(cfg, opt, None) for split, opt in _FILE_OPTIONS.items()}
    files = {k: v for k, v in files.items() if v}
    template = getattr(cfg, "template", None)
    if template:  # a shell gives "\n" as two characters: it means a line break, as in the help text
        template = template.replace("\\n", "\n")
    label_words = getattr(cfg, "label_words", None)
    name = getattr(cfg, "task", None)
    own = own_data(cfg)
    if base is not None and name in (None, base.name):
        task = copy.deepcopy(base)
        files = files or dict(base.splits)
    elif name is None and own:
        task = _own_task(own, template, label_words)
    elif name in BUILTIN_TASKS or (name and not (template and label_words)):
        try:
            task = get_task(name)  # also finds rotten-tomatoes; suggests a close name
        except ConfigError:
            raise ConfigError(f"{unknown_task(name)}; or give --template and --label-words (and {_data_options(cfg)})") \
                from None
    elif not (template and label_words):
        raise ConfigError(f"no task given: pass --task NAME (one of `softprompt tasks`), or --template and "
                          f"--label-words (and {_data_options(cfg)}) for your own data")
    else:
        task = Task(name=name or "custom", template=Template(template), verbalizer=verbalizer_from_spec(label_words))
    if template:
        task.template = Template(template)
    if label_words:
        task.verbalizer = verbalizer_from_spec(label_words)
        if task.positive_label not in task.verbalizer.labels:
            task = dataclasses.replace(task, metrics=tuple(m for m in task.metrics if m != "f1") or ("accuracy",),
                                       positive_label=None)
    words_file = getattr(cfg, "label_words_file", None)
    if words_file and getattr(cfg, "verbalizer", "auto") == "auto":  # knowledgeable: refined once the model is loaded
        from .label_words import read_label_words

        words = read_label_words(words_file, task.verbalizer.labels).words
        task.verbalizer = Verbalizer(words, prefix=task.verbalizer.prefix, shared_words=True)
    metrics = getattr(cfg, "metrics", None)
    if metrics:
        task = dataclasses.replace(task, metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()))
    markers = getattr(cfg, "entity_markers", None)
    if markers:
        task = dataclasses.replace(task, entity_markers=markers)
    field_map = parse_field_map(getattr(cfg, "field_map", None))
    if field_map:  # given: it replaces the one a saved run's task carries
        task.field_map = field_map
    task.splits = files
    return task


def _own_task(own: tuple[str, str], template: str | None, label_words: str | None) -> Task:
    """The task of your own data ``own`` (``(flag, path)``) given no ``--task``: named after its file,
    in the format that ``template`` and ``label_words`` give (both needed, else :class:`ConfigError`)."""
    flag, path = own
    name = data_name(path)
    missing = [option for option, value in (("--template", template), ("--label-words", label_words)) if not value]
    if missing:
        raise ConfigError(f"{flag} {path}: your own data needs its format, {' and '.join(missing)} (the task is then "
                          f"named {name!r} after the file, or --task NAME), or --task NAME of a built-in task whose "
                          "template and label words fit its rows (see `softprompt tasks`)")
    if name in BUILTIN_TASKS:
        raise ConfigError(f"{flag} {path}: your own data would be named {name!r} after the file, the name of a "
                          f"built-in task; give it another with --task NAME (or --task {name} for that task's "
                          "format, with its data for the splits you give no file)")
    return Task(name=name, template=Template(template), verbalizer=verbalizer_from_spec(label_words))


def _data_options(cfg: Any) -> str:
    """How the command of ``cfg`` takes your own data, for advice."""
    if hasattr(cfg, "train_file"):
        return "--train-file, --validation-file"
    return "--file FILE" if hasattr(cfg, "file") else "your texts"


def load_rows(task: Task, cfg: Any, split: str, limit: int | None = None, labelled: bool = True) -> list[dict]:
    """Rows of ``split``: from the task's own file (its columns renamed by the task's field map,
    ``--field-map`` or the saved run's) or the built-in sources; ``labelled=False`` checks only
    that they render (their labels are not used)."""
    if split in task.splits:
        path = task.splits[split]
        return task.read_file(path, limit=limit, labelled=labelled)  # renamed by the task's field map
    if task.splits and split in _FILE_OPTIONS and task.name not in BUILTIN_TASKS:
        raise ConfigError(f"no {split} data: pass --{_FILE_OPTIONS[split].replace('_', '-')} FILE")
    probe = dataclasses.replace(task, splits={})
    return load_split(probe, split, data_dir=getattr(cfg, "data_dir", None), limit=limit, labelled=labelled)


def check_files(task: Task, cfg: Any, read: tuple[str, ...] = ()) -> None:
    """Read and check every data file given by option (``--train-file``, ``--validation-file``,
    ``--test-file``) but the splits already ``read``, as the run will use them (``--eval-limit``,
    ``--test-limit``), so a missing file or an unknown label stops a run before training starts.
    Raises :class:`DataError` naming the file (and line or example)."""
    dev_from_train = getattr(cfg, "shots", None) or getattr(cfg, "dev_from_train", None)
    limits = {"validation": getattr(cfg, "test_limit" if dev_from_train else "eval_limit", None),
              "test": getattr(cfg, "test_limit", None)}
    for split in task.splits:
        if split not in read:
            load_rows(task, cfg, split, limits.get(split))
